"""One trial through Lightning: accuracy, exact repeats, failures, interruption, processes."""

from __future__ import annotations

import multiprocessing
import pickle
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from hyperflow.components.config import ExperimentConfig, validate_config
from hyperflow.components.training import train_trial
from hyperflow.components.trial import TrialResult, TrialSpec


def spec_for(cfg: dict[str, Any] | None = None) -> TrialSpec:
    return TrialSpec.from_config(validate_config(cfg or {}), num_threads=1)


def test_default_model_reaches_90_percent_on_digits_within_20_epochs(digits) -> None:
    result = train_trial(digits, {"max_epochs": 20}, spec_for(), seed=0)
    assert result.state == "completed", result.error
    assert result.epochs_trained == 20
    assert result.value == result.curve[-1] == result.history["val_accuracy"][-1]
    assert result.value >= 0.90
    assert len(result.history["val_loss"]) == len(result.history["train_loss"]) == 20
    assert result.param_count == (64 + 1) * 128 + (128 + 1) * 64 + (64 + 1) * 10
    assert result.train_seconds > 0
    assert result.state_dict is not None and "model.net.0.weight" in result.state_dict


@pytest.mark.parametrize("params", [{}, {"dropout": 0.3, "batch_norm": True}])
def test_same_seed_repeats_exactly_and_leaves_global_rng_alone(digits, params: dict[str, Any]) -> None:
    params = {**params, "max_epochs": 4}
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = train_trial(digits, params, spec_for(), seed=7)
    assert torch.equal(torch.get_rng_state(), before), "a trial must not touch the caller's RNG"
    second = train_trial(digits, params, spec_for(), seed=7)
    other = train_trial(digits, params, spec_for(), seed=8)
    assert first.history == second.history
    assert first.state_dict is not None and second.state_dict is not None
    assert all(torch.equal(first.state_dict[k], second.state_dict[k]) for k in first.state_dict)
    assert other.history != first.history


def test_regression_reports_rmse_in_original_units(diabetes) -> None:
    spec = spec_for({"data": {"source": "diabetes"}, "search": {"metric": "val_rmse"}})
    result = train_trial(
        diabetes, {"optimizer": "adam", "learning_rate": 0.003, "max_epochs": 15}, spec, seed=0
    )
    assert result.state == "completed", result.error
    # The targets' standard deviation is ~77; an RMSE in standardised units would be ~1.
    assert 40 < result.value < 80
    assert result.history["val_rmse"][0] > result.history["val_rmse"][-1]


def test_divergence_fails_the_trial_with_the_reason(digits) -> None:
    result = train_trial(digits, {"learning_rate": 1e6, "max_epochs": 5}, spec_for(), seed=0)
    assert result.state == "failed"
    assert result.error is not None and ("nan" in result.error.lower() or "inf" in result.error.lower())
    assert result.state_dict is None


def test_stop_event_interrupts_within_a_batch(digits) -> None:
    event = threading.Event()
    epochs_seen: list[int] = []

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        epochs_seen.append(epoch)
        if epoch == 1:
            event.set()

    result = train_trial(digits, {"max_epochs": 50}, spec_for(), seed=0, on_epoch=on_epoch, stop_event=event)
    assert result.state == "interrupted"
    assert epochs_seen == [0, 1]


def test_deadline_fails_a_slow_trial(digits) -> None:
    result = train_trial(digits, {"max_epochs": 500}, spec_for(), seed=0, deadline=time.monotonic() + 0.3)
    assert result.state == "failed"
    assert "trial_timeout_minutes" in (result.error or "")
    assert 0 < result.epochs_trained < 500


def test_on_epoch_sees_every_metric_each_epoch(digits) -> None:
    seen: list[tuple[int, set[str]]] = []
    train_trial(digits, {"max_epochs": 3}, spec_for(), seed=0, on_epoch=lambda e, m: seen.append((e, set(m))))
    assert [e for e, _ in seen] == [0, 1, 2]
    assert all(keys >= {"train_loss", "val_loss", "val_accuracy"} for _, keys in seen)


@dataclass(frozen=True)
class _StopAt:
    epoch: int

    def check(self, curve: list[float], final_epoch: int) -> Any:
        if len(curve) - 1 >= self.epoch:
            return type("D", (), {"reason": "test stop", "predicted": 0.5, "probability": 0.01})()
        return None


def test_a_stop_policy_prunes_the_trial(digits) -> None:
    result = train_trial(digits, {"max_epochs": 10}, spec_for(), seed=0, stop_policy=_StopAt(3))
    assert result.state == "pruned"
    assert result.epochs_trained == 4
    assert result.stop_reason == "test stop" and result.predicted_final == 0.5
    assert result.value == result.curve[-1]


