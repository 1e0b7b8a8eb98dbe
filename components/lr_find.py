"""The learning-rate range test (Smith 2017) on the built-in MLP, through Lightning's `Tuner.lr_find`."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest import mock

import lightning.pytorch as pl
import numpy as np
import torch

from hyperflow.components.adapters import MLPAdapter
from hyperflow.components.adapters._control import quiet_lightning
from hyperflow.components.batches import TensorBatches, split_tensors
from hyperflow.components.devices import seed_torch
from hyperflow.components.model import MLPModule
from hyperflow.components.scratch import scratch_dir
from hyperflow.components.search._base import derive_seed
from hyperflow.components.trial import TrialSpec

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from hyperflow.components.config import ExperimentConfig
    from hyperflow.components.data import Dataset

__all__ = [
    "RANGE_DOWN",
    "RANGE_UP",
    "FoundRate",
    "NarrowedRange",
    "RangeTestResult",
    "configured_bounds",
    "draw_range_test",
    "find_learning_rate",
    "log_range_test",
    "narrow",
    "range_test",
    "range_test_params",
    "read_narrowed",
    "steepest_descent",
    "sweep_bounds",
]

# The narrowed range around the suggestion s: [s / RANGE_DOWN, s * RANGE_UP], clipped to the bounds.
# Lightning's suggestion is the steepest descent of the loss, usually below the best rate, so the
# range reaches further up than down.
RANGE_DOWN = 10.0
RANGE_UP = 3.0
# Without search.space.learning_rate, the rates swept (and the bounds reported against).
DEFAULT_SWEEP = (1e-6, 1.0)
STEPS = 100  # Lightning's default number of rates tried


@dataclass(frozen=True)
class RangeTestResult:
    """What the range test measured: the smoothed training loss at each learning rate tried.

    `suggestion` is the rate where the loss falls fastest on the log-scale plot (`steepest_descent`),
    None when the loss diverged too early to tell; `lightning_suggestion` is `suggestion()`'s.
    """

    suggestion: float | None
    lrs: list[float]
    losses: list[float]
    min_lr: float
    max_lr: float
    steps: int
    lightning_suggestion: float | None = None


@dataclass(frozen=True)
class NarrowedRange:
    """The learning-rate range recommended from a suggestion, within the configured bounds.

    Attributes:
        low, high: the recommended range, [s / 10, s * 3] clipped to the bounds.
        suggestion: the suggestion clipped into the bounds (what is evaluated first).
        raw_suggestion: the range test's own suggestion (None: it found none).
        bounds: the configured (low, high).
        note: why the range is not the rule's plain result (a clipped suggestion, none found).
    """

    low: float
    high: float
    suggestion: float | None
    raw_suggestion: float | None
    bounds: tuple[float, float]
    note: str | None = None


def configured_bounds(cfg: ExperimentConfig) -> tuple[float, float]:
    """`search.space.learning_rate`'s (low, high), or the default sweep when it is not a range."""
    spec = cfg.search.space.get("learning_rate")
    low, high = getattr(spec, "low", None), getattr(spec, "high", None)
    if low is None or high is None:
        return DEFAULT_SWEEP
    return float(low), float(high)


def sweep_bounds(cfg: ExperimentConfig) -> tuple[float, float]:
    """The rates the test sweeps: two decades below the bounds to one above, so that it can tell
    when the best rate lies outside them."""
    low, high = configured_bounds(cfg)
    if (low, high) == DEFAULT_SWEEP:
        return DEFAULT_SWEEP
    return low / 100.0, high * 10.0


def narrow(suggestion: float | None, bounds: tuple[float, float]) -> NarrowedRange:
    """The recommended range: [s / 10, s * 3] clipped to `bounds`; a suggestion outside them is clipped first."""
    low, high = bounds
    if suggestion is None or not math.isfinite(suggestion) or suggestion <= 0:
        return NarrowedRange(low, high, None, suggestion, bounds, "the range test found no suggestion")
    s = min(max(suggestion, low), high)
    note = None
    if suggestion > high:
        note = f"the suggestion {suggestion:.4g} lies above the bounds' high {high:.4g}: clipped to it"
    elif suggestion < low:
        note = f"the suggestion {suggestion:.4g} lies below the bounds' low {low:.4g}: clipped to it"
    return NarrowedRange(max(low, s / RANGE_DOWN), min(high, s * RANGE_UP), s, suggestion, bounds, note)


