"""The best model in MLflow: logged (pyfunc over a pt2 network), registered, `champion` moved; weights read back."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hyperflow.components.faults import fault_point
from hyperflow.components.names import CHAMPION, TAG_STUDY_RUN, TAG_TEST_METRIC, TAG_TEST_VALUE, champion_uri
from hyperflow.components.scratch import scratch_dir

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.tracking import MlflowClient

__all__ = [
    "Registration",
    "load_state_dict_artifact",
    "log_best_model",
    "register_best_model",
]

# The model's own requirements, so that logging skips MLflow's slow requirement inference.
PIP_REQUIREMENTS = [f"torch=={torch.__version__.split('+')[0]}", "numpy"]

# The served model's code (models-from-code): copied into best_model/ and run by mlflow.pyfunc.
SERVED_MODEL_CODE = Path(__file__).with_name("served_model.py")


def log_best_model(
    model: torch.nn.Module,
    example: np.ndarray,
    client: MlflowClient,
    run_id: str,
    *,
    preparation: dict[str, Any] | None = None,
    raw_example: pd.DataFrame | np.ndarray | None = None,
) -> str:
    """Log `model` (eval mode) as `best_model/`; returns its artifact URI.

    `model` and `example` are what the study's adapter exports (`ModelAdapter.export`): the
    network and a few of its input rows. With the data set's `preparation` (its JSON spec) and
    `raw_example` (a few raw rows), `best_model/` is a pyfunc (`served_model.py`) that prepares raw
    rows and runs the network, with the network also readable by `mlflow.pytorch.load_model`;
    without them (a user's DataModule) it is the pt2 network alone.
    """
    model = model.eval()
    with scratch_dir("model") as tmp:
        path = Path(tmp) / "best_model"
        if preparation is None or raw_example is None:
            _save_network_model(model, example, path)
        else:
            save_served_model(model, example, preparation, raw_example, path)
        fault_point("model-export")
        client.log_artifacts(run_id, str(path), "best_model")
    return f"runs:/{run_id}/best_model"


def _save_network_model(model: torch.nn.Module, example: np.ndarray, path: Path) -> None:
    """The network alone as an MLflow pytorch model in the pt2 format (tensor signature)."""
    import mlflow.pytorch
    from mlflow.models import infer_signature

    with torch.no_grad():
        output = model(torch.as_tensor(example)).numpy()
    mlflow.pytorch.save_model(
        model,
        str(path),
        serialization_format="pt2",
        signature=infer_signature(example, output),
        input_example=example,
        pip_requirements=PIP_REQUIREMENTS,
    )


def export_network(model: torch.nn.Module, example: np.ndarray, folder: Path) -> Path:
    """torch.export `model` with a dynamic batch dimension into `folder/model.pt2` (no pickle)."""
    from torch.export import Dim

    folder.mkdir(parents=True, exist_ok=True)
    x = torch.as_tensor(example)
    # More than one example row and Dim.AUTO keep the batch dimension dynamic (any batch size).
    program = torch.export.export(model, (x,), dynamic_shapes=({0: Dim.AUTO},))
    target = folder / "model.pt2"
    torch.export.save(program, str(target))
    return target


def save_served_model(
    model: torch.nn.Module,
    example: np.ndarray,
    preparation: dict[str, Any],
    raw_example: pd.DataFrame | np.ndarray,
    path: Path,
) -> None:
    """Save the pyfunc `best_model`: `served_model.py`, `preparation.json`, the pt2 network.

    The MLmodel also carries the `pytorch` flavor pointing at the network, so that
    `mlflow.pytorch.load_model` gives torch users the network alone (prepared rows in).
    """
    import mlflow
    import mlflow.pyfunc
    from mlflow.models import Model

    with scratch_dir("served") as tmp:
        network = Path(tmp) / "network"
        export_network(model, example, network)
        spec_path = Path(tmp) / "preparation.json"
        spec_path.write_text(json.dumps(preparation, indent=1))
        mlflow.pyfunc.save_model(
            str(path),
            python_model=str(SERVED_MODEL_CODE),
            artifacts={"network": str(network), "preparation": str(spec_path)},
            signature=served_signature(preparation),
            input_example=raw_example,
            pip_requirements=[*PIP_REQUIREMENTS, "pandas", f"mlflow=={mlflow.__version__}"],
        )
    meta = Model.load(str(path / "MLmodel"))
    meta.add_flavor(
        "pytorch",
        model_data="artifacts/network",
        pytorch_version=str(torch.__version__),
        code=None,
    )
    meta.save(str(path / "MLmodel"))


def served_signature(preparation: dict[str, Any]) -> ModelSignature:
    """Outputs only: `label` and `probability_<class>`, or `value`; the inputs are checked by the model.

    No input schema: MLflow 3.17 enforces a column's declared type in-process, where no type takes
    both int64 and float64 (`double` refuses int64, `long` floats, `AnyType` breaks the scoring
    server's CSV parsing); `served_model.encode_rows` checks width, columns and numbers itself.
    """
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    if preparation["task"] == "regression":
        outputs = Schema([ColSpec("double", "value")])
    else:
        target = preparation["target"]
        label_type = {"bool": "boolean", "int64": "long"}.get(target["label_dtype"], "string")
        specs: list[ColSpec | TensorSpec] = [ColSpec(label_type, "label")]
        specs += [ColSpec("double", f"probability_{name}") for name in target["classes"]]
        outputs = Schema(specs)
    return ModelSignature(outputs=outputs)


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
    with scratch_dir("weights") as tmp:
        path = client.download_artifacts(run_id, "weights/state_dict.pt", tmp)
        state: dict[str, torch.Tensor] = torch.load(path, weights_only=True)
    return state
