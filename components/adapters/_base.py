"""The one interface over what a trial trains: build, fit, evaluate, export."""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hyperflow.components.model import ScoringModel

if TYPE_CHECKING:
    from lightning.pytorch.callbacks import Callback

    from hyperflow.components.curves import StopPolicy
    from hyperflow.components.data import Dataset
    from hyperflow.components.trial import TrialGuard, TrialSpec

__all__ = ["FitJob", "Fitted", "ModelAdapter", "raw_example", "scoring_model"]


class ModelAdapter(abc.ABC):
    """What a study trains, behind one interface: the built-in MLP, a user's LightningModule, a function.

    Training (`train_trial`), the study and the registry read the adapter and nothing else about
    the model: `build` the untrained module for a parameter set, `fit` it under the trial's guard,
    `evaluate` the trained module on the test split, `export` it as the model to log (and an
    example input). An adapter is made from the study's TrialSpec (`adapter_for`) wherever a trial
    runs; it keeps no state of its own beyond the spec.

    Attributes:
        needs_dataset: whether the study loads the built-in data set or file (`prepare-data`).
        exports_model: whether the best trial becomes the study's `best_model`.
        checks_divergence: whether a training loss far above its first epoch's fails the trial.
    """

    needs_dataset: bool = True
    exports_model: bool = True
    checks_divergence: bool = True

    def __init__(self, spec: TrialSpec) -> None:
        self.spec = spec

    @abc.abstractmethod
    def build(self, data: Dataset | None, params: Mapping[str, Any]) -> torch.nn.Module | None:
        """The untrained module for a parameter set (None where training makes its own, a function)."""

    def stop_policy(self, policy: StopPolicy, params: Mapping[str, Any]) -> StopPolicy:
        """The study's early-stopping rule as it judges this trial (by default, as it is)."""
        return policy

    @abc.abstractmethod
    def fit(self, job: FitJob) -> Fitted:
        """Train `job.module` for `job.params`, reporting every epoch to `job.guard`; it ends on the CPU.

        Raises whatever the guard raises (the trial's end) or the training's own error.
        """

    def evaluate(
        self, module: torch.nn.Module, data: Dataset | None, params: Mapping[str, Any]
    ) -> dict[str, float]:
        """The trained module's metrics on the held-out test split (`test_<name>`)."""
        raise NotImplementedError(f"{type(self).__name__} has no model to evaluate")

    def export(
        self, module: torch.nn.Module, data: Dataset | None, params: Mapping[str, Any]
    ) -> tuple[torch.nn.Module, np.ndarray]:
        """The model to log as `best_model` (eval mode) and an example input of a few rows."""
        raise NotImplementedError(f"{type(self).__name__} has no model to export")

    def rebuild(
        self, data: Dataset | None, params: Mapping[str, Any], state_dict: Mapping[str, Any]
    ) -> torch.nn.Module:
        """The trained module from its parameters and its stored weights, in eval mode."""
        module = self.build(data, params)
        if module is None:
            raise NotImplementedError(f"{type(self).__name__} has no module to rebuild")
        module.load_state_dict(dict(state_dict))
        return module.eval()


@dataclass(frozen=True)
class FitJob:
    """What `fit` trains: the built module (None for a function), the data, the trial's values.

    Attributes:
        module: what `build` returned.
        data: the prepared data set (None for a user's DataModule or a training function).
        params: the trial's hyperparameters.
        guard: the trial's checks; every epoch's metrics go to `guard.epoch_end`.
        seed: the trial's seed (the batches' shuffling; torch is already seeded with it).
        callbacks: further Lightning callbacks.
    """

    module: torch.nn.Module | None
    data: Dataset | None
    params: Mapping[str, Any]
    guard: TrialGuard
    seed: int
    callbacks: Sequence[Callback] = ()


@dataclass(frozen=True)
class Fitted:
    """What `fit` hands back.

    Attributes:
        module: the trained module whose weights are the trial's (None: nothing to keep).
        value: the trial's value when training gives one of its own (a function's return value);
            None: the search metric at the last epoch.
    """

    module: torch.nn.Module | None
    value: float | None = None


def scoring_model(net: torch.nn.Module, data: Dataset) -> ScoringModel:
    """`net` with the data set's standardisation (and target scaling) built in: raw rows in, eval mode."""
    return ScoringModel(
        net,
        torch.as_tensor(data.feature_mean),
        torch.as_tensor(data.feature_std),
        data.task,
        target_mean=data.target_mean,
        target_std=data.target_std,
    ).eval()


def raw_example(data: Dataset) -> np.ndarray:
    """A few raw test rows, float64 (the network's input): an example batch of more than one row keeps
    the exported batch dimension dynamic, so a test split of one row gives that row twice."""
    rows = data.X_test[:5]
    if len(rows) < 2:
        rows = np.repeat(data.X_test[:1], 2, axis=0)
    return data.raw_features(rows)
