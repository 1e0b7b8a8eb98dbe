"""The best model in MLflow: logged as pt2, registered, the `champion` alias moved; its stored weights read back."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from hyperflow.components.faults import fault_point
from hyperflow.components.names import CHAMPION, TAG_STUDY_RUN, TAG_TEST_METRIC, TAG_TEST_VALUE, champion_uri

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

__all__ = [
    "Registration",
    "load_state_dict_artifact",
    "log_best_model",
    "register_best_model",
]

# The model's own requirements, so that logging skips MLflow's slow requirement inference.
PIP_REQUIREMENTS = [f"torch=={torch.__version__.split('+')[0]}", "numpy"]


def log_best_model(model: torch.nn.Module, example: np.ndarray, client: MlflowClient, run_id: str) -> str:
    """Save `model` (eval mode) as a pt2 MLflow model with a signature and log it as `best_model/`.

    `model` and `example` are what the study's adapter exports (`ModelAdapter.export`).
    Returns the artifact URI of `best_model`.
    """
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
        return champion_uri(self.name)


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
