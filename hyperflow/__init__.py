"""hyperflow: hyperparameter search for neural networks as a Prefect flow recorded in MLflow.

`from hyperflow import search` is the Python API (see `hyperflow.api`). The package holds the
plain components (`hyperflow.components`, no Prefect) and the Prefect wiring (`hyperflow.flows`);
importing it sets the runtime defaults below and nothing else, so `import hyperflow.components.x`
stays as cheap as that module.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

# Set before Prefect or MLflow is imported; a value the user set wins. Nothing may reach the
# network at run time, and Prefect's ephemeral server needs ~19 s to migrate a fresh database
# (its default timeout is 20 s).
RUNTIME_DEFAULTS = {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_UI_ENABLED": "false",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    # MLflow's async-logging thread otherwise blocks in queue.get(timeout=1): every set_terminated
    # after an asynchronous write waited up to 1 s for it (bench/overhead.py: ~0.7 s a trial).
    # With buffering it waits on its stop event instead, so ending a run returns at once.
    "MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS": "1",
    # set_terminated on a server fetched the run again only to print its URL, once per trial.
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}
for _key, _value in RUNTIME_DEFAULTS.items():
    os.environ.setdefault(_key, _value)

if TYPE_CHECKING:
    from hyperflow.api import (
        ConfigError,
        ExperimentConfig,
        PreflightError,
        Reporter,
        ResumeError,
        StudyResult,
        TrialPruned,
        UserCodeError,
        search,
    )

__all__ = [
    "RUNTIME_DEFAULTS",
    "ConfigError",
    "ExperimentConfig",
    "PreflightError",
    "Reporter",
    "ResumeError",
    "StudyResult",
    "TrialPruned",
    "UserCodeError",
    "search",
]


def __getattr__(name: str) -> Any:
    # The API pulls in torch, MLflow and Prefect: loaded on first use, not on `import hyperflow`.
    if name in __all__:
        from hyperflow import api

        return getattr(api, name)
    raise AttributeError(f"module 'hyperflow' has no attribute {name!r}")