class _NoBar:
    """Stands in for tqdm in Lightning's range test."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


class _RangeTestModule(MLPModule):
    """The trial's MLP with Lightning's automatic optimisation, which `lr_find` drives step by step.

    No schedule of its own (the test's is the only one), no per-epoch validation.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.automatic_optimization = True

    def on_train_start(self) -> None:
        pass

    def on_train_epoch_start(self) -> None:
        pass

    def on_train_epoch_end(self) -> None:
        pass

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss: torch.Tensor = self.loss_fn(self(x), y)
        if self.l1 > 0:
            loss = loss + self.l1 * sum(w.abs().sum() for w in self._weights)
        return loss

    def configure_optimizers(self) -> Any:
        return self.make_optimizer()


def range_test(
    cfg: ExperimentConfig, data: Dataset, *, steps: int = STEPS, seed: int | None = None
) -> RangeTestResult:
    """Run the range test with the config's model values (optimizer, batch size, architecture, ...).

    The learning rate grows exponentially over `steps` mini-batches across `sweep_bounds(cfg)`;
    the test stops early when the loss diverges (Lightning's rule: 4x the best loss so far).
    The model's own weights and the caller's random state are left as they were.
    """
    from lightning.pytorch.tuner import Tuner, lr_finder

    quiet_lightning()
    min_lr, max_lr = sweep_bounds(cfg)
    spec = TrialSpec.from_config(cfg)
    seed = derive_seed("lr_range_test", cfg.seed) if seed is None else seed
    with torch.random.fork_rng(devices=[]), scratch_dir("lr-find") as tmp:
        seed_torch(seed)
        module = MLPAdapter(spec).build(data, {})  # the range test is the built-in model's
        test_module = _RangeTestModule(
            in_features=data.n_features,
            out_features=data.n_outputs,
            task=data.task,
            target_std=data.target_std if data.task == "regression" else 1.0,
            **{k: v for k, v in spec.fixed.items() if k != "batch_size"},
        )
        test_module.load_state_dict(module.state_dict())
        x, y = split_tensors(data, "train")
        batches = TensorBatches(x, y, int(cfg.model.batch_size), shuffle=True, seed=seed)
        trainer = pl.Trainer(
            max_epochs=math.ceil(steps / max(1, len(batches))) + 1,
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            default_root_dir=tmp,  # lr_find's temporary checkpoint goes here, not into the working directory
        )
        # Lightning's range test draws its own tqdm bar whatever the Trainer says; not in our output.
        with mock.patch.object(lr_finder, "tqdm", _NoBar):
            finder = Tuner(trainer).lr_find(
                test_module,
                train_dataloaders=batches,
                min_lr=min_lr,
                max_lr=max_lr,
                num_training=steps,
                update_attr=False,
            )
    assert finder is not None
    lrs = [float(v) for v in finder.results["lr"]]
    losses = [float(v) for v in finder.results["loss"]]
    lightning = finder.suggestion()
    return RangeTestResult(
        suggestion=steepest_descent(lrs, losses),
        lrs=lrs,
        losses=losses,
        min_lr=min_lr,
        max_lr=max_lr,
        steps=steps,
        lightning_suggestion=None if lightning is None else float(lightning),
    )


def steepest_descent(
    lrs: Sequence[float], losses: Sequence[float], skip_begin: int = 10, skip_end: int = 1
) -> float | None:
    """The rate where the loss falls fastest against log(rate), before its minimum (None: too few points).

    Lightning's `suggestion()` takes the gradient against the rate itself, which on an exponential
    sweep lets the noise of the smallest rates win (measured on digits with SGD: 2.6e-4, where the
    loss had not started to fall; this rule gives 3e-2, where it falls fastest on the log-scale plot).
    """
    lr = np.asarray(lrs[skip_begin : len(lrs) - skip_end], dtype=float)
    loss = np.asarray(losses[skip_begin : len(losses) - skip_end], dtype=float)
    keep = np.isfinite(loss) & (lr > 0)
    lr, loss = lr[keep], loss[keep]
    if len(loss) < 3:
        return None
    end = int(np.argmin(loss)) + 1  # past the minimum the loss diverges: no descent to find there
    if end < 3:
        return None
    slope = np.gradient(loss[:end], np.log(lr[:end]))
    return float(lr[int(np.argmin(slope))])


def draw_range_test(result: RangeTestResult, narrowed: NarrowedRange, path: Path | str) -> Path:
    """The loss against the learning rate (log scale), the bounds, the recommended range, the suggestion."""
    from matplotlib.figure import Figure  # the Agg canvas, no pyplot state

    fig = Figure(figsize=(7, 4), dpi=90)
    ax = fig.add_subplot(1, 1, 1)
    finite = [(lr, loss) for lr, loss in zip(result.lrs, result.losses, strict=False) if math.isfinite(loss)]
    if finite:
        losses = [p[1] for p in finite]
        ax.plot([p[0] for p in finite], losses, color="#4477aa", lw=1.5, label="training loss")
        # Up to where it diverges: the explosion at the end would flatten the part that matters.
        before = losses[: losses.index(min(losses)) + 1]
        ax.set_ylim(min(losses) - 0.05 * abs(min(losses)), 1.3 * max(before) + 1e-12)
    ax.set_xscale("log")
    low, high = narrowed.bounds
    for bound in (low, high):
        ax.axvline(bound, color="#999999", ls=":", lw=1)
    ax.axvspan(narrowed.low, narrowed.high, color="#228833", alpha=0.15, label="recommended range")
    if narrowed.raw_suggestion is not None:
        ax.axvline(
            narrowed.raw_suggestion, color="#ee6677", lw=1, label=f"suggestion {narrowed.raw_suggestion:.3g}"
        )
    ax.set_xlabel("learning rate")
    ax.set_ylabel("smoothed training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    title = f"LR range test: [{narrowed.low:.3g}, {narrowed.high:.3g}] within [{low:.3g}, {high:.3g}]"
    ax.set_title(title, fontsize=9)
    path = Path(path)
    fig.savefig(path)
    return path


def range_test_params(result: RangeTestResult, narrowed: NarrowedRange) -> dict[str, str]:
    """The MLflow params of a range test (floats as repr, so that they read back exactly)."""
    params = {
        "lr_range_test.low": repr(narrowed.low),
        "lr_range_test.high": repr(narrowed.high),
        "lr_range_test.suggestion": repr(narrowed.raw_suggestion),
        "lr_range_test.min_lr": repr(result.min_lr),
        "lr_range_test.max_lr": repr(result.max_lr),
        "lr_range_test.steps": str(result.steps),
        "lr_range_test.lightning_suggestion": repr(result.lightning_suggestion),
        "lr_range_test.bound_low": repr(narrowed.bounds[0]),
        "lr_range_test.bound_high": repr(narrowed.bounds[1]),
    }
    if narrowed.note:
        params["lr_range_test.note"] = narrowed.note
    return params


def read_narrowed(params: Mapping[str, str]) -> NarrowedRange | None:
    """A range test recorded in a run's params (None: none recorded)."""
    if "lr_range_test.low" not in params or "lr_range_test.high" not in params:
        return None
    raw = params.get("lr_range_test.suggestion", "None")
    suggestion = None if raw == "None" else float(raw)
    low, high = float(params["lr_range_test.low"]), float(params["lr_range_test.high"])
    bounds = (
        float(params.get("lr_range_test.bound_low", low)),
        float(params.get("lr_range_test.bound_high", high)),
    )
    clipped = None if suggestion is None else min(max(suggestion, low), high)
    return NarrowedRange(low, high, clipped, suggestion, bounds, params.get("lr_range_test.note"))


def log_range_test(
    client: MlflowClient, run_id: str, result: RangeTestResult, narrowed: NarrowedRange
) -> None:
    """Record a range test in a run: its params, `plots/lr_range_test.png` and `lr_range_test.json`."""
    from mlflow.entities import Param

    params = range_test_params(result, narrowed)
    with scratch_dir("lr-find") as tmp:
        folder = Path(tmp) / "plots"
        folder.mkdir()
        draw_range_test(result, narrowed, folder / "lr_range_test.png")
        client.log_artifacts(run_id, str(folder), "plots")
        record = {"result": asdict(result), "narrowed": asdict(narrowed)}
        client.log_text(run_id, json.dumps(record, indent=1), "lr_range_test.json")
    # The params last: they are what says the test is recorded (resume reads them).
    client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])


