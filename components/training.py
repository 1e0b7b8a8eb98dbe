"""One trial: its adapter builds and fits the module under the trial's guard; the outcome is a TrialResult."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from hyperflow.components.adapters import FitJob, Fitted, adapter_for
from hyperflow.components.adapters._control import quiet_lightning
from hyperflow.components.devices import is_device_error, seed_torch
from hyperflow.components.faults import fault_point
from hyperflow.components.model import param_count
from hyperflow.components.names import COMPLETED, FAILED, INTERRUPTED, PRUNED
from hyperflow.components.trial import (
    EpochCallback,
    TrialFailed,
    TrialGuard,
    TrialInterrupted,
    TrialPruned,
    TrialResult,
    TrialSpec,
)

if TYPE_CHECKING:
    from lightning.pytorch.callbacks import Callback

    from hyperflow.components.curves import StopPolicy
    from hyperflow.components.data import Dataset

__all__ = ["build_module", "train_trial"]


def build_module(data: Dataset | None, params: Mapping[str, Any], spec: TrialSpec) -> torch.nn.Module:
    """The module for a parameter set (the built-in MLP or `model.module`), before any training.

    A user's module with its own DataModule needs no `data` (resume rebuilds it from params alone).
    """
    module = adapter_for(spec).build(data, params)
    if module is None:
        raise ValueError("a training function builds its own model; there is no module to build")
    return module


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
        data: the prepared data set (None for a user's DataModule or a training function).
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
    adapter = adapter_for(spec)
    guard = TrialGuard(
        metric=spec.metric,
        final_epoch=spec.max_epochs(params) - 1,
        stop_policy=None if stop_policy is None else adapter.stop_policy(stop_policy, params),
        on_epoch=on_epoch,
        stop_event=stop_event,
        deadline=deadline,
        stop_at=stop_at,
        check_divergence=adapter.checks_divergence,
        weight_summary_every=spec.weight_summary_every,
    )
    result = TrialResult(params=params, seed=seed)
    fitted = Fitted(None)
    error: str | None = None
    quiet_lightning()
    if spec.num_threads:
        torch.set_num_threads(spec.num_threads)
    # fork_rng restores the caller's global torch state afterwards: trials never disturb each other.
    with torch.random.fork_rng(devices=[]):
        seed_torch(seed)
        started = time.perf_counter()
        try:
            guard.check()
            module = adapter.build(data, params)
            if module is not None:
                result.param_count = param_count(module)
            fault_point("cuda-oom")
            fault_point("cuda-error")
            fitted = adapter.fit(FitJob(module, data, params, guard, seed, tuple(callbacks)))
        except (KeyboardInterrupt, SystemExit):
            raise
        except (TrialFailed, TrialInterrupted, TrialPruned) as exc:
            error = str(exc)
            if isinstance(exc, TrialPruned) and guard.stopped is None:
                # raised by the trial's own code (as `optuna.TrialPruned` is): a pruned trial too
                guard.stop(exc)
        except Exception as exc:  # a user's or a library's error fails this trial, not the study
            error = f"{type(exc).__name__}: {exc}"
            if is_device_error(exc):
                # Out of GPU memory (or a CUDA error) fails this trial; the study goes on, and the
                # worker that saw it is restarted before its next trial (a CUDA context may be unusable).
                result.device_error = True
                _release_gpu_memory()
        result.train_seconds = time.perf_counter() - started
    _outcome(result, guard, fitted, error, spec.logged_objectives)
    return result


def _check_objectives(result: TrialResult, names: Sequence[str]) -> None:
    """Fail a completed trial that did not log each further objective with a finite last value
    (as Optuna fails a trial whose objective values are missing or NaN): its place on the front
    would be unknown, and it would drop out of it with no word."""
    if result.state != COMPLETED:
        return
    for name in names:
        series = result.history.get(name)
        if not series:
            problem = (
                f"was never logged by the trial (log it each epoch: report(epoch, value, {name}=...) "
                f"in a training function, self.log({name!r}, ...) in a LightningModule)"
            )
        elif not math.isfinite(series[-1]):
            problem = f"was {series[-1]} at the last epoch"
        else:
            continue
        result.state = FAILED
        result.error = f"search.objectives: {name!r} {problem}"
        return


def _release_gpu_memory() -> None:
    """Hand the failed trial's cached GPU memory back, so that its neighbours on the GPU can use it."""
    import gc

    gc.collect()
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _outcome(
    result: TrialResult, guard: TrialGuard, fitted: Fitted, error: str | None, objectives: Sequence[str]
) -> None:
    """The trial's state and value: how the guard ended it, else an error, else completed (unless
    a further objective has no finite value: `_check_objectives`); its weights if it counts."""
    result.history = guard.history
    result.curve = list(guard.curve)
    result.epochs_trained = len(guard.curve)
    if guard.curve:
        result.value = guard.curve[-1]
    stopped = guard.stopped
    if isinstance(stopped, TrialInterrupted):
        result.state, result.error = INTERRUPTED, str(stopped)
    elif isinstance(stopped, TrialFailed):
        result.state, result.error = FAILED, str(stopped)
    elif guard.decision is not None and (isinstance(stopped, TrialPruned) or error is None):
        result.state = PRUNED
        result.stop_reason = guard.decision.reason
        result.predicted_final = guard.decision.predicted
    elif isinstance(stopped, TrialPruned):  # raised by the trial's own code, not by the rule
        result.state = PRUNED
        result.stop_reason = "pruned by the trial's own code" + (f": {stopped}" if str(stopped) else "")
    elif error is not None:
        result.state, result.error = FAILED, error
    else:
        result.state = COMPLETED
        if fitted.value is not None:
            result.value = fitted.value
    if result.state in (COMPLETED, PRUNED) and result.value is None:
        # Training that ended without one epoch reporting the metric (e.g. a DataModule whose
        # dataloaders yield no batch) is no result: the trial fails, saying why.
        result.state = FAILED
        result.error = (
            f"no epoch reported {guard.metric} ({result.epochs_trained} epochs trained): does the "
            "training or validation dataloader yield any batch, and does the module log the metric?"
        )
    _check_objectives(result, objectives)
    module = fitted.module
    if module is not None and result.state in (COMPLETED, PRUNED):
        result.state_dict = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
        result.param_names = [name for name, _ in module.named_parameters()]
        if not result.param_count:
            result.param_count = param_count(module)
