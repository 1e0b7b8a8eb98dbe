"""The best model: test-split evaluation, export as pt2, registration and the `champion` alias."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hyperflow.components.faults import fault_point
from hyperflow.components.model import MLPModule, ScoringModel
from hyperflow.components.training import TrialSpec, build_module

if TYPE_CHECKING:
    import lightning.pytorch as pl
    from mlflow.tracking import MlflowClient

    from hyperflow.components.data import Dataset

__all__ = [
    "CHAMPION",
    "Registration",
    "evaluate_on_test",
    "export_best_model",
    "load_state_dict_artifact",
    "log_scoring_model",
    "register_best_model",
    "test_metric_name",
]

CHAMPION = "champion"
TAG_TEST_METRIC = "hyperflow.test_metric"
TAG_TEST_VALUE = "hyperflow.test_value"
TAG_STUDY_RUN = "hyperflow.study_run_id"

# The model's own requirements, so that logging skips MLflow's slow requirement inference.
PIP_REQUIREMENTS = [f"torch=={torch.__version__.split('+')[0]}", "numpy"]


def test_metric_name(metric: str) -> str:
    """The test-split counterpart of the search metric: val_accuracy -> test_accuracy."""
    return "test_" + metric.removeprefix("val_")


def rebuild(
    data: Dataset | None, params: Mapping[str, Any], spec: TrialSpec, state_dict: Mapping[str, Any]
) -> pl.LightningModule:
    """The trained module from its parameters and its stored weights, in eval mode."""
    module = build_module(data, params, spec)
    module.load_state_dict(dict(state_dict))
    return module.eval()


def evaluate_on_test(
    module: pl.LightningModule,
    data: Dataset | None,
    *,
    spec: TrialSpec | None = None,
    params: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """test_loss and test_accuracy (classification) or test_rmse (regression, original units).

    A user's module (`spec` and `params` given) reports what it logs on the test split.
    """
    if not isinstance(module, MLPModule):
        from hyperflow.components.usermodule import evaluate_user_module

        assert spec is not None, "a user's module is evaluated with its TrialSpec"
        return evaluate_user_module(module, data, spec, params or {})
    assert data is not None
    target_dtype = torch.long if data.task == "classification" else torch.float32
    x = torch.as_tensor(np.ascontiguousarray(data.X_test), dtype=torch.float32)
    y = torch.as_tensor(np.ascontiguousarray(data.y_test), dtype=target_dtype)
    module.eval()
    with torch.no_grad():
        metrics = module.validation_metrics(x, y)
    return {test_metric_name(k): float(v) for k, v in metrics.items()}


def export_best_model(
    module: pl.LightningModule,
    data: Dataset | None,
    client: MlflowClient,
    run_id: str,
    *,
    spec: TrialSpec | None = None,
    params: Mapping[str, Any] | None = None,
) -> str:
    """Log the best model as `best_model/` of the study run: pt2 (no pickle), eval mode, raw features in.

    A user's module (`spec` and `params` given) takes what its `forward` takes.
    Returns the artifact URI of `best_model`.
    """
    if not isinstance(module, MLPModule):
        from hyperflow.components.usermodule import export_user_module

        assert spec is not None, "a user's module is exported with its TrialSpec"
        return export_user_module(module, data, client, run_id, spec, params or {})
    assert data is not None
    return log_scoring_model(scoring_model(module.model, data), raw_example(data), client, run_id)


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
    """A few raw test rows: an example batch of > 1 rows keeps the exported batch dimension dynamic."""
    return data.raw_features(data.X_test[:5]).astype(np.float32)


def log_scoring_model(model: torch.nn.Module, example: np.ndarray, client: MlflowClient, run_id: str) -> str:
    """Save `model` (eval mode) as a pt2 MLflow model with a signature and log it as `best_model/`."""
    import mlflow.pytorch
    from mlflow.models import infer_signature

    model = model.eval()
    with torch.no_grad():
        output = model(torch.as_tensor(example)).numpy()
    signature = infer_signature(example, output)
    with tempfile.TemporaryDirectory(prefix="hyperflow-model-") as tmp:
        path = Path(tmp) / "best_model"
        mlflow.pytorch.save_model(
            model,
            str(path),
            serialization_format="pt2",
            signature=signature,
            input_example=example,
            pip_requirements=PIP_REQUIREMENTS,
        )
        fault_point("model-export")
        client.log_artifacts(run_id, str(path), "best_model")
    return f"runs:/{run_id}/best_model"


@dataclass(frozen=True)
class Registration:
    """What registering the best model did."""

    name: str
    version: str
    promoted: bool
    previous_champion: str | None
    reason: str

    @property
    def champion_uri(self) -> str:
        return f"models:/{self.name}@{CHAMPION}"


def register_best_model(
    client: MlflowClient,
    *,
    name: str,
    model_uri: str,
    run_id: str,
    test_metric: str,
    test_value: float,
    mode: str,
    promote: str,
) -> Registration:
    """Register a version and move `champion` to it if it beats the champion's test value (or always)."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="Best models of hyperflow studies")
    source = client.get_run(run_id).info.artifact_uri.rstrip("/") + "/best_model"
    version = client.create_model_version(
        name,
        source=source,
        run_id=run_id,
        tags={TAG_TEST_METRIC: test_metric, TAG_TEST_VALUE: repr(float(test_value)), TAG_STUDY_RUN: run_id},
        description=f"{test_metric} = {test_value:.6g} on the held-out test split",
    )
    previous: str | None = None
    champion_value: float | None = None
    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
        previous = str(current.version)
        if current.tags.get(TAG_TEST_METRIC) == test_metric:
            champion_value = float(current.tags[TAG_TEST_VALUE])
    except (MlflowException, KeyError, ValueError):
        pass
    if promote == "always":
        promoted, reason = True, "tracking.promote is 'always'"
    elif previous is None:
        promoted, reason = True, "no champion yet"
    elif champion_value is None:
        promoted, reason = True, f"the champion (version {previous}) records no {test_metric}"
    else:
        better = test_value > champion_value if mode == "max" else test_value < champion_value
        promoted = better
        verb = "beats" if better else "does not beat"
        reason = (
            f"{test_metric} {test_value:.6g} {verb} the champion's {champion_value:.6g} (version {previous})"
        )
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, str(version.version))
    return Registration(name, str(version.version), promoted, previous, reason)


def load_state_dict_artifact(client: MlflowClient, run_id: str) -> dict[str, torch.Tensor]:
    """A trial's stored final weights (`weights/state_dict.pt`), read without unpickling code."""
    with tempfile.TemporaryDirectory(prefix="hyperflow-weights-") as tmp:
        path = client.download_artifacts(run_id, "weights/state_dict.pt", tmp)
        state: dict[str, torch.Tensor] = torch.load(path, weights_only=True)
    return state
