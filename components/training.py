"""One trial: build the module for a parameter set, train it with Lightning, return a TrialResult."""

from __future__ import annotations

import logging
import math
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping

from hyperflow.components.model import MLPModule, param_count

if TYPE_CHECKING:
    from hyperflow.components.config import ExperimentConfig
    from hyperflow.components.curves import StopPolicy
    from hyperflow.components.data import Dataset
    from hyperflow.components.usermodule import UserSpec

__all__ = [
    "EpochCallback",
    "TensorBatches",
    "TrialFailed",
    "TrialInterrupted",
    "TrialResult",
    "TrialSpec",
    "build_module",
    "train_trial",
]

TrialState = Literal["completed", "pruned", "failed", "interrupted"]

# An epoch's mean training loss this many times its first epoch's marks a diverging run.
DIVERGENCE_FACTOR = 100.0
EpochCallback = Callable[[int, dict[str, float]], None]


class TrialFailed(Exception):
    """The trial failed on its own merits (NaN loss, time budget, a missing metric)."""


class TrialInterrupted(Exception):
    """The trial was asked to stop (Ctrl-C, SIGTERM, the study's time budget)."""


@dataclass(frozen=True)
class TrialSpec:
    """What every trial of a study shares; small and picklable, sent with each trial.

    Attributes:
        metric: the search metric (e.g. `val_accuracy`).
        mode: `max` or `min`.
        fixed: the fixed `model.*` values; a trial's parameters override them.
        num_threads: torch threads for the trial (None: leave torch's setting alone).
        user: the user's LightningModule / DataModule / training function (None: the built-in MLP).
    """

    metric: str
    mode: Literal["max", "min"]
    fixed: dict[str, Any] = field(default_factory=dict)
    num_threads: int | None = None
    user: UserSpec | None = None

    @classmethod
    def from_config(cls, cfg: ExperimentConfig, num_threads: int | None = None) -> TrialSpec:
        from hyperflow.components.usermodule import user_spec

        fixed = cfg.model.model_dump(exclude={"module", "args"})
        return cls(
            metric=cfg.search.metric,
            mode=cfg.search.direction,
            fixed={**fixed, **cfg.model.args},
            num_threads=num_threads,
            user=user_spec(cfg),
        )

    def resolve(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The full set of model values for a trial: the fixed ones overridden by its parameters."""
        return {**self.fixed, **params}


@dataclass
class TrialResult:
    """Everything a trial returns to the search loop (all of it pickles).

    `value` is the search metric at the last epoch trained, and `state_dict` holds that epoch's
    weights (of the whole LightningModule, so `build_module` + `load_state_dict` restores it).
    """

    params: dict[str, Any]
    seed: int
    state: TrialState
    value: float | None = None
    history: dict[str, list[float]] = field(default_factory=dict)
    param_count: int = 0
    epochs_trained: int = 0
    train_seconds: float = 0.0
    state_dict: dict[str, torch.Tensor] | None = None
    error: str | None = None
    stop_reason: str | None = None
    predicted_final: float | None = None
    curve: list[float] = field(default_factory=list)  # the search metric, one value per epoch
    param_names: list[str] = field(default_factory=list)  # state_dict keys that are parameters
    histograms: dict[str, Any] | None = None  # per-parameter histograms, filled when logged


class TensorBatches:
    """Mini-batches cut from in-memory tensors, reshuffled each epoch by a seeded generator.

    A DataLoader over a TensorDataset collates sample by sample; slicing the tensors directly is
    several times cheaper per batch for small models. With `per_epoch=True` an epoch is a single
    item, the list of its mini-batches, for a module that steps through them itself (MLPModule).
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        per_epoch: bool = False,
    ) -> None:
        self.x, self.y = x, y
        self.batch_size = max(1, int(batch_size))
        self.shuffle = shuffle
        self.per_epoch = per_epoch
        self._gen = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return 1 if self.per_epoch else math.ceil(len(self.x) / self.batch_size)

    def _batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.x)
        if self.shuffle:
            order = torch.randperm(n, generator=self._gen)
            x, y = self.x[order], self.y[order]
        else:
            x, y = self.x, self.y
        return [
            (x[i : i + self.batch_size], y[i : i + self.batch_size]) for i in range(0, n, self.batch_size)
        ]

    def __iter__(self) -> Iterator[Any]:
        if self.per_epoch:
            yield self._batches()
        else:
            yield from self._batches()