def test_unknown_metric_fails_with_the_logged_names(digits) -> None:
    spec = TrialSpec(metric="val_f1", mode="max", fixed=ExperimentConfig().model.model_dump(), num_threads=1)
    result = train_trial(digits, {"max_epochs": 2}, spec, seed=0)
    assert result.state == "failed"
    assert "val_f1" in (result.error or "") and "val_accuracy" in (result.error or "")


def test_a_trial_runs_in_a_worker_process_and_its_result_pickles(digits) -> None:
    params = {"max_epochs": 3, "dropout": 0.2}
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:
        remote: TrialResult = pool.submit(train_trial, digits, params, spec_for(), seed=5).result()
    local = train_trial(digits, params, spec_for(), seed=5)
    assert remote.state == "completed"
    assert remote.history == local.history
    assert pickle.loads(pickle.dumps(local)).history == local.history


def _function_spec() -> TrialSpec:
    from hyperflow.components.usercode import registered

    def objective(params: dict[str, Any], report: Any) -> float:
        for epoch in range(params["max_epochs"]):
            report(epoch, 0.5)
        return 0.5

    with registered("guarded:objective", objective):
        cfg = validate_config(
            {"model": {"module": "guarded:objective", "max_epochs": 3}, "search": {"metric": "score"}}
        )
        return TrialSpec.from_config(cfg, num_threads=1)


@pytest.mark.parametrize(
    ("budget", "state", "message"),
    [
        ({"stop_event": type("Set", (), {"is_set": lambda self: True})()}, "interrupted", "interrupted"),
        ({"deadline": 0.0}, "failed", "the trial ran past search.trial_timeout_minutes"),
        ({"stop_at": 0.0}, "interrupted", "the study's time budget (search.timeout_minutes) is spent"),
    ],
)
def test_one_guard_ends_a_module_and_a_function_alike(
    digits, budget: dict[str, Any], state: str, message: str
) -> None:
    for data, spec in ((digits, spec_for()), (None, _function_spec())):
        result = train_trial(data, {"max_epochs": 3}, spec, seed=0, **budget)
        assert (result.state, result.error) == (state, message)
        assert result.epochs_trained == 0 and result.state_dict is None


def test_the_mlp_adapter_rebuilds_evaluates_and_exports_raw_rows(digits) -> None:
    from hyperflow.components.adapters import MLPAdapter, adapter_for

    spec = spec_for()
    adapter = adapter_for(spec)
    assert isinstance(adapter, MLPAdapter) and adapter.needs_dataset and adapter.exports_model
    trained = train_trial(digits, {"max_epochs": 3}, spec, seed=0)
    assert trained.state_dict is not None
    module = adapter.rebuild(digits, {"max_epochs": 3}, trained.state_dict)
    metrics = adapter.evaluate(module, digits, {})
    assert set(metrics) == {"test_loss", "test_accuracy"} and metrics["test_accuracy"] > 0.5
    model, example = adapter.export(module, digits, {})
    assert example.shape == (5, digits.n_features)
    with torch.no_grad():
        scores = model(torch.as_tensor(example))
        expected = module(torch.as_tensor(digits.X_test[:5]))
    assert torch.allclose(scores, expected, atol=1e-4), "raw rows in: the standardisation is inside"


def test_seed_torch_seeds_as_torch_does_and_queues_no_seed_for_an_absent_accelerator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without an accelerator the CPU generator gets torch's own seed, and no deferred CUDA seed
    (a formatted stack trace, up to 31 ms on a trial's thread) is queued; with one, torch's call."""
    from hyperflow.components.devices import seed_torch

    if torch.accelerator.is_available():
        pytest.skip("a machine without an accelerator")
    tracker = torch.cuda._lazy_seed_tracker
    torch.manual_seed(11)
    queued = tracker.manual_seed_all_cb
    assert queued is not None, "torch no longer defers CUDA seeds: seed_torch can go"
    expected = torch.rand(4)
    torch.manual_seed(3)
    assert tracker.manual_seed_all_cb is not queued  # torch queues a new one on every call
    queued = tracker.manual_seed_all_cb

    seed_torch(11)
    assert torch.equal(torch.rand(4), expected)
    assert tracker.manual_seed_all_cb is queued

    calls: list[int] = []
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    monkeypatch.setattr(torch, "manual_seed", calls.append)
    seed_torch(5)
    assert calls == [5]
