"""The `hyperparameter-search` flow: prepare data → trials as `train-trial` task runs → `log-best`."""

from __future__ import annotations

import functools
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import TerminationSignal
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Failed, State
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from hyperflow.components.adapters import config_adapter
from hyperflow.components.config import ExperimentConfig
from hyperflow.components.data import Dataset, load_dataset
from hyperflow.components.devices import trial_slots
from hyperflow.components.diskfull import DiskFull, disk_full_cause
from hyperflow.components.faults import fault_point
from hyperflow.components.interrupt import (
    StopSignal,
    current_stop_event,
    init_trial_worker,
    set_current_stop_event,
    stop_on_signals,
)
from hyperflow.components.lifecycle import finish_study, open_study, threads_per_trial
from hyperflow.components.names import FAILED, INTERRUPTED
from hyperflow.components.preflight import check_devices
from hyperflow.components.resume import resume_study
from hyperflow.components.scratch import sweep_scratch
from hyperflow.components.study import Study, StudyProgress, StudyResult, TrialError, TrialPlan, execute_trial
from hyperflow.components.trial import TrialResult, TrialSpec
from hyperflow.flows.prefect_api import (
    ephemeral_api_url,
    flow_run_settings,
    start_ephemeral_server,
    wait_for_command_server,
)
from hyperflow.flows.slot_runner import SlotTaskRunner, end_pool_workers

__all__ = [
    "PROGRESS_LISTENERS",
    "STOP",
    "TRIALS_ENDED",
    "SearchInterrupted",
    "hyperparameter_search",
    "run_search",
    "study_run_id",
]

# Called with a StudyProgress after each finished trial (the CLI's progress bar listens here).
PROGRESS_LISTENERS: list[Callable[[StudyProgress], None]] = []

# The stop request of this process: the CLI's signal handlers set it; trials see it every batch.
STOP = StopSignal()
# Set once the search's trials have ended and the study is being finished (tested, registered): a
# stop request then lets the finish complete (seconds), and a second one leaves at once.
TRIALS_ENDED = threading.Event()
_study_run_id: str | None = None  # the study run of the search running in this process, once it exists


def study_run_id() -> str | None:
    """The study run of this process's latest search (None before its run exists): what to resume."""
    return _study_run_id


# How long in-flight trials get to report after a stop request before their workers are ended.
STOP_GRACE_SECONDS = 3.0


class SearchInterrupted(KeyboardInterrupt):
    """The search stopped on request (a signal): its runs were ended as KILLED.

    A KeyboardInterrupt, as a Ctrl-C is in Python: Prefect records the flow run as crashed by an
    interrupt (one line, as for SIGTERM) instead of logging a traceback for an error.
    """


