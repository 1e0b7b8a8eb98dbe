"""A plain training function `fn(params, report) -> value` as what a trial trains."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from hyperflow.components.adapters._base import FitJob, Fitted, ModelAdapter
from hyperflow.components.trial import TrialFailed, TrialPruned

if TYPE_CHECKING:
    from hyperflow.components.data import Dataset
    from hyperflow.components.trial import TrialGuard, TrialSpec

__all__ = ["FunctionAdapter", "Reporter"]


class Reporter:
    """The `report(epoch, value, **metrics)` a training function receives.

    Each call logs the search metric (and any further metrics) at step = epoch and asks the
    study's early-stopping rule; when the rule stops the trial it raises `TrialPruned`, which the
    function lets propagate (or catches to clean up, then returns). Epochs count from 0.

    Attributes:
        seed: the trial's seed (torch's generator is already seeded with it).
        curve: the values reported so far.
    """

    def __init__(self, guard: TrialGuard, *, seed: int) -> None:
        self._guard = guard
        self.metric = guard.metric
        self.seed = seed

    @property
    def curve(self) -> list[float]:
        return self._guard.curve

    def check(self) -> None:
        """Raise when the trial must end now: a stop request, the trial's or the study's time budget."""
        self._guard.check()

    def __call__(self, epoch: int, value: float, **metrics: float) -> None:
        self._guard.check()
        logged = {self.metric: float(value), **{k: float(v) for k, v in metrics.items()}}
        decision = self._guard.epoch_end(int(epoch), logged)
        if decision is not None:
            raise self._guard.stop(TrialPruned(decision.reason))


class FunctionAdapter(ModelAdapter):
    """`model.module` naming a function (or the Python API's `objective`): it trains itself.

    `params` holds the sampled values, `model.args` and `max_epochs` (the epoch the early-stopping
    rule extrapolates to). The trial's value is what the function returns, else the last value
    reported; it may also return `(value, model)` to have the model's weights logged with the trial.
    There is no model to test or register.
    """

    needs_dataset = False
    exports_model = False
    checks_divergence = False

    def __init__(self, spec: TrialSpec) -> None:
        super().__init__(spec)
        assert spec.user is not None and spec.user.objective is not None, "a training function's TrialSpec"
        self.objective = spec.user.objective
        self.model_args = spec.user.model_args

    def build(self, data: Dataset | None, params: Mapping[str, Any]) -> None:
        return None  # the function builds its own model, if it has one

    def fit(self, job: FitJob) -> Fitted:
        guard, params = job.guard, job.params
        values = self.spec.resolve(params)
        given = {
            **{k: values[k] for k in self.model_args},
            "max_epochs": self.spec.max_epochs(params),
            **params,
        }
        returned = self.objective(given, Reporter(guard, seed=job.seed))
        model = None
        if isinstance(returned, tuple) and len(returned) == 2 and isinstance(returned[1], torch.nn.Module):
            returned, model = returned
        if guard.stopped is not None:  # the function caught the guard's exception and returned
            return Fitted(model)
        return Fitted(model, self._value(returned, guard))

    def _value(self, returned: Any, guard: TrialGuard) -> float:
        """A function that returned normally: its value (or the last reported) completes the trial."""
        if returned is None:
            if not guard.curve:
                raise TrialFailed("the training function returned nothing and reported nothing")
            return guard.curve[-1]
        try:
            value = float(returned)
        except (TypeError, ValueError):
            if isinstance(returned, tuple) and len(returned) == 2:
                raise TrialFailed(
                    f"the training function returned (value, {type(returned[1]).__name__}): the second "
                    "element must be a torch model (a torch.nn.Module), whose weights are logged with the trial"
                ) from None
            raise TrialFailed(
                f"the training function returned {type(returned).__name__}, not a number "
                "(return a number, None, or (value, model) with a torch module)"
            ) from None
        if not math.isfinite(value):
            raise TrialFailed(f"the training function returned {value}")
        if not guard.curve or value != guard.curve[-1]:
            # The returned value is the trial's: logged last, one step after the last report (a
            # second value at the same step would leave MLflow's latest one to the timestamps).
            step = guard.last_epoch + 1 if guard.last_epoch is not None else 0
            if guard.on_epoch is not None:
                guard.on_epoch(step, {guard.metric: value})
            if not guard.curve:
                guard.curve.append(value)
                guard.history = {guard.metric: [value]}
        return value
