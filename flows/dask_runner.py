"""Trials on a Dask cluster: prefect-dask's task runner, with every worker set up for training."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import uuid
from typing import TYPE_CHECKING, Any

import dask
from distributed.diagnostics.plugin import WorkerPlugin
from prefect_dask import DaskTaskRunner

from hyperflow.components.devices import GPU_RESOURCE, Slot, gpu_count, resolve_accelerator, trial_slots
from hyperflow.components.interrupt import current_stop_event, init_trial_worker
from hyperflow.components.lifecycle import threads_per_trial
from hyperflow.components.tracking import resolve_tracking_uri
from hyperflow.flows.prefect_api import ephemeral_api_url

if TYPE_CHECKING:
    from hyperflow.components.config import ExperimentConfig
    from hyperflow.components.interrupt import StopSignal

__all__ = [
    "TrialEnvironment",
    "TrialTaskRunner",
    "dask_task_runner",
    "gpu_workers",
    "local_workers",
    "trial_resources",
]

log = logging.getLogger(__name__)

PLUGIN_NAME = "hyperflow-trial-environment"

# The token of the study whose stop event is this worker's current one (set by TrialEnvironment).
_worker_token: str | None = None


def local_workers(n_parallel: int) -> int:
    """Worker processes of a local cluster: one per trial in flight, at most one per usable core."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(n_parallel, cores))


class TrialEnvironment(WorkerPlugin):
    """What a trial worker process needs, installed on every worker of the cluster (present and future).

    Torch and the BLAS libraries get the study's thread budget; the worker gets a stop event that
    training checks every batch, set from the search loop with `request_stop`. A worker of a local
    cluster also ignores Ctrl-C: the terminal sends it to the whole process group, and the search
    loop, not the worker, decides how trials end (interrupted, with their runs ended as KILLED).
    """

    def __init__(self, token: str, threads: int, ignore_sigint: bool) -> None:
        self.token = token
        self.threads = threads
        self.ignore_sigint = ignore_sigint

    def setup(self, worker: Any) -> None:
        global _worker_token
        init_trial_worker(threading.Event(), self.threads, ignore_sigint=self.ignore_sigint)
        _worker_token = self.token


def request_stop(token: str) -> bool:
    """Run on each worker: set the stop event of the study `token` (False where it is not current)."""
    event = current_stop_event()
    if _worker_token != token or event is None:
        return False
    event.set()
    return True