class _TrialControl(EarlyStopping):
    """Per-batch guard and per-epoch reporter of a trial.

    It subclasses EarlyStopping only so that Lightning calls its `on_train_epoch_end` after the
    module's own (Lightning's hard-coded "monitoring callbacks"), when every metric of the epoch —
    validation and whatever the module logs at epoch end — is in `trainer.callback_metrics`.
    """

    def __init__(
        self,
        *,
        metric: str,
        final_epoch: int,
        stop_policy: StopPolicy | None,
        on_epoch: EpochCallback | None,
        stop_event: threading.Event | Any | None,
        deadline: float | None,
        stop_at: float | None = None,
    ) -> None:
        Callback.__init__(self)
        self.metric = metric
        self.final_epoch = final_epoch
        self.stop_policy = stop_policy
        self.on_epoch = on_epoch
        self.stop_event = stop_event
        self.deadline = deadline
        self.stop_at = stop_at
        self._first_train_loss: float | None = None
        self.epoch = 0
        self.history: dict[str, list[float]] = {}
        self.curve: list[float] = []
        self.decision: Any = None

    # EarlyStopping's own behaviour is switched off: these are the only hooks that act.
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        pass

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass

    @property
    def state_key(self) -> str:
        return "hyperflow_trial_control"

    def _check_divergence(self, epoch: int, train_loss: float | None) -> None:
        """A training loss far above where it started is a diverging run: stop it as failed."""
        if train_loss is None or not math.isfinite(train_loss):
            return
        if self._first_train_loss is None:
            self._first_train_loss = train_loss
        elif train_loss > DIVERGENCE_FACTOR * max(self._first_train_loss, 1e-3):
            raise TrialFailed(
                f"diverging: train_loss {train_loss:.4g} at epoch {epoch} is over {DIVERGENCE_FACTOR:g}x "
                f"its first epoch's {self._first_train_loss:.4g}"
            )

    def guard(self, batch_idx: int, loss: torch.Tensor | None) -> None:
        """Before a batch (loss None): interruption and time budget; after: a finite loss."""
        if loss is None:
            if self.stop_event is not None and self.stop_event.is_set():
                raise TrialInterrupted("interrupted")
            if self.deadline is not None and time.monotonic() > self.deadline:
                raise TrialFailed("the trial ran past search.trial_timeout_minutes")
            if self.stop_at is not None and time.time() > self.stop_at:
                raise TrialInterrupted("the study's time budget (search.timeout_minutes) is spent")
        elif not math.isfinite(loss.item()):  # ~1 us; torch.isfinite + bool costs ~10 us a batch
            raise TrialFailed(
                f"training loss became {float(loss.detach())} at epoch {self.epoch}, batch {batch_idx}"
            )

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epoch = trainer.current_epoch

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.guard(batch_idx, None)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, torch.Tensor) and loss.numel() == 1:
            self.guard(batch_idx, loss)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        metrics = {
            k: float(v)
            for k, v in trainer.callback_metrics.items()
            if isinstance(v, torch.Tensor) and v.numel() == 1
        }
        metrics.update(getattr(pl_module, "epoch_metrics", None) or {})
        for key, value in metrics.items():
            self.history.setdefault(key, []).append(value)
        if self.metric not in metrics:
            logged = ", ".join(sorted(metrics)) or "nothing"
            raise TrialFailed(f"the search metric {self.metric!r} was not logged (logged: {logged})")
        value = metrics[self.metric]
        if not math.isfinite(value):
            raise TrialFailed(f"{self.metric} became {value} at epoch {epoch}")
        self._check_divergence(epoch, metrics.get("train_loss"))
        self.curve.append(value)
        if self.on_epoch is not None:
            self.on_epoch(epoch, metrics)
        if self.stop_policy is not None and epoch < self.final_epoch:
            decision = self.stop_policy.check(self.curve, self.final_epoch)
            if decision is not None:
                self.decision = decision
                trainer.should_stop = True


def build_module(data: Dataset | None, params: Mapping[str, Any], spec: TrialSpec) -> pl.LightningModule:
    """The LightningModule for a parameter set (the built-in MLP or `model.module`), before any training.

    A user's module with its own DataModule needs no `data` (resume rebuilds it from params alone).
    """
    if spec.user is not None and spec.user.module is not None:
        from hyperflow.components.usermodule import build_user_module

        return build_user_module(data, params, spec)
    if data is None:
        raise ValueError("the built-in model needs a Dataset")
    values = spec.resolve(params)
    batch_size = int(values.get("batch_size", 64))
    return MLPModule(
        in_features=data.n_features,
        out_features=data.n_outputs,
        task=data.task,
        steps_per_epoch=math.ceil(len(data.X_train) / batch_size),
        target_std=data.target_std if data.task == "regression" else 1.0,
        **{k: v for k, v in values.items() if k not in ("batch_size", "max_epochs")},
    )


def _tensors(data: Dataset) -> tuple[torch.Tensor, ...]:
    target_dtype = torch.long if data.task == "classification" else torch.float32
    return (
        torch.as_tensor(np.ascontiguousarray(data.X_train), dtype=torch.float32),
        torch.as_tensor(np.ascontiguousarray(data.y_train), dtype=target_dtype),
        torch.as_tensor(np.ascontiguousarray(data.X_val), dtype=torch.float32),
        torch.as_tensor(np.ascontiguousarray(data.y_val), dtype=target_dtype),
    )


