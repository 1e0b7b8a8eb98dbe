"""Prefect wiring of hyperflow: the search flow, the command line, deployments."""

from __future__ import annotations

import os

# Defaults for everything under flows/ (the CLI, the Python API, deployments), set before Prefect
# or MLflow is imported; a value the user set wins. Nothing may reach the network at run time,
# and Prefect's ephemeral server needs ~19 s to migrate a fresh database (its default timeout
# is 20 s).
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
