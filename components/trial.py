"""One trial's vocabulary: what it is given (TrialSpec), what it returns (TrialResult), its guard."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch

from hyperflow.components.devices import gpu_count, resolve_accelerator
from hyperflow.components.names import FAILED, WEIGHT_SUMMARY_EVERY, Mode, TrialState
from hyperflow.components.usercode import UserSpec, user_spec

if TYPE_CHECKING:
    from hyperflow.components.config import ExperimentConfig
    from hyperflow.components.curves import StopDecision, StopPolicy

__all__ = [
    "DIVERGENCE_FACTOR",
    "EpochCallback",
    "TrialFailed",
    "TrialGuard",
    "TrialInterrupted",
    "TrialPruned",
    "TrialResult",
    "TrialSpec",
]

# An epoch's mean training loss this many times its first epoch's marks a diverging run.
DIVERGENCE_FACTOR = 100.0
EpochCallback = Callable[[int, dict[str, float]], None]


class TrialFailed(Exception):
    """The trial failed on its own merits (NaN loss, time budget, a missing metric)."""


class TrialInterrupted(Exception):
    """The trial was asked to stop (Ctrl-C, SIGTERM, the study's time budget)."""


class TrialPruned(Exception):
    """Raised by `report` when the early-stopping rule stops the trial; let it propagate."""


@dataclass(frozen=True)
class TrialSpec:
    """What every trial of a study shares; small and picklable, sent with each trial.

    Attributes:
        metric: the search metric (e.g. `val_accuracy`).
        mode: `max` or `min` (`search.mode`, inferred from the metric when the config leaves it out).
        fixed: the fixed `model.*` values; a trial's parameters override them.
        num_threads: torch threads for the trial (None: leave torch's setting alone).
        user: the user's LightningModule / DataModule / training function (None: the built-in MLP).
        accelerator: `cpu` or `gpu`, `runner.accelerator` resolved on the search loop's machine
            (a GPU trial trains on the first GPU its worker sees).
        precision: `runner.precision`.
        weight_summary_every: `tracking.weight_summary_every`: the epochs whose weight summaries
            are logged (every N-th from epoch 0, none for N = 0; the last epoch's come with the
            trial's final weights).
        logged_objectives: the further `search.objectives` that the trial itself must log (all but
            the first and the counts hyperflow takes itself): a completed trial without a finite
            last value of each fails, saying which, rather than silently leaving the front.
    """

    metric: str
    mode: Mode
    fixed: dict[str, Any] = field(default_factory=dict)
    num_threads: int | None = None
    user: UserSpec | None = None
    accelerator: Literal["cpu", "gpu"] = "cpu"
    precision: str = "32"
    weight_summary_every: int = WEIGHT_SUMMARY_EVERY
    logged_objectives: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, cfg: ExperimentConfig, num_threads: int | None = None) -> TrialSpec:
        from hyperflow.components.config_checks import TRIAL_METRICS

        fixed = cfg.model.fixed_values()
        return cls(
            metric=cfg.search.metric,
            mode=cfg.search.mode,
            fixed={**fixed, **cfg.model.args},
            num_threads=num_threads,
            user=user_spec(cfg),
            accelerator=resolve_accelerator(cfg.runner.accelerator, gpu_count()),
            precision=cfg.runner.precision,
            weight_summary_every=cfg.tracking.weight_summary_every,
            logged_objectives=tuple(
                o.metric for o in cfg.search.objectives[1:] if o.metric not in TRIAL_METRICS
            ),
        )

    def resolve(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The full set of model values for a trial: the fixed ones overridden by its parameters."""
        return {**self.fixed, **params}

    def max_epochs(self, params: Mapping[str, Any]) -> int:
        """The epochs a trial trains (and the early-stopping rule extrapolates to)."""
        return int(self.resolve(params).get("max_epochs", 30))


@dataclass
class TrialResult:
    """Everything a trial returns to the search loop (all of it pickles).

    `value` is the search metric at the last epoch trained, and `state_dict` holds that epoch's
    weights (of the whole module, so the adapter's `build` + `load_state_dict` restores it).
    """

    params: dict[str, Any]
    seed: int
    state: TrialState = FAILED
    value: float | None = None
    history: dict[str, list[float]] = field(default_factory=dict)
    param_count: int = 0
    epochs_trained: int = 0
    train_seconds: float = 0.0
    state_dict: dict[str, torch.Tensor] | None = None
    error: str | None = None
    device_error: bool = False  # an out-of-memory or CUDA error: its worker is restarted after it
    stop_reason: str | None = None
    predicted_final: float | None = None
    curve: list[float] = field(default_factory=list)  # the search metric, one value per epoch
    param_names: list[str] = field(default_factory=list)  # state_dict keys that are parameters
    histograms: dict[str, Any] | None = None  # per-parameter histograms, filled when logged


@dataclass(kw_only=True, eq=False)
class TrialGuard:
    """The checks every trial runs, whatever trains it (the built-in MLP, a user's module, a function).

    One copy of the conditions and their messages: `check()` before every batch (or report) for a
    stop request and the two time budgets; `check_loss` for a finite training loss; `epoch_end`
    with an epoch's metrics: the search metric logged and finite, no divergence, then the
    early-stopping rule. Every exception it raises is kept in `stopped`, so a trial that catches
    one (a training function cleaning up) still ends as the guard said.
    """

    metric: str
    final_epoch: int
    stop_policy: StopPolicy | None = None
    on_epoch: EpochCallback | None = None
    stop_event: Any = None
    deadline: float | None = None  # time.monotonic()
    stop_at: float | None = None  # time.time()
    check_divergence: bool = True
    weight_summary_every: int = 1
    history: dict[str, list[float]] = field(default_factory=dict, init=False)
    curve: list[float] = field(default_factory=list, init=False)
    last_epoch: int | None = field(default=None, init=False)
    decision: StopDecision | None = field(default=None, init=False)
    stopped: BaseException | None = field(default=None, init=False)
    _first_train_loss: float | None = field(default=None, init=False)

    def stop(self, exc: BaseException) -> BaseException:
        """Keep `exc` as how the trial ends (the first one kept wins) and return it to raise."""
        if self.stopped is None:
            self.stopped = exc
        return self.stopped

    def check(self) -> None:
        """Raise when the trial must end now: a stop request, the trial's or the study's time budget."""
        if self.stopped is not None:
            raise self.stopped
        if self.stop_event is not None and self.stop_event.is_set():
            raise self.stop(TrialInterrupted("interrupted"))
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise self.stop(TrialFailed("the trial ran past search.trial_timeout_minutes"))
        if self.stop_at is not None and time.time() > self.stop_at:
            raise self.stop(TrialInterrupted("the study's time budget (search.timeout_minutes) is spent"))

    def check_loss(self, loss: float, epoch: int, batch_idx: int) -> None:
        """A training loss that is NaN or infinite fails the trial."""
        if not math.isfinite(loss):
            raise self.stop(TrialFailed(f"training loss became {loss} at epoch {epoch}, batch {batch_idx}"))

    def logs_weights(self, epoch: int) -> bool:
        """Whether `epoch`'s weight summaries are logged with its metrics (every
        `weight_summary_every`-th epoch from epoch 0, none when it is 0); the trial's logger adds
        its last epoch's from the final weights when that epoch is not one of them."""
        return self.weight_summary_every > 0 and epoch % self.weight_summary_every == 0

    def epoch_end(
        self, epoch: int, metrics: Mapping[str, float], also_log: Mapping[str, float] | None = None
    ) -> StopDecision | None:
        """Take an epoch's metrics; return the early-stopping rule's decision (None: train on).

        `also_log` (the weight summaries) is logged with the epoch's metrics but is not part of the
        trial's history of what the module reported.

        Raises:
            TrialFailed: the search metric is missing or not finite, or training diverges.
        """
        for key, value in metrics.items():
            self.history.setdefault(key, []).append(value)
        if self.metric not in metrics:
            logged = ", ".join(sorted(metrics)) or "nothing"
            raise self.stop(
                TrialFailed(f"the search metric {self.metric!r} was not logged (logged: {logged})")
            )
        value = metrics[self.metric]
        if not math.isfinite(value):
            raise self.stop(TrialFailed(f"{self.metric} became {value} at epoch {epoch}"))
        if self.check_divergence:
            self._diverging(epoch, metrics.get("train_loss"))
        self.curve.append(value)
        self.last_epoch = epoch
        if self.on_epoch is not None:
            self.on_epoch(epoch, {**metrics, **(also_log or {})})
        if self.stop_policy is not None and len(self.curve) - 1 < self.final_epoch:
            decision = self.stop_policy.check(self.curve, self.final_epoch)
            if decision is not None:
                self.decision = decision
                return decision
        return None

    def _diverging(self, epoch: int, train_loss: float | None) -> None:
        """A training loss far above where it started is a diverging run: stop it as failed."""
        if train_loss is None or not math.isfinite(train_loss):
            return
        if self._first_train_loss is None:
            self._first_train_loss = train_loss
        elif train_loss > DIVERGENCE_FACTOR * max(self._first_train_loss, 1e-3):
            raise self.stop(
                TrialFailed(
                    f"diverging: train_loss {train_loss:.4g} at epoch {epoch} is over {DIVERGENCE_FACTOR:g}x "
                    f"its first epoch's {self._first_train_loss:.4g}"
                )
            )