def _infrastructure_only(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a train-trial task for infrastructure errors, never for a trial that failed itself."""
    try:
        state.result()
    except TrialError:
        return False
    except Exception as exc:
        return disk_full_cause(exc) is None  # a full disk stays full
    return False


@task(name="prepare-data", cache_policy=NO_CACHE)
def prepare_data(config: ExperimentConfig) -> Dataset | None:
    """Load, split and standardise the data set (None: a user's DataModule or function brings its own).

    In the process that checked the config first (`hyperflow run`, `hyperflow.search`), the data
    set preflight loaded is reused.
    """
    if not config_adapter(config).needs_dataset:
        return None
    return load_dataset(config.data, config.seed)


@task(
    name="train-trial",
    cache_policy=NO_CACHE,
    retries=1,
    retry_delay_seconds=2,
    retry_condition_fn=_infrastructure_only,
    task_run_name="trial-{plan.number}",
)
def train_trial_task(data: Dataset | None, plan: TrialPlan, spec: TrialSpec) -> TrialResult:
    """One trial: train, log to its MLflow run, end it. A failed trial fails this task run."""
    result = execute_trial(data, plan, spec, stop_event=current_stop_event())
    if result.state == FAILED:
        raise TrialError(result.error or "trial failed", result)
    return result


@task(name="log-best", cache_policy=NO_CACHE)
def log_best(study: Study, data: Dataset | None) -> StudyResult:
    """Test the best trial's weights, log and register the model, draw the study plots, end the study."""
    return finish_study(study, data)


@contextmanager
def _task_runner(config: ExperimentConfig) -> Iterator[TaskRunner[Any]]:
    runner: TaskRunner[Any]
    if config.runner.kind == "dask":
        from hyperflow.flows.dask_runner import dask_task_runner

        runner = dask_task_runner(config, stop=STOP)
    elif (slots := trial_slots(config.runner)) is not None:
        # Trials on GPUs: a worker process per slot, each seeing only its GPUs (even one at a time,
        # so that a CUDA error never reaches the search loop's process).
        runner = SlotTaskRunner(slots, stop_event=STOP.process_event, threads=threads_per_trial(config))
    elif config.search.n_parallel == 1:
        # One trial at a time runs in this process: no start-up, no copy of the data.
        set_current_stop_event(STOP.thread_event)
        runner = ThreadPoolTaskRunner(max_workers=1)
    else:
        # Parallel trials get processes: torch's global RNG and the GIL make threads a poor fit.
        runner = ProcessPoolTaskRunner(
            max_workers=config.search.n_parallel,
            initializer=init_trial_worker,
            initargs=(STOP.process_event, threads_per_trial(config)),
        )
    api_url = ephemeral_api_url() if isinstance(runner, ProcessPoolTaskRunner | SlotTaskRunner) else None
    # Process-pool workers get the current settings: this one points them at the flow's own server.
    with temporary_settings(updates={PREFECT_API_URL: api_url}) if api_url else nullcontext(), runner:
        try:
            yield runner
        finally:
            if STOP.is_set():
                # Prefect's process pool waits for running tasks on exit; a worker that did not stop
                # by itself (still importing torch) would hold it. Its executor is a private attribute.
                if isinstance(runner, SlotTaskRunner):
                    runner.terminate()
                elif isinstance(runner, ProcessPoolTaskRunner):
                    end_pool_workers(runner)


def _run_trials(study: Study, runner: TaskRunner[Any], data: Dataset | None) -> None:
    """Keep up to n_parallel trials in flight and tell each result as it finishes."""
    futures: dict[PrefectFuture[Any], TrialPlan] = {}
    finished: queue.Queue[PrefectFuture[Any]] = queue.Queue()
    # What a trial asks of its Dask worker (its share of a GPU); a fresh context for every submit.
    resources: Callable[[], Any] = nullcontext
    if study.cfg.runner.kind == "dask":
        from hyperflow.flows.dask_runner import trial_resources

        resources = functools.partial(trial_resources, study.cfg)
    # quote: Prefect walks every parameter of every task run looking for futures (a data set's
    # lists and frames cost ~9 ms a trial); these hold none. Not on Dask, which reads the quote
    # (a named tuple) as a plain tuple.
    wrap: Callable[[Any], Any] = quote if study.cfg.runner.kind != "dask" else (lambda value: value)
    stop_seen: float | None = None
    while True:
        if not STOP.is_set():
            # On GPU slots, no more trials than free slots (a slot frees before its result arrives here).
            limit = runner.free_slots if isinstance(runner, SlotTaskRunner) else None
            for plan in study.plan(limit=limit):
                params = {"data": wrap(data), "plan": wrap(plan), "spec": wrap(study.spec)}
                with resources():
                    fut = runner.submit(train_trial_task, params)
                futures[fut] = plan
                fut.add_done_callback(finished.put)
        else:
            stop_seen = stop_seen or time.monotonic()
            if time.monotonic() - stop_seen > STOP_GRACE_SECONDS:
                break  # the rest are ended as KILLED by Study.abort; their workers are terminated
        if not futures:
            break
        try:
            # A short wait keeps the loop responsive to stop requests and the time budget.
            fut = finished.get(timeout=0.5)
        except queue.Empty:
            continue
        _record(study, futures.pop(fut), fut)
        for listener in PROGRESS_LISTENERS:
            listener(study.progress())
        fault_point("between-trials")
    if not STOP.is_set():
        study.settle_writes()


def _record(study: Study, plan: TrialPlan, fut: PrefectFuture[Any]) -> None:
    try:
        result = fut.result()
    except TrialError as exc:
        study.record(plan, exc.result)
        return
    except BaseException as exc:  # a crashed worker, a task that could not run: failed, not fatal
        study.record_crash(plan, f"{type(exc).__name__}: {exc}")
        if disk_full_cause(exc) is not None:  # ...but a full disk ends the study: nothing more can be kept
            raise DiskFull(str(exc) if isinstance(exc, DiskFull) else f"the disk is full: {exc}") from exc
        return
    study.record(plan, result)


@flow(name="hyperparameter-search", log_prints=True)
def hyperparameter_search(config: ExperimentConfig) -> StudyResult | State:
    """Search the config's space: each trial a `train-trial` task run and an MLflow run.

    A study that ends FAILED (no trial completed, a full disk) ends its flow run Failed, with the
    result as the state's data: Prefect's UI and a deployment's alerts see the failure.
    """
    return _as_state(_search(config, resume_run_id=None))


def _as_state(result: StudyResult) -> StudyResult | State:
    if result.status != "FAILED":
        return result
    why = result.disk_full or (
        f"no trial completed ({result.n_failed} failed, {result.n_pruned} pruned)"
        + (f"; first error: {result.errors[0]}" if result.errors else "")
    )
    return Failed(message=f"the study ended FAILED: {why}", data=result)


def _search(config: ExperimentConfig, resume_run_id: str | None) -> StudyResult:
    global _study_run_id
    check_devices(config)  # also for a deployment's run, which no CLI checked: before any run exists
    data = prepare_data(config)
    flow_run_id = str(flow_run.id) if flow_run.id else None
    if resume_run_id:
        study = resume_study(config, data, resume_run_id, flow_run_id=flow_run_id)
    else:
        study = open_study(config, data, flow_run_id=flow_run_id)
    _study_run_id = study.study_run_id
    for listener in PROGRESS_LISTENERS:  # a resumed study's trials and best, before its first new trial ends
        listener(study.progress())
    try:
        # Prefect's engine installs a SIGTERM handler that raises at once, which would leave trials
        # training in worker processes and runs RUNNING: while trials run, a signal sets STOP instead,
        # and the loop below ends every open run as KILLED and re-raises.
        with stop_on_signals(STOP), _task_runner(config) as runner:
            _run_trials(study, runner, data)
    except BaseException as exc:
        ended = study.abort(INTERRUPTED if STOP.is_set() else FAILED, f"{type(exc).__name__}: {exc}")
        if disk_full_cause(exc) is not None and not STOP.is_set():
            return _disk_full_result(study, exc, ended)
        raise
    if STOP.is_set():
        study.abort(INTERRUPTED)
        if STOP.signum is not None and STOP.signum != signal.SIGINT:
            # Prefect's own exception for SIGTERM (and a terminal's SIGHUP): its engine records the
            # flow run accordingly.
            raise TerminationSignal(signal=STOP.signum)
        raise SearchInterrupted("the search was interrupted")
    TRIALS_ENDED.set()
    try:
        return log_best(study, data)
    except BaseException as exc:  # e.g. the store failed while the model was logged: no run stays RUNNING
        # (a second Ctrl-C during the finish: interrupted, and resume finishes it)
        interrupted = isinstance(exc, (KeyboardInterrupt, TerminationSignal))
        ended = study.abort(INTERRUPTED if interrupted else FAILED, f"{type(exc).__name__}: {exc}")
        if disk_full_cause(exc) is not None:
            return _disk_full_result(study, exc, ended)
        raise


def _disk_full_result(study: Study, exc: BaseException, ended: bool) -> StudyResult:
    """The study that a full disk ended, as a result (not a raise: no traceback in Prefect's log)."""
    what = str(exc) if isinstance(exc, DiskFull) else f"the disk is full: {exc}"
    run_id = study.study_run_id
    where = (
        f"study {run_id} ended FAILED"
        if ended
        else f"study {run_id} could not be marked FAILED (its store is on the full disk too)"
    )
    result = study.result_so_far("FAILED")
    result.disk_full = f"{what}; {where}. Free some space, then continue it: hyperflow resume {run_id}"
    return result


@flow(name="hyperparameter-search", log_prints=True)
def resume_search(config: ExperimentConfig, study_run_id: str) -> StudyResult | State:
    """Continue an interrupted study (or extend a finished one) in its own study run."""
    return _as_state(_search(config, resume_run_id=study_run_id))


def run_search(config: ExperimentConfig, resume_run_id: str | None = None) -> StudyResult:
    """Run the flow (in Prefect's ephemeral mode unless PREFECT_API_URL names a server)."""
    global _study_run_id
    STOP.reset()  # a stop request belongs to the search it interrupted
    TRIALS_ENDED.clear()
    _study_run_id = None
    sweep_scratch()  # what a killed search left in the temp folder
    own = wait_for_command_server()  # the CLI's server, started at the command's start
    # (no CLI) locked against other searches on this PREFECT_HOME; dies with us
    own = start_ephemeral_server() is not None or own
    with flow_run_settings(own_server=own):
        if resume_run_id:
            state = resume_search(config, resume_run_id, return_state=True)
        else:
            state = hyperparameter_search(config, return_state=True)
    # A failed study is a Failed state holding its result; an exception is re-raised as it was.
    value = state.result(raise_on_failure=False)
    if isinstance(value, BaseException):
        raise value
    if not isinstance(value, StudyResult):
        raise RuntimeError(f"the search flow run ended {state.type.value} without a result: {state.message}")
    return value
