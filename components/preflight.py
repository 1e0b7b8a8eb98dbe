"""Checks that run before anything is created: data, metric, strategy, tracking store."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from hyperflow.components.adapters import config_adapter
from hyperflow.components.budget import budget_problem
from hyperflow.components.config import BUILTIN_METRICS
from hyperflow.components.data import DataError, Dataset, load_dataset
from hyperflow.components.devices import device_problems, gpu_count
from hyperflow.components.search import make_strategy
from hyperflow.components.study import TRIAL_METRICS
from hyperflow.components.tracking import (
    StudyTracker,
    TrackingError,
    UnsupportedStore,
    resolve_tracking_uri,
    store_kind_problem,
)
from hyperflow.components.usercode import UserCodeError, check_user_code

if TYPE_CHECKING:
    from hyperflow.components.config import ExperimentConfig

__all__ = ["PreflightError", "check_devices", "dask_scheduler_problem", "preflight"]


class PreflightError(Exception):
    """A problem found before any run exists; `exit_code` is what the CLI exits with."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def check_devices(cfg: ExperimentConfig) -> None:
    """What this machine's GPUs cannot do of `runner.accelerator`, `gpus_per_trial`, `precision`.

    Raises:
        PreflightError: every problem by its dotted path.
    """
    runner = cfg.runner
    problems = device_problems(
        accelerator=runner.accelerator,
        gpus_per_trial=runner.gpus_per_trial,
        precision=runner.precision,
        n_gpus=gpu_count(),
        remote=runner.kind == "dask" and bool(runner.address),
    )
    if problems:
        raise PreflightError("\n".join(f"{path}: {message}" for path, message in problems))


def preflight(cfg: ExperimentConfig, *, check_tracking: bool = True) -> Dataset | None:
    """Check the devices, load the data and check the metric, the strategy and the tracking store.

    Returns the loaded data set (None for a user's DataModule or training function); loading it
    again in the same process (the flow's prepare-data) reuses it.

    Raises:
        PreflightError: naming the problem; nothing was created.
    """
    data: Dataset | None = None
    check_devices(cfg)
    if cfg.model.module or cfg.data.module:
        try:
            check_user_code(cfg)
        except UserCodeError as exc:
            raise PreflightError(str(exc)) from None
    if config_adapter(cfg).needs_dataset:
        try:
            data = load_dataset(cfg.data, cfg.seed)
        except DataError as exc:
            raise PreflightError(str(exc)) from None
        if not cfg.model.module:
            allowed = BUILTIN_METRICS[data.task]
            if cfg.search.metric not in allowed:
                raise PreflightError(
                    f"search.metric: {cfg.search.metric!r} is not logged for {data.name!r}, a "
                    f"{data.task} task; use one of {', '.join(allowed)}"
                )
            known = (*allowed, *TRIAL_METRICS)
            for i, objective in enumerate(cfg.search.objectives):
                if objective.metric not in known:
                    raise PreflightError(
                        f"search.objectives.{i}.metric: {objective.metric!r} is not logged for "
                        f"{data.name!r}, a {data.task} task; use one of {', '.join(known)}"
                    )
    try:
        make_strategy(cfg)
    except ValueError as exc:
        raise PreflightError(f"search: {exc}") from None
    problem = budget_problem(cfg, data)
    if problem is not None:
        raise PreflightError(problem)
    uri = resolve_tracking_uri(cfg.tracking.uri)
    if check_tracking:
        try:
            StudyTracker(uri).check()
        except TrackingError as exc:
            raise PreflightError(str(exc), exit_code=2 if isinstance(exc, UnsupportedStore) else 3) from None
    elif problem := store_kind_problem(uri):
        raise PreflightError(problem)  # the store is not opened (which would create it); its kind is known
    if cfg.runner.kind == "dask" and cfg.runner.address:
        problem = dask_scheduler_problem(cfg.runner.address)
        if problem:
            raise PreflightError(problem, exit_code=3)
    return data


def dask_scheduler_problem(address: str, timeout: float = 5.0) -> str | None:
    """Why nothing answers at a Dask scheduler's TCP address (None: something listens there).

    Dask's own client waits 30 s (its connect timeout) and fails inside the flow, with a study
    run already created; this connects to the port alone, before anything exists. Addresses of
    other transports (`inproc://`, `ucx://`) are left to Dask.
    """
    scheme, sep, rest = address.partition("://")
    if not sep:
        scheme, rest = "tcp", address
    if scheme not in ("tcp", "tls"):
        return None
    rest = rest.rstrip("/")
    host, _, port = rest.rpartition(":") if ":" in rest.lstrip("[").split("]")[-1] else (rest, "", "8786")
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout).close()
    except ValueError:
        return f"runner.address {address!r}: not a Dask scheduler address (tcp://HOST:PORT)"
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        return (
            f"runner.address {address!r}: cannot reach the Dask scheduler ({reason}); start it "
            "(`dask scheduler`) or correct the address"
        )
    return None