def _quiet_lightning() -> None:
    for name in (
        "lightning.pytorch",
        "lightning.fabric",
        "lightning",
        "pytorch_lightning",
        "lightning_fabric",
    ):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*The number of training batches.*")
    warnings.filterwarnings("ignore", message=r".*GPU available but not used.*")
    warnings.filterwarnings("ignore", message=r".*LightningModule.configure_optimizers.*")
    warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec.*")


def train_trial(
    data: Dataset | None,
    params: Mapping[str, Any],
    spec: TrialSpec,
    *,
    seed: int,
    stop_policy: StopPolicy | None = None,
    on_epoch: EpochCallback | None = None,
    callbacks: Sequence[Callback] = (),
    stop_event: threading.Event | Any | None = None,
    deadline: float | None = None,
    stop_at: float | None = None,
) -> TrialResult:
    """Train one trial and return its result; never raises for a trial that fails on its own merits.

    Args:
        data: the prepared data set.
        params: the trial's hyperparameters (they override `spec.fixed`).
        spec: what all trials of the study share.
        seed: the trial's seed; the same seed repeats the trial exactly (dropout included) without
            touching the caller's random state.
        stop_policy: the early-stopping rule's snapshot; asked after each epoch.
        on_epoch: called with (epoch, metrics) after every epoch, e.g. to log them live.
        callbacks: further Lightning callbacks.
        stop_event: anything with `is_set()`; checked before every batch. When set, the trial
            ends as `interrupted`.
        deadline: a `time.monotonic()` value past which the trial fails (trial time budget).
        stop_at: a `time.time()` value past which the trial is interrupted (the study's budget;
            wall-clock time, because it is set in the search loop's process).
    """
    params = dict(params)
    if spec.user is not None and spec.user.objective is not None:
        from hyperflow.components.usermodule import run_objective

        return run_objective(
            params,
            spec,
            seed=seed,
            stop_policy=stop_policy,
            on_epoch=on_epoch,
            stop_event=stop_event,
            deadline=deadline,
            stop_at=stop_at,
        )
    values = spec.resolve(params)
    max_epochs = int(values.get("max_epochs", 30))
    result = TrialResult(params=params, seed=seed, state="failed")
    _quiet_lightning()
    if spec.num_threads:
        torch.set_num_threads(spec.num_threads)
    # fork_rng restores the caller's global torch state afterwards: trials never disturb each other.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        control = _TrialControl(
            metric=spec.metric,
            final_epoch=max_epochs - 1,
            stop_policy=stop_policy,
            on_epoch=on_epoch,
            stop_event=stop_event,
            deadline=deadline,
            stop_at=stop_at,
        )
        module: pl.LightningModule | None = None
        started = time.perf_counter()
        try:
            module = build_module(data, params, spec)
            result.param_count = param_count(module)
            if spec.user is not None:
                from hyperflow.components.usermodule import fit_user_module

                fit_user_module(
                    module,
                    data,
                    params,
                    spec,
                    seed=seed,
                    max_epochs=max_epochs,
                    control=control,
                    callbacks=list(callbacks),
                )
            else:
                assert data is not None
                x_tr, y_tr, x_va, y_va = _tensors(data)
                batch_size = int(values.get("batch_size", 64))
                train = TensorBatches(x_tr, y_tr, batch_size, shuffle=True, seed=seed, per_epoch=True)
                assert isinstance(module, MLPModule)
                module.set_validation_data(x_va, y_va)
                module.batch_guard = control.guard
                trainer = pl.Trainer(
                    max_epochs=max_epochs,
                    accelerator="cpu",
                    devices=1,
                    logger=False,
                    enable_checkpointing=False,
                    enable_progress_bar=False,
                    enable_model_summary=False,
                    num_sanity_val_steps=0,
                    limit_val_batches=0,
                    callbacks=[control, *callbacks],
                )
                trainer.fit(module, train_dataloaders=train)
            result.state = "pruned" if control.decision is not None else "completed"
        except TrialInterrupted as exc:
            result.state, result.error = "interrupted", str(exc)
        except TrialFailed as exc:
            result.state, result.error = "failed", str(exc)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # a user's or a library's error fails this trial, not the study
            result.state, result.error = "failed", f"{type(exc).__name__}: {exc}"
        result.train_seconds = time.perf_counter() - started
    result.history = control.history
    result.curve = control.curve
    result.epochs_trained = len(control.curve)
    if control.curve:
        result.value = control.curve[-1]
    if control.decision is not None and result.state == "pruned":
        result.stop_reason = control.decision.reason
        result.predicted_final = control.decision.predicted
    if module is not None and result.state in ("completed", "pruned"):
        result.state_dict = {k: v.detach().clone() for k, v in module.state_dict().items()}
        result.param_names = [name for name, _ in module.named_parameters()]
    return result
