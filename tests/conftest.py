"""Shared fixtures: the environment every test runs in, small real data, a shrunken config."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import hyperflow  # noqa: F401 - its import sets the runtime defaults: nothing reaches the network

# One Prefect server and one MLflow server per test session, also under pytest-xdist (`make test`
# runs two workers): the first worker that needs a server starts it under a file lock and writes
# where it is into SHARED; the others read that; the controller process (the one that made SHARED,
# after every worker has ended) stops each server by its PID in `pytest_unconfigure`.
_OWNER = "HYPERFLOW_TEST_SHARED" not in os.environ
if _OWNER:
    os.environ["HYPERFLOW_TEST_SHARED"] = tempfile.mkdtemp(prefix="hyperflow-tests-shared-")
SHARED = Path(os.environ["HYPERFLOW_TEST_SHARED"])

# No test may write into the user's home, and a user's own servers (MLFLOW_TRACKING_URI,
# PREFECT_API_URL) are never the tests' stores. Each process its own Prefect home, inside SHARED:
# xdist's workers leave without running atexit, and the controller removes SHARED at the end.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="prefect-home-", dir=SHARED)
atexit.register(shutil.rmtree, os.environ["PREFECT_HOME"], ignore_errors=True)
for _var in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "PREFECT_PROFILE"):
    os.environ.pop(_var, None)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))

from servers import Server, start_mlflow_server, start_prefect_server, stop_pid  # noqa: E402


def _shared_server(name: str, start: Callable[[Path], Server]) -> Server:
    from filelock import FileLock

    record = SHARED / f"{name}.json"
    with FileLock(str(SHARED / f"{name}.lock")):
        if record.exists():
            known = json.loads(record.read_text())
            return Server(known["url"], None, Path(known["home"]), known["pid"])
        server = start(SHARED / name)
        record.write_text(json.dumps({"url": server.url, "home": str(server.home), "pid": server.pid}))
        return server


def pytest_unconfigure(config: pytest.Config) -> None:
    if not _OWNER or hasattr(config, "workerinput"):
        return
    for record in SHARED.glob("*.json"):
        stop_pid(json.loads(record.read_text())["pid"])
    shutil.rmtree(SHARED, ignore_errors=True)


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[Server]:
    """One Prefect server for the whole session; in-process flows and subprocesses both use it."""
    server = _shared_server("prefect-server", start_prefect_server)
    os.environ["PREFECT_API_URL"] = server.url
    from prefect.settings import PREFECT_API_URL, temporary_settings

    try:
        with temporary_settings(updates={PREFECT_API_URL: server.url}):
            yield server
    finally:
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=5)  # before the server goes, so no log is left to send to it
        os.environ.pop("PREFECT_API_URL", None)


@pytest.fixture(scope="session")
def mlflow_server() -> Iterator[Server]:
    """One MLflow tracking server (SQLite backend, served artifacts) for the session."""
    yield _shared_server("mlflow-server", start_mlflow_server)


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


def config_file(folder: Path, **sections: Any) -> tuple[Any, Path]:
    """`small_config` written to `folder/config.yaml`, as a command reads it: the config and the file."""
    import yaml

    cfg = small_config(folder, **sections)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return cfg, path


def make_study(cfg: Any, history: list[Any] | None = None, next_number: int = 0) -> Any:
    """A study on a bare study run (what `open_study` adds to it, its records, is not needed in
    tests); `history` enters its ledger as resume's does, and trial numbers go on from `next_number`."""
    from hyperflow.components.curves import make_stop_rule
    from hyperflow.components.search import make_strategy
    from hyperflow.components.study import Study
    from hyperflow.components.tracking import StudyTracker
    from hyperflow.components.trial import TrialSpec

    tracker = StudyTracker(cfg.tracking.uri)
    experiment_id = tracker.experiment_id(cfg.name)
    return Study(
        cfg,
        strategy=make_strategy(cfg),
        stop_rule=make_stop_rule(cfg) if cfg.early_stopping.kind != "none" else None,
        tracker=tracker,
        experiment_id=experiment_id,
        study_run_id=tracker.client.create_run(experiment_id).info.run_id,
        spec=TrialSpec.from_config(cfg),
        next_number=next_number,
        history=history or [],
    )


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


@pytest.fixture(autouse=True)
def _mlflow_global_uris_reset() -> Iterator[None]:
    """A test that points mlflow's global tracking/registry URI at its store (to load a champion)
    leaves it for the next test in the process: an MlflowClient made there without a registry_uri
    would look for models in the wrong store (and subprocesses inherit the environment variables
    mlflow sets with them). Reset after each test, as the session started: neither set."""
    yield
    if "mlflow" in sys.modules:
        import mlflow

        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
        mlflow.set_registry_uri(None)  # type: ignore[arg-type]
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        os.environ.pop(var, None)