@dataclass(frozen=True)
class FoundRate:
    """What `hyperflow lr-find` reports: the test, the recommended range, the run that records them."""

    result: RangeTestResult
    narrowed: NarrowedRange
    tracking_uri: str
    experiment_id: str
    run_id: str


def find_learning_rate(cfg: ExperimentConfig, data: Dataset, tracking_uri: str) -> FoundRate:
    """Run the range test and record it in a run of its own (tag `hyperflow.role=lr_range_test`).

    The run holds the config's `model.*` values as params besides the test's own.
    """
    from mlflow.entities import Param

    from hyperflow.components.fingerprint import flatten
    from hyperflow.components.names import ROLE_LR_RANGE_TEST, TAG_ROLE
    from hyperflow.components.tracking import StudyTracker, param_value

    result = range_test(cfg, data)
    narrowed = narrow(result.suggestion, configured_bounds(cfg))
    tracker = StudyTracker(tracking_uri)
    experiment_id = tracker.experiment_id(cfg.name)
    run = tracker.client.create_run(
        experiment_id, tags={TAG_ROLE: ROLE_LR_RANGE_TEST}, run_name="lr-range-test"
    )
    run_id = run.info.run_id
    try:
        model = {k: v for k, v in flatten(cfg.model).items() if v is not None and v != {}}
        tracker.client.log_batch(
            run_id, params=[Param(f"model.{k}", param_value(v)) for k, v in model.items()]
        )
        log_range_test(tracker.client, run_id, result, narrowed)
    except BaseException:
        tracker.end_run(run_id, "FAILED")
        raise
    tracker.end_run(run_id, "FINISHED")
    return FoundRate(result, narrowed, tracker.uri, experiment_id, run_id)
