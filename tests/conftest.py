"""Shared fixtures: the environment every test runs in, small real data, a shrunken config."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import hyperflow  # noqa: F401 - its import sets the runtime defaults: nothing reaches the network

# No test may write into the user's home, and a user's own servers (MLFLOW_TRACKING_URI,
# PREFECT_API_URL) are never the tests' stores.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="hyperflow-tests-prefect-home-")
atexit.register(shutil.rmtree, os.environ["PREFECT_HOME"], ignore_errors=True)
for _var in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "PREFECT_PROFILE"):
    os.environ.pop(_var, None)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))

from servers import Server, start_mlflow_server, start_prefect_server, stop  # noqa: E402


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One Prefect server for the whole session; in-process flows and subprocesses both use it."""
    server = start_prefect_server(tmp_path_factory.mktemp("prefect-home"))
    os.environ["PREFECT_API_URL"] = server.url
    from prefect.settings import PREFECT_API_URL, temporary_settings

    try:
        with temporary_settings(updates={PREFECT_API_URL: server.url}):
            yield server
    finally:
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=5)  # before the server goes, so no log is left to send to it
        os.environ.pop("PREFECT_API_URL", None)
        stop(server.proc)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One MLflow tracking server (SQLite backend, served artifacts) for the session."""
    server = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    try:
        yield server
    finally:
        stop(server.proc)


@pytest.fixture(scope="session")
def sqlite_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One real MLflow store (SQLite) for the unit tests that need one: creating a store costs seconds.

    Tests that share it keep apart by their own experiment and model names.
    """
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow-store') / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments(max_results=1)  # creates the tables
    return uri


def small_config(tmp_path: Path, **sections: Any) -> Any:
    """A shrunken digits config (few trials, short epochs, small nets) writing under tmp_path."""
    from hyperflow.components.config import validate_config

    raw: dict[str, Any] = {
        "name": f"test-{tmp_path.name}",
        "seed": 0,
        "data": {"source": "digits"},
        "model": {"hidden_layers": [32], "max_epochs": 4, "batch_size": 64},
        "search": {
            "strategy": "random",
            "n_trials": 3,
            "space": {"learning_rate": {"low": 0.01, "high": 0.3, "log": True}},
        },
        "early_stopping": {"kind": "none"},
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return validate_config(raw)


@pytest.fixture(scope="session")
def digits():  # type: ignore[no-untyped-def]
    from hyperflow.components.config import DataConfig
    from hyperflow.components.data import load_dataset

    return load_dataset(DataConfig(source="digits"), seed=0)


@pytest.fixture(scope="session")
def diabetes():  # type: ignore[no-untyped-def]
    from hyperflow.components.config import DataConfig
    from hyperflow.components.data import load_dataset

    return load_dataset(DataConfig(source="diabetes"), seed=0)


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Run in a fresh working directory (mlflow.db and mlruns/ land there)."""
    monkeypatch.chdir(tmp_path)
    yield tmp_path
