"""Issue 15's hardening: every field of the schema refuses wrong types and non-finite values by path,
names follow MLflow's rules, no credential is stored, and the faults end cleanly."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import types
import typing
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import pytest
import yaml
from conftest import ROOT
from mlflow.tracking import MlflowClient
from pydantic import BaseModel

from hyperflow.components.config import ConfigError, ExperimentConfig, RangeSpec, load_config, validate_config
from hyperflow.components.config_checks import mlflow_name_problem
from hyperflow.components.names import FAILED
from hyperflow.components.training import train_trial
from hyperflow.components.trial import TrialSpec

HYPERFLOW = str(Path(sys.executable).parent / "hyperflow")
CNN_PARAMS = {"learning_rate": 3e-3, "channels": 8, "dropout": 0.1, "weight_decay": 1e-4, "batch_size": 64}


def _scalar_type(annotation: Any) -> type | None:
    """int, float or bool for a (possibly optional) scalar field, else None."""
    options = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (Union, types.UnionType) and len(options) == 1:
        annotation = options[0]
    if get_origin(annotation) is typing.Annotated:
        annotation = get_args(annotation)[0]
    return annotation if annotation in (int, float, bool) else None


def _scalar_fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, type]]:
    """Every int, bool and float field below `model`, by dotted path (sections recursed into)."""
    out: list[tuple[str, type]] = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out += _scalar_fields(annotation, f"{path}.")
        elif (kind := _scalar_type(annotation)) is not None:
            out.append((path, kind))
    return out


SCALARS = _scalar_fields(ExperimentConfig)
# A searched range's bounds and flag, by their own dotted path.
SCALARS += [(f"search.space.learning_rate.{name}", kind) for name, kind in _scalar_fields(RangeSpec)]


def _nested(path: str, value: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    node = raw
    *parents, leaf = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    if path.startswith("search.space.learning_rate."):
        node.setdefault("low", 0.01)
        node.setdefault("high", 0.1)
    return raw


def _wrong_values(kind: type) -> list[Any]:
    if kind is bool:
        return [1, "true", "yes"]
    if kind is int:
        return [True, "3", 2.5]
    return [True, "0.5", math.inf, -math.inf, math.nan]


CASES = [(path, bad) for path, kind in SCALARS for bad in _wrong_values(kind)]


def test_the_walk_covers_the_schema() -> None:
    paths = {p for p, _ in SCALARS}
    # the fields of the issue, and one of every section, are among the walked ones
    for path in (
        "search.n_trials",
        "model.l2",
        "model.batch_norm",
        "search.genetic.crossover_rate",
        "early_stopping.threshold",
        "tracking.register_model",
        "data.val_fraction",
        "search.timeout_minutes",
        "model.depth",
        "seed",
    ):
        assert path in paths
    assert len(SCALARS) >= 40


@pytest.mark.parametrize(("path", "bad"), CASES, ids=[f"{p}={b!r}" for p, b in CASES])
def test_every_scalar_field_refuses_a_wrong_type_or_a_non_finite_value(path: str, bad: Any) -> None:
    with pytest.raises(ConfigError) as info:
        validate_config(_nested(path, bad))
    assert path in [p for p, _ in info.value.problems], info.value


NAMES = ["digits", "team digits", "digits-v2.1", "a/b", "a:b", "..", ".", "x" * 501, " ", "ünïcode", "a\\b"]


@pytest.mark.parametrize("name", NAMES)
def test_name_rules_are_mlflows(name: str) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_experiment_name, _validate_model_name

    try:
        _validate_experiment_name(name)
        _validate_model_name(name)
        mlflow_accepts = True
    except MlflowException:
        mlflow_accepts = False
    assert (mlflow_name_problem(name) is None) == mlflow_accepts
    if not mlflow_accepts:
        with pytest.raises(ConfigError, match="name: "):
            validate_config({"name": name})


# --------------------------------------------------------------------------------------------
# A DataModule whose dataloaders yield nothing (issue 15, item 7)

EMPTY_DATA = """
import torch
from torch.utils.data import DataLoader, TensorDataset

from examples.digits_cnn.data import DigitsDataModule


def _empty():
    return DataLoader(TensorDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long)))


class EmptyDigits(DigitsDataModule):
    def train_dataloader(self):
        return _empty()

    def val_dataloader(self):
        return _empty()
"""


def empty_data_project(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "emptydata.py").write_text(EMPTY_DATA)
    config = tmp_path / "config.yaml"
    raw = yaml.safe_load((ROOT / "examples" / "digits_cnn" / "config.yaml").read_text())
    raw["data"]["module"] = "emptydata:EmptyDigits"
    raw["model"]["max_epochs"] = 2
    raw["search"].update(strategy="random", n_trials=2)
    raw["early_stopping"] = {"kind": "none"}
    raw["tracking"] = {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    config.write_text(yaml.safe_dump(raw))
    return config


def test_a_trial_whose_dataloaders_yield_nothing_fails_saying_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = empty_data_project(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    cfg = load_config(config)
    result = train_trial(None, CNN_PARAMS, TrialSpec.from_config(cfg, num_threads=1), seed=0)
    assert result.state == FAILED
    assert result.epochs_trained == 0 and result.value is None
    assert result.error is not None and "no epoch reported val_accuracy" in result.error
    assert "dataloader" in result.error


@pytest.mark.slow
def test_cli_run_on_empty_dataloaders_fails_every_trial_and_lists_the_error(
    prefect_server: Any, tmp_path: Path
) -> None:
    config = empty_data_project(tmp_path)
    proc = subprocess.run(
        [HYPERFLOW, "run", str(config)],
        cwd=tmp_path,
        env={**os.environ, "PREFECT_API_URL": prefect_server.url},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout.count("no epoch reported val_accuracy") == 2, proc.stdout
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    (exp,) = [e for e in client.search_experiments() if e.name == "digits-cnn"]
    trials = client.search_runs([exp.experiment_id], "tags.`hyperflow.role` = 'trial'")
    assert len(trials) == 2
    for run in trials:
        assert run.data.tags["hyperflow.state"] == "failed"
        assert run.info.status == "FAILED"
        assert "no epoch reported" in run.data.tags["hyperflow.error"]
