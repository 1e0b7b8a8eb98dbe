"""What MLflow's UI shows of a study: model-training kind, per-layer weight metrics, the running best,
trial states in run names, and the run list's columns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import small_config
from mlflow.tracking import MlflowClient
from test_study import config, make_study, result

from hyperflow.components.data import load_dataset
from hyperflow.components.names import EXPERIMENT_KIND, SHARED_VIEW, TAG_EXPERIMENT_KIND, WEIGHT_NEAR_ZERO
from hyperflow.components.study import execute_trial
from hyperflow.components.tracking import StudyTracker, run_list_view, ui_command
from hyperflow.components.weights import weight_metrics


def test_experiments_are_model_training_also_when_an_older_version_made_them(
    tmp_path: Path, sqlite_store: str
) -> None:
    tracker = StudyTracker(sqlite_store)
    fresh = tracker.experiment_id(f"fresh-{tmp_path.name}")
    assert tracker.client.get_experiment(fresh).tags[TAG_EXPERIMENT_KIND] == EXPERIMENT_KIND
    old = tracker.client.create_experiment(f"old-{tmp_path.name}")  # no kind, as before
    assert tracker.experiment_id(f"old-{tmp_path.name}") == old
    assert tracker.client.get_experiment(old).tags[TAG_EXPERIMENT_KIND] == EXPERIMENT_KIND


def test_weight_metrics_summarise_each_layer() -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(50, 40)
    with torch.no_grad():
        layer.weight[:10] = 0.0  # a quarter of the weights exactly zero
    metrics = weight_metrics(layer.named_parameters())
    assert set(metrics) == {
        "weights/weight/mean",
        "weights/weight/std",
        "weights/weight/near_zero",
    }
    w = layer.weight.detach()
    assert metrics["weights/weight/mean"] == torch.mean(w).item()
    assert abs(metrics["weights/weight/std"] - w.std(correction=0).item()) < 1e-6
    assert metrics["weights/weight/near_zero"] == (w.abs() < WEIGHT_NEAR_ZERO).float().mean().item()
    assert metrics["weights/weight/near_zero"] >= 0.25
    assert not any("bias" in name for name in metrics), "a bias is not a layer's weights"


@pytest.mark.parametrize(
    ("every", "steps"), [(None, [0, 5, 6]), (1, [0, 1, 2, 3, 4, 5, 6]), (3, [0, 3, 6]), (0, [6])]
)
def test_every_finished_trial_logs_per_layer_weight_metrics_every_nth_epoch_and_at_its_last(
    tmp_path: Path, sqlite_store: str, every: int | None, steps: list[int]
) -> None:
    # None: the default, tracking.weight_summary_every = 5; the 7th epoch (6) is the last.
    cfg = small_config(
        tmp_path,
        model={"hidden_layers": [16, 8], "max_epochs": 7},
        search={"n_trials": 2},
        tracking={"uri": sqlite_store, **({} if every is None else {"weight_summary_every": every})},
    )
    assert cfg.tracking.weight_summary_every == (5 if every is None else every)
    data = load_dataset(cfg.data, cfg.seed)
    study = make_study(cfg)
    client = MlflowClient(sqlite_store)
    for plan in study.plan():
        study.record(plan, execute_trial(data, plan, study.spec))
        assert study.flush_writes() == []  # a trial's records are written behind the search loop
        run = client.get_run(plan.run_id)
        assert run.data.metrics["epochs_trained"] == 7
        layers = {k.split("/")[1] for k in run.data.metrics if k.startswith("weights/")}
        assert layers == {"model.net.0.weight", "model.net.2.weight", "model.net.4.weight"}
        for layer in layers:
            for stat in ("mean", "std", "near_zero"):
                logged = [m.step for m in client.get_metric_history(plan.run_id, f"weights/{layer}/{stat}")]
                assert sorted(logged) == steps, (layer, stat)  # each step once
        # The other epoch metrics stay every epoch.
        epochs = [m.step for m in client.get_metric_history(plan.run_id, "val_accuracy")]
        assert sorted(epochs) == list(range(7))
        state = torch.load(
            client.download_artifacts(plan.run_id, "weights/state_dict.pt", str(tmp_path)), weights_only=True
        )
        final = state["model.net.0.weight"]
        assert abs(run.data.metrics["weights/model.net.0.weight/std"] - final.std(correction=0).item()) < 1e-5
        assert run.info.run_name == f"trial-{plan.number} · {run.data.tags['hyperflow.state']}"


def test_a_function_s_returned_model_gets_its_weight_metrics_once(tmp_path: Path, sqlite_store: str) -> None:
    from hyperflow.components.plots import weight_histograms

    cfg = config(tmp_path, sqlite_store)
    study = make_study(cfg)
    (plan,) = study.plan(limit=1)
    net = torch.nn.Linear(4, 3)
    res = result(plan, "completed", 0.5, epochs=3)
    res.histograms = weight_histograms(dict(net.named_parameters()))
    plan.logger.finish(res, cfg.search.metric)
    plan.logger.wait()
    history = MlflowClient(sqlite_store).get_metric_history(plan.run_id, "weights/weight/near_zero")
    assert [(m.step, m.value) for m in history] == [(2, res.histograms["weight"]["near_zero"])]


def test_best_metric_is_one_running_best_with_strictly_increasing_steps(
    tmp_path: Path, sqlite_store: str
) -> None:
    cfg = config(tmp_path, sqlite_store, n_parallel=4, n_trials=5)
    study = make_study(cfg)
    plans = study.plan()
    values = {0: 0.5, 1: 0.9, 2: 0.7, 3: 0.95}
    for number in (2, 0, 3, 1):  # parallel trials finish out of order
        plan = next(p for p in plans if p.number == number)
        study.record(plan, result(plan, "completed", values[number]))
    study.log_final_best()
    history = MlflowClient(sqlite_store).get_metric_history(study.study_run_id, "best_val_accuracy")
    steps = [m.step for m in history]
    assert steps == sorted(set(steps)), "strictly increasing steps, no echo"
    ordered = [m.value for m in sorted(history, key=lambda m: m.step)]
    assert ordered == sorted(ordered) and ordered[-1] == 0.95


def test_the_final_best_is_written_once_after_a_resume(tmp_path: Path, sqlite_store: str) -> None:
    cfg = config(tmp_path, sqlite_store)
    first = make_study(cfg)
    for value in (0.6, 0.8):
        (plan,) = first.plan(limit=1)
        first.record(plan, result(plan, "completed", value))
    # A resumed study: the best came from before, and nothing better follows.
    resumed = make_study(cfg, history=list(first.records))
    resumed.study_run_id = first.study_run_id
    resumed.log_final_best()
    resumed.log_final_best()
    history = MlflowClient(sqlite_store).get_metric_history(first.study_run_id, "best_val_accuracy")
    assert sorted((m.step, m.value) for m in history) == [(0, 0.6), (1, 0.8)]


def test_the_run_list_opens_on_the_trials_with_their_params_and_metric(
    tmp_path: Path, sqlite_store: str
) -> None:
    cfg = small_config(
        tmp_path,
        search={"space": {"learning_rate": {"low": 0.01, "high": 0.1}, "batch_size": {"choices": [32, 64]}}},
        tracking={"uri": sqlite_store},
    )
    view = run_list_view(cfg, "abc")
    assert view["selectedColumns"][:3] == [
        "params.`learning_rate`",
        "params.`batch_size`",
        "metrics.`val_accuracy`",
    ]
    assert view["searchFilter"] == "tags.`mlflow.parentRunId` = 'abc'"
    assert (view["orderByKey"], view["orderByAsc"]) == ("metrics.`val_accuracy`", False)
    address = ui_command(sqlite_store, "7", "abc")
    assert address.endswith("#/experiments/7/runs?workflowType=machine_learning&viewStateShareKey=abc")

    study = make_study(cfg)
    tracker = study.tracker
    data: Any = None
    _, run_id = tracker.start_study(
        cfg, data, config_hash="h", flow_run_id=None, config_yaml="x: 1\n", flat_config={}
    )
    tags = tracker.client.get_experiment(study.experiment_id).tags
    assert json.loads(tags[SHARED_VIEW + run_id]) == run_list_view(cfg, run_id)


def test_weight_histograms_png_has_a_panel_per_tensor_with_its_bars(tmp_path: Path) -> None:
    from PIL import Image

    from hyperflow.components.plots import draw_weight_histograms, weight_histograms

    gen = torch.Generator().manual_seed(0)
    tensors = {
        "net.0.weight": torch.randn(32, 8, generator=gen),
        "net.0.bias": torch.zeros(32),  # one bin holds everything
        "net.2.weight": torch.randn(3, 32, generator=gen) + 5,  # all positive: no zero tick
        "net.2.bias": torch.full((3,), float("nan")),  # nothing finite: an empty panel
    }
    hist = weight_histograms(tensors)
    path = draw_weight_histograms(hist, tmp_path / "h.png")
    image = Image.open(path).convert("RGB")
    assert image.size == (3 * 288, 2 * 207), "three panels a row, two rows for four tensors"
    bar = (0x44, 0x77, 0xAA)

    def bar_pixels(col: int, row: int) -> int:
        panel = image.crop((col * 288, row * 207, (col + 1) * 288, (row + 1) * 207))
        return sum(1 for p in panel.getdata() if p == bar)

    assert bar_pixels(0, 0) > 1000 and bar_pixels(1, 0) > 100 and bar_pixels(2, 0) > 1000
    assert bar_pixels(0, 1) == 0, "no finite value, no bar"
    assert bar_pixels(1, 1) == 0 and bar_pixels(2, 1) == 0, "the unused cells stay empty"
