"""Model adapters: one interface (build, fit, evaluate, export) over what a trial trains.

The built-in MLP (`MLPAdapter`), a user's LightningModule and DataModule (`LightningAdapter`) and a
plain training function (`FunctionAdapter`). `adapter_for` is the one place that tells them apart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hyperflow.components.adapters._base import FitJob, Fitted, ModelAdapter, raw_example, scoring_model
from hyperflow.components.adapters.function import FunctionAdapter, Reporter
from hyperflow.components.adapters.lightning import LightningAdapter
from hyperflow.components.adapters.mlp import MLPAdapter
from hyperflow.components.trial import TrialSpec

if TYPE_CHECKING:
    from hyperflow.components.config import ExperimentConfig

__all__ = [
    "FitJob",
    "Fitted",
    "FunctionAdapter",
    "LightningAdapter",
    "MLPAdapter",
    "ModelAdapter",
    "Reporter",
    "adapter_for",
    "config_adapter",
    "raw_example",
    "scoring_model",
]


def adapter_for(spec: TrialSpec) -> ModelAdapter:
    """The adapter of a study's TrialSpec: the built-in MLP unless the config names user code."""
    if spec.user is None:
        return MLPAdapter(spec)
    if spec.user.objective is not None:
        return FunctionAdapter(spec)
    return LightningAdapter(spec)


def config_adapter(cfg: ExperimentConfig, num_threads: int | None = None) -> ModelAdapter:
    """The adapter of a config (its user code is imported: check it first with `check_user_code`)."""
    return adapter_for(TrialSpec.from_config(cfg, num_threads=num_threads))