class TrialTaskRunner(DaskTaskRunner):
    """prefect-dask's task runner that installs `TrialEnvironment` and forwards stop requests.

    A stop request (Ctrl-C, SIGTERM) sets the search loop's StopSignal; a watcher thread passes it
    to every worker with `Client.run`, so training stops within a batch on the workers too.
    """

    def __init__(
        self,
        *args: Any,
        threads: int = 1,
        ignore_sigint: bool = False,
        stop: StopSignal | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.threads = threads
        self.ignore_sigint = ignore_sigint
        self.stop = stop
        self.token = uuid.uuid4().hex
        self._closed = threading.Event()
        self._watcher: threading.Thread | None = None

    def duplicate(self) -> TrialTaskRunner:
        return type(self)(
            address=self.address,
            cluster_class=self.cluster_class,
            cluster_kwargs=self.cluster_kwargs,
            adapt_kwargs=self.adapt_kwargs,
            client_kwargs=self.client_kwargs,
            performance_report_path=self.performance_report_path,
            threads=self.threads,
            ignore_sigint=self.ignore_sigint,
            stop=self.stop,
        )

    def __enter__(self) -> TrialTaskRunner:
        super().__enter__()
        try:
            # The client (and a local cluster) starts here rather than at the first trial, so a
            # scheduler that cannot be reached fails the search before any trial run is created.
            self.client.register_plugin(
                TrialEnvironment(self.token, self.threads, self.ignore_sigint), name=PLUGIN_NAME
            )
        except BaseException:
            super().__exit__(None, None, None)
            raise
        if self.stop is not None:
            self._closed.clear()
            self._watcher = threading.Thread(
                target=self._forward_stop, name="hyperflow-dask-stop", daemon=True
            )
            self._watcher.start()
        return self

    def __exit__(self, *args: Any) -> None:
        self._closed.set()
        if self._watcher is not None:
            self._watcher.join(timeout=30)
            self._watcher = None
        super().__exit__(*args)

    def _forward_stop(self) -> None:
        assert self.stop is not None
        while not self._closed.wait(0.2):
            if self.stop.is_set():
                try:
                    self.client.run(request_stop, self.token)
                except Exception as exc:  # the cluster may be going away; trials end with it
                    log.warning("could not pass the stop request to the Dask workers: %s", exc)
                return


def trial_resources(config: ExperimentConfig) -> contextlib.AbstractContextManager[Any]:
    """What a trial asks of its Dask worker: `runner.gpus_per_trial` of its `GPU` resource, on GPUs.

    Dask runs a task only on a worker with enough of the resource left, so a worker started with
    `--resources GPU=1` runs two trials of 0.5 at once and never three.
    """
    # `auto` looks at this machine; `gpu` asks a remote cluster's workers for theirs.
    if resolve_accelerator(config.runner.accelerator, gpu_count()) != "gpu":
        return contextlib.nullcontext()
    return dask.annotate(resources={GPU_RESOURCE: config.runner.gpus_per_trial})


def gpu_workers(slots: list[Slot], gpus_per_trial: float, threads: int) -> dict[str, Any]:
    """A local cluster's worker specs for GPU slots: one worker per slot, seeing only its GPUs.

    Each worker gets the slot's `CUDA_VISIBLE_DEVICES` in its environment (its nanny starts it so,
    and a worker that dies, e.g. after a CUDA error, is restarted the same way) and the `GPU`
    resource a trial asks for, so it runs one trial at a time.
    """
    from distributed import Nanny

    return {
        f"gpu-slot-{slot.index}": {
            "cls": Nanny,
            "options": {
                "nthreads": 1,
                "env": dict(slot.env),
                "resources": {GPU_RESOURCE: gpus_per_trial},
                "host": "127.0.0.1",
                "dashboard_address": None,
                "memory_limit": None,
            },
        }
        for slot in slots
    }


def dask_task_runner(config: ExperimentConfig, stop: StopSignal | None = None) -> TrialTaskRunner:
    """The task runner for `runner.kind: dask`.

    `runner.address` connects to an existing scheduler; without one, a `LocalCluster` of worker
    processes (one per trial in flight, at most one per core, one thread each) is started on the
    loopback interface and closed with the runner. Trials log to MLflow from the workers: the
    tracking URI travels with each trial, so it must be one the workers can reach.

    Args:
        config: the experiment.
        stop: the search loop's stop request, forwarded to the workers when set.
    """
    threads = threads_per_trial(config)
    address = config.runner.address
    if address:
        uri = resolve_tracking_uri(config.tracking.uri)
        if not uri.startswith(("http://", "https://")):
            _warn(
                f"runner.address is set but the tracking store is {uri}: Dask workers on other hosts "
                "cannot write to it; point tracking.uri or MLFLOW_TRACKING_URI at an MLflow server"
            )
        return TrialTaskRunner(address=address, threads=threads, stop=stop)
    cluster_kwargs: dict[str, Any] = {
        "n_workers": local_workers(config.search.n_parallel),
        "threads_per_worker": 1,
        "processes": True,
        "host": "127.0.0.1",
        "dashboard_address": None,
    }
    api_url = ephemeral_api_url()
    if api_url:
        cluster_kwargs["env"] = {"PREFECT_API_URL": api_url}
    cluster_class = "distributed.LocalCluster"
    slots = trial_slots(config.runner)
    if slots is not None:
        # GPU trials: a SpecCluster, because each worker needs its own CUDA_VISIBLE_DEVICES.
        from distributed import Scheduler

        workers = gpu_workers(slots, config.runner.gpus_per_trial, threads)
        for spec in workers.values():
            spec["options"]["env"].update(cluster_kwargs.get("env", {}))
        cluster_class = "distributed.SpecCluster"
        cluster_kwargs = {
            "workers": workers,
            "scheduler": {
                "cls": Scheduler,
                "options": {"host": "127.0.0.1", "dashboard_address": None},
            },
        }
    return TrialTaskRunner(
        cluster_class=cluster_class,
        cluster_kwargs=cluster_kwargs,
        threads=threads,
        ignore_sigint=True,
        stop=stop,
    )


def _warn(message: str) -> None:
    """A warning in the flow run's log (the Prefect UI shows it), or this module's outside a run."""
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        get_run_logger().warning(message)
    except MissingContextError:
        log.warning(message)
