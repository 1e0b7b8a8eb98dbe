"""Shared fixtures: the environment every test runs in, small real data, a shrunken config."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Nothing may reach the network, and no test may write into the user's home.
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def digits():  # type: ignore[no-untyped-def]
    from components.config import DataConfig
    from components.data import load_dataset

    return load_dataset(DataConfig(source="digits"), seed=0)


@pytest.fixture(scope="session")
def diabetes():  # type: ignore[no-untyped-def]
    from components.config import DataConfig
    from components.data import load_dataset

    return load_dataset(DataConfig(source="diabetes"), seed=0)


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Run in a fresh working directory (mlflow.db and mlruns/ land there)."""
    monkeypatch.chdir(tmp_path)
    yield tmp_path
