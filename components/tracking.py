"""The MLflow schema of DESIGN.md, written through MlflowClient with explicit run ids."""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import logging
import os
import queue
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from hyperflow.components.diskfull import DiskFull, disk_full_cause
from hyperflow.components.faults import fault_point
from hyperflow.components.names import (
    EXPERIMENT_KIND,
    ROLE_STUDY,
    ROLE_TRIAL,
    RUN_STATUS,
    RUNNING,
    SHARED_VIEW,
    TAG_CONFIG_HASH,
    TAG_ERROR,
    TAG_EXPERIMENT_KIND,
    TAG_FLOW_RUN_ID,
    TAG_GIT_COMMIT,
    TAG_HOST,
    TAG_MULTI_OBJECTIVE,
    TAG_PARAMS,
    TAG_PARENT,
    TAG_PID,
    TAG_ROLE,
    TAG_RUN_NAME,
    TAG_SEED,
    TAG_STATE,
    TAG_STOP_REASON,
    TAG_STRATEGY,
    TAG_TRIAL,
    trial_run_name,
)
from hyperflow.components.sqlitefiles import fold_log, remove_orphan_logs

if TYPE_CHECKING:
    from hyperflow.components.config import ExperimentConfig
    from hyperflow.components.data import Dataset
    from hyperflow.components.trial import TrialResult

__all__ = [
    "DEFAULT_TRACKING_URI",
    "FullDisk",
    "StudyTracker",
    "TrackingError",
    "TrialLogger",
    "UnsupportedStore",
    "Writer",
    "health_answer",
    "param_value",
    "prepare_local_store",
    "redact_uri",
    "resolve_tracking_uri",
    "store_kind_problem",
    "ui_command",
    "writer",
]

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"

_PARAM_LIMIT = 6000  # MLflow's longest param value
_BATCH_LIMIT = 100  # params per log_batch call


class TrackingError(RuntimeError):
    """The tracking store cannot be used (unreachable server, refused credentials, ...)."""


class UnsupportedStore(TrackingError):
    """The tracking URI names no kind of store MLflow has (a mistake in the config, not an outage)."""


def store_kind_problem(uri: str) -> str | None:
    """Why MLflow has no store for `uri`'s kind (None: it has), found without opening the store,
    which for SQLite would create it: `validate` checks with this alone."""
    from mlflow.environment_variables import MLFLOW_ALLOW_FILE_STORE

    # MLflow's own table of schemes (plugins' included): the one place that knows them all.
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry
    from mlflow.utils.uri import get_uri_scheme

    where = f"tracking.uri (or $MLFLOW_TRACKING_URI) {redact_uri(uri)!r}"
    kinds = "use sqlite:///FILE, postgresql://, mysql://, mssql:// or an http(s):// tracking server"
    try:
        _tracking_store_registry.get_store_builder(uri)
    except MlflowException:
        return f"{where}: MLflow has no tracking store for this kind of URI; {kinds}"
    if get_uri_scheme(uri) in ("", "file") and not MLFLOW_ALLOW_FILE_STORE.get():
        return (
            f"{where}: a folder is MLflow's file store, which MLflow 3 refuses (it is in maintenance "
            f"mode) unless MLFLOW_ALLOW_FILE_STORE=true; {kinds} (`mlflow migrate-filestore` moves "
            "an existing folder's runs into a database)"
        )
    return None


def resolve_tracking_uri(configured: str | None) -> str:
    """`tracking.uri`, else $MLFLOW_TRACKING_URI, else SQLite in the working directory.

    A relative SQLite path is made absolute so that worker processes find the same file.
    """
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        uri = prefix + str(Path(uri[len(prefix) :]).resolve())
    return uri


_PREPARED: set[str] = set()


def prepare_local_store(uri: str) -> None:
    """Create and migrate a SQLite store under a file lock, once per process; other stores: nothing.

    Two searches started at once on a fresh `mlflow.db` would both create MLflow's tables and one
    would crash in the schema migration. Under `<db>.lock` the first creates them and the others
    find them made; WAL mode (kept by the file) lets readers and one writer go on together, and
    MLflow's own busy timeout (20 s) covers the writers. filelock: a kernel lock, released when a
    killed process dies.
    """
    if not uri.startswith("sqlite:///") or uri in _PREPARED:
        return
    path = Path(uri.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    _sync_at_checkpoints(path)
    with FileLock(f"{path}.lock"):
        if not path.exists():
            _create_store(path)
        MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments(max_results=1)
        db = sqlite3.connect(path, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")
        finally:
            db.close()
    if not _PREPARED:
        atexit.register(_checkpoint_stores)
    _PREPARED.add(uri)


_WAL_STORES: set[str] = set()


def _sync_at_checkpoints(path: Path) -> None:
    """MLflow's connections to this store (WAL mode) sync the disk at checkpoints, not at commits.

    SQLite's `synchronous=NORMAL`, which its documentation recommends with WAL: a commit is in the
    log when it returns, so a killed process loses nothing, and a power cut can lose the last
    commits before a checkpoint but never the file's integrity. With FULL (SQLite's default, which
    MLflow keeps) every commit waited for the disk while holding the store's write lock, and the
    search loop's creation of the next trial's run waited behind the writer's commits: 47-50 ms
    a run in `bench/overhead.py`, 28 ms with NORMAL.
    """
    if not _WAL_STORES:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        event.listen(Engine, "connect", _sync_normal)
    _WAL_STORES.update({str(path.absolute()), str(path.resolve())})  # as SQLite names it: as opened


def _sync_normal(dbapi_connection: Any, _record: Any) -> None:
    """A new SQLite connection to a prepared store: WAL (the file keeps it), synced at checkpoints."""
    if not isinstance(dbapi_connection, sqlite3.Connection):
        return
    files = {row[2] for row in dbapi_connection.execute("PRAGMA database_list") if row[1] == "main"}
    if files & _WAL_STORES:
        dbapi_connection.execute("PRAGMA journal_mode=WAL")
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")


def _checkpoint_stores() -> None:
    """At exit: the writer's last writes, then each SQLite store's write-ahead log folded back into
    the file, so that `mlflow.db` alone holds every run (copied, uploaded, backed up): the command
    leaves with `os._exit`, which closes none of the connections MLflow keeps pooled.
    """
    if _WRITER is not None:
        _WRITER.flush(30.0)
    for uri in sorted(_PREPARED):
        fold_log(Path(uri.removeprefix("sqlite:///")))


def _create_store(path: Path) -> None:
    """Make a new SQLite store at `path` with MLflow's own schema: a copy of a template, or migrated.

    MLflow creates a store by running every alembic migration (6 s of a 1-trial run's 8 s start-up
    here: SQLite syncs the disk after each of ~70 commits). The first creation runs them on a file
    of our own with `synchronous=OFF` and the journal in memory (1.4 s), and keeps a copy without
    the Default experiment, whose artifact location is the store's, as a template in the user's
    cache, one per MLflow version; later creations copy it (milliseconds) and MLflow adds the
    Default experiment when the store is first opened. Either way the file is synced once and
    renamed into place: a kill during the creation leaves no store, only that file, which the
    next creation replaces.
    """
    for stale in path.parent.glob(f"{path.name}.creating-*"):
        stale.unlink(missing_ok=True)  # a creation that was killed (we hold the store's lock)
    building = path.with_name(f"{path.name}.creating-{os.getpid()}")
    template = _store_template()
    if template is not None and template.is_file():
        shutil.copyfile(template, building)
    else:
        _migrate_unsynced(building)
        if template is not None:
            _keep_template(building, template)
    _fsync(building)
    # A store deleted without its log (`rm mlflow.db`) left it behind: not to be replayed into this one.
    remove_orphan_logs(path)
    os.replace(building, path)


def _store_template() -> Path | None:
    """Where the template store of this MLflow version lives (None: no cache folder is known)."""
    import mlflow

    cache = os.environ.get("XDG_CACHE_HOME") or (str(Path.home() / ".cache") if Path.home().is_dir() else "")
    if not cache:
        return None
    return Path(cache) / "hyperflow" / f"mlflow-{mlflow.__version__}-store.db"


def _migrate_unsynced(building: Path) -> None:
    """MLflow's migrations on `building` with SQLite's syncs off (they are made once, after)."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    uri = f"sqlite:///{building}"

    def unsynced(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA synchronous=OFF")
        cursor.execute("PRAGMA journal_mode=MEMORY")
        cursor.close()

    # Every engine made meanwhile (only MLflow's for this file: the store's lock is held).
    event.listen(Engine, "connect", unsynced)
    try:
        MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments(max_results=1)
    finally:
        event.remove(Engine, "connect", unsynced)
        _dispose_engine(uri)


def _keep_template(store: Path, template: Path) -> None:
    """Keep a copy of a just-migrated `store`, without its Default experiment, as `template`.

    Best effort: a cache that cannot be written leaves every later creation migrating.
    """
    partial = template.with_name(f"{template.name}.{os.getpid()}")
    try:
        template.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(store, partial)
        db = sqlite3.connect(partial)
        try:
            with db:
                db.execute("DELETE FROM experiment_tags WHERE experiment_id = 0")
                db.execute("DELETE FROM experiments WHERE experiment_id = 0")
        finally:
            db.close()
        _fsync(partial)
        os.replace(partial, template)  # two creations at once: either copy is whole
    except (OSError, sqlite3.Error):
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _dispose_engine(uri: str) -> None:
    """Close the connections MLflow keeps for a store URI that is no longer used."""
    with contextlib.suppress(Exception):  # MLflow's engine cache is internal: nothing to close if it moved
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        engine = SqlAlchemyStore._engine_map.pop(uri, None)
        if engine is not None:
            engine.dispose()


def param_value(value: Any) -> str:
    """A value as MLflow stores it: lists as JSON, everything cut to MLflow's length limit."""
    text = json.dumps(value) if isinstance(value, list | dict | tuple) else str(value)
    return text[:_PARAM_LIMIT]


# The user-info part of a URI (`http://user:secret@host`): credentials that must never be logged.
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")


def redact_uri(text: str) -> str:
    """`text` with the credentials of every URI in it masked: `http://user:secret@host` → `http://***@host`.

    Credentials belong in MLflow's own environment variables (MLFLOW_TRACKING_USERNAME and
    _PASSWORD, or MLFLOW_TRACKING_TOKEN), which are never logged; a URI that carries them anyway
    is masked wherever it would be written (params, config.yaml) or printed.
    """
    return _USERINFO.sub(r"\1***@", text)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _metric_batch(metrics: Mapping[str, float], step: int) -> list[Metric]:
    """`metrics` as one `log_batch`'s metrics, stamped now, at `step`."""
    now = _now_ms()
    return [Metric(k, float(v), now, step) for k, v in metrics.items()]


def _git_commit() -> str | None:
    """The commit of the checkout hyperflow's code runs from (none for an installed wheel)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment_text() -> str:
    """Python and the versions of every installed distribution, one `name==version` per line."""
    lines = [f"# python {sys.version.split()[0]} on {sys.platform}"]
    dists = sorted({(d.metadata["Name"] or "").lower(): d.version for d in metadata.distributions()}.items())
    lines += [f"{name}=={version}" for name, version in dists if name]
    return "\n".join(lines) + "\n"


@dataclass
class StudyTracker:
    """Writes the study run and creates trial runs; lives in the search loop's process."""

    uri: str
    client: MlflowClient = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if problem := store_kind_problem(self.uri):
            raise UnsupportedStore(problem)
        # Before the client: making one for a SQLite registry already creates (migrates) the store.
        try:
            prepare_local_store(self.uri)
        except Exception as exc:
            raise TrackingError(f"cannot create the MLflow store at {self.uri}: {_short(exc)}") from None
        try:
            self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        except MlflowException as exc:  # a store of a known kind that refuses this URI
            raise UnsupportedStore(
                f"tracking.uri (or $MLFLOW_TRACKING_URI) {redact_uri(self.uri)!r}: {_short(exc)}"
            ) from None

    def check(self, timeout: float = 10.0) -> None:
        """Fail fast, before any training, when the store cannot be reached or used.

        A server is probed with one short request first: MLflow's own client retries an
        unreachable server with backoff for minutes before it gives up.
        """
        if self.uri.startswith(("http://", "https://")):
            _probe_server(self.uri, timeout)
        try:
            self.client.search_experiments(max_results=1)
        except Exception as exc:
            hint = ""
            if any(code in str(exc) for code in ("401", "403")):
                hint = (
                    "; the server refused the credentials: set MLFLOW_TRACKING_USERNAME and "
                    "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)"
                )
            raise TrackingError(
                f"cannot use the MLflow tracking store at {redact_uri(self.uri)}: {redact_uri(_short(exc))}{hint}"
            ) from None

    def experiment_id(self, name: str) -> str:
        """The experiment's id, creating it (or restoring a deleted one of that name)."""
        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            return str(self.client.create_experiment(name, tags={TAG_EXPERIMENT_KIND: EXPERIMENT_KIND}))
        if exp.lifecycle_stage == "deleted":
            self.client.restore_experiment(exp.experiment_id)
        if TAG_EXPERIMENT_KIND not in exp.tags:  # made by an older version, or by hand
            self.client.set_experiment_tag(exp.experiment_id, TAG_EXPERIMENT_KIND, EXPERIMENT_KIND)
        return str(exp.experiment_id)

    def start_study(
        self,
        cfg: ExperimentConfig,
        dataset: Dataset | None,
        *,
        config_hash: str,
        flow_run_id: str | None,
        config_yaml: str,
        flat_config: Mapping[str, Any],
        multi_objective: str | None = None,
    ) -> tuple[str, str]:
        """Create the study run with its tags, params, dataset input and artifacts.

        `multi_objective`: with several objectives, how the strategy searches them (a tag).

        Returns:
            (experiment id, study run id)
        """
        experiment_id = self.experiment_id(cfg.name)
        tags = {
            TAG_ROLE: ROLE_STUDY,
            TAG_STRATEGY: cfg.search.strategy,
            TAG_CONFIG_HASH: config_hash,
            "mlflow.note.content": f"hyperflow study: {cfg.search.strategy} search of {cfg.search.metric}",
        }
        if flow_run_id:
            tags[TAG_FLOW_RUN_ID] = flow_run_id
        if multi_objective:
            tags[TAG_MULTI_OBJECTIVE] = multi_objective
        commit = _git_commit()
        if commit:
            tags[TAG_GIT_COMMIT] = commit
        run = self.client.create_run(experiment_id, tags=tags, run_name=f"study-{cfg.search.strategy}")
        run_id = run.info.run_id
        self.client.set_experiment_tag(
            experiment_id, SHARED_VIEW + run_id, json.dumps(run_list_view(cfg, run_id))
        )
        fault_point("study-created")
        self.log_study_records(run_id, dataset, config_yaml=config_yaml, flat_config=flat_config)
        return experiment_id, run_id

    def log_study_records(
        self,
        run_id: str,
        dataset: Dataset | None,
        *,
        config_yaml: str,
        flat_config: Mapping[str, Any],
    ) -> None:
        """The study run's params, data set input, `config.yaml` and `environment.txt`.

        Written after the run is created (a second call), so resume writes them again when a
        kill came in between.
        """
        params = [
            Param(k, param_value(redact_uri(v) if isinstance(v, str) else v)) for k, v in flat_config.items()
        ]
        for start in range(0, len(params), _BATCH_LIMIT):
            self.client.log_batch(run_id, params=params[start : start + _BATCH_LIMIT])
        if dataset is not None:
            self.log_dataset(run_id, dataset)
        self.client.log_text(run_id, redact_uri(config_yaml), "config.yaml")
        self.client.log_text(run_id, environment_text(), "environment.txt")

    def log_dataset(self, run_id: str, dataset: Dataset) -> None:
        """The data set as an MLflow input: name, source and digest (training rows as the profile)."""
        import warnings

        from mlflow.data.code_dataset_source import CodeDatasetSource
        from mlflow.data.dataset_source import DatasetSource
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.numpy_dataset import from_numpy
        from mlflow.entities import DatasetInput, InputTag

        # A file is a local artifact; a scikit-learn loader is code (naming it as a path would be wrong).
        source: DatasetSource
        if Path(dataset.source).is_absolute():
            with warnings.catch_warnings():  # MLflow registers its local-file source twice
                warnings.simplefilter("ignore")
                source = resolve_dataset_source(dataset.source)
        else:
            source = CodeDatasetSource({"loader": dataset.source})
        ds = from_numpy(
            dataset.X_train,
            targets=dataset.y_train,
            source=source,
            name=dataset.name,
            digest=dataset.digest,
        )
        entity = ds._to_mlflow_entity()
        self.client.log_inputs(run_id, [DatasetInput(entity, [InputTag("mlflow.data.context", "train")])])

    def start_trial(
        self,
        experiment_id: str,
        study_run_id: str,
        *,
        number: int,
        params: Mapping[str, Any],
        seed: int,
        extra_tags: Mapping[str, str] | None = None,
        log_params: bool = True,
    ) -> str:
        """Create a trial run (status RUNNING) nested under the study, with its params and tags.

        The creating call carries everything resume needs (number, seed, and the params as the
        JSON tag `hyperflow.params`): the params as MLflow params are a second call, and a kill
        between the two must not lose the trial. `log_params=False` leaves that call to the
        trial's logger, which sends them with its first batch (one call fewer per trial).
        """
        tags = {
            TAG_ROLE: ROLE_TRIAL,
            TAG_PARENT: study_run_id,
            TAG_TRIAL: str(number),
            TAG_SEED: str(seed),
            TAG_STATE: RUNNING,
            TAG_PARAMS: json.dumps(dict(params), sort_keys=True, default=str),
            **(extra_tags or {}),
        }
        run = self.client.create_run(experiment_id, tags=tags, run_name=trial_run_name(number))
        run_id = run.info.run_id
        fault_point("trial-created")
        if log_params:
            self.client.log_batch(run_id, params=[Param(k, param_value(v)) for k, v in params.items()])
        return run_id

    def submit_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        """`log_metrics` through this process's writer: queued, not waited for."""
        batch = _metric_batch(metrics, step)
        writer().submit(
            f"metrics of run {run_id}", functools.partial(self.client.log_batch, run_id, metrics=batch)
        )

    def writes_queued(self) -> int:
        """How many writes this process has queued so far (for `wait_for_writes`)."""
        return writer().submitted

    def wait_for_writes(self, count: int) -> None:
        """Wait until the first `count` writes this process queued are done."""
        writer().wait_for(count)

    def flush_writes(self, timeout: float | None = None) -> list[str]:
        """Wait for this process's queued writes; the ones that failed."""
        return writer().flush(timeout)

    def full_disk(self) -> FullDisk | None:
        """The write of this process that a full disk refused, if one was (nothing after it is tried)."""
        return writer().full

    def clear_full_disk(self) -> None:
        writer().clear_full()

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        self.client.log_batch(run_id, metrics=_metric_batch(metrics, step))

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def end_run(self, run_id: str, status: str) -> None:
        self.client.set_terminated(run_id, status)

    def mark_trial(
        self, run_id: str, state: str, error: str | None = None, *, number: int | None = None
    ) -> None:
        """Set a trial's final state from the search loop (a crash the worker could not report)."""
        tags = {TAG_STATE: state}
        if number is not None:
            tags[TAG_RUN_NAME] = trial_run_name(number, state)
        if error:
            tags[TAG_ERROR] = error[:5000]
        self.set_tags(run_id, tags)
        self.end_run(run_id, RUN_STATUS[state])


@dataclass(frozen=True)
class FullDisk:
    """A write that a full disk refused: the run it was for (None: not a run's), and why."""

    run_id: str | None
    message: str
    skipped: set[str] = field(default_factory=set)  # runs with writes not tried after it


class Writer:
    """MLflow writes off the caller's path: one thread per process writes them in the order given.

    The queue is bounded and `submit` blocks while it is full (a store that keeps failing slows the
    trial down rather than losing a metric). Each write is retried with backoff (on top of MLflow's
    own HTTP retries) before it counts as failed; `flush` waits for everything submitted so far
    and returns what failed. The thread is a daemon: `flush` runs at interpreter exit, and the
    study flushes at each study's end and when a signal stops it.

    A hand-written thread and `queue.Queue` rather than MLflow's asynchronous logging: that one
    queues without bound, covers only metrics/params/tags (not the end of a run, nor artifacts),
    and its flush waits on a one-second poll.
    """

    def __init__(self, maxsize: int = 256, retries: int = 4, retry_delay: float = 2.0) -> None:
        self.retries = retries
        self.retry_delay = retry_delay
        self._queue: queue.Queue[tuple[str, Callable[[], object], str | None, bool] | None] = queue.Queue(
            maxsize
        )
        self._errors: list[str] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        # The first write a full disk refused: every later one is skipped (reported, not tried).
        self.full: FullDisk | None = None
        self._done = threading.Condition()
        self.submitted = 0  # writes queued so far
        self._written = 0  # of them, done (made, failed or skipped)

    def submit(
        self, what: str, write: Callable[[], object], run_id: str | None = None, *, always: bool = False
    ) -> None:
        """Queue one write (`what` names it in errors, `run_id` is the run it belongs to); blocks
        while the queue is full. `always`: done even after a full disk (local clean-up)."""
        self._ensure_thread()
        with self._done:
            self.submitted += 1
        self._queue.put((what, write, run_id, always))

    def wait_for(self, count: int) -> None:
        """Wait until the first `count` writes queued are done (made, failed or skipped)."""
        with self._done:
            while self._written < count and self._thread is not None:
                self._done.wait(1.0)

    def clear_full(self) -> None:
        """Try writes again (a new study, once space was freed)."""
        self.full = None

    def flush(self, timeout: float | None = None) -> list[str]:
        """Wait until every write submitted so far is done; the errors since the last flush."""
        if self._thread is not None:
            if timeout is None:
                self._queue.join()
            else:
                deadline = time.monotonic() + timeout
                while self._queue.unfinished_tasks and time.monotonic() < deadline:
                    time.sleep(0.01)
        with self._lock:
            errors, self._errors = self._errors, []
        return errors

    def _ensure_thread(self) -> None:
        if self._pid != os.getpid():  # a forked child inherits the object, not the thread
            self.__init__(self._queue.maxsize, self.retries, self.retry_delay)  # type: ignore[misc]
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="hyperflow-mlflow-writer", daemon=True
                    )
                    self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                what, write, run_id, always = item
                if self.full is not None and not always:
                    with self._lock:
                        self._errors.append(f"did not write {what}: {self.full.message}")
                        if run_id is not None and run_id != self.full.run_id:
                            self.full.skipped.add(run_id)
                    continue
                error = retrying(write, self.retries, self.retry_delay)
                if error is not None:
                    message = f"could not write {what}: {error}"
                    if error.startswith(DISK_FULL_MARK):
                        self.full = FullDisk(run_id, message)
                    with self._lock:
                        self._errors.append(message)
            finally:
                with self._done:
                    self._written += 1
                    self._done.notify_all()
                self._queue.task_done()


def retrying(write: Callable[[], object], retries: int, delay: float) -> str | None:
    """Call `write` up to `retries` times, doubling `delay` between tries; the last error or None."""
    for attempt in range(1, retries + 1):
        try:
            write()
            return None
        except Exception as exc:
            if disk_full_cause(exc) is not None:  # waiting frees no space: the study ends
                return f"{DISK_FULL_MARK}: {_short(exc)}"
            if attempt == retries:
                return f"{_short(exc)} (after {attempt} attempts)"
            time.sleep(delay)
            delay *= 2
    return None


DISK_FULL_MARK = "the disk is full"  # how a write that failed for want of space is reported
_WRITER: Writer | None = None
_WRITER_LOCK = threading.Lock()


def writer() -> Writer:
    """This process's writer (made on first use)."""
    global _WRITER
    if _WRITER is None:
        with _WRITER_LOCK:
            if _WRITER is None:
                _WRITER = Writer()
                atexit.register(_WRITER.flush, 30.0)
    return _WRITER


class TrialLogger:
    """Logs one trial from wherever it trains (the search loop's process, a worker, a Dask worker).

    It is created in the search loop and pickled with the trial: only the URI, the run id and the
    params travel; the client is made on first use. Per-epoch metrics are batched and handed to
    the process's `Writer` at most about once a second, so training never waits for the store
    (every write to SQLite costs ~20 ms, more than an epoch of a small model); the trial's params
    go with the first batch. `finish` hands over the final metrics with the state tags (one
    call), the weights and the end of the run; `wait` (a trial in another process than the
    search loop) waits for them and raises a TrackingError if the store refused them.

    Calls per trial: the run's creation (the search loop, which needs its id), one batch a second
    while it trains, one last batch, the weights, the end of the run. Nothing is dropped: the
    writer's queue blocks when full, failed writes are retried, and every flush is waited for at
    the study's end and when a signal stops it.
    """

    def __init__(
        self,
        uri: str,
        run_id: str,
        *,
        number: int | None = None,
        params: Mapping[str, Any] | None = None,
        flush_seconds: float = 1.0,
        retries: int = 4,
        retry_delay: float = 2.0,
    ) -> None:
        self.uri = uri
        self.run_id = run_id
        self.number = number  # the trial number: its run is renamed `trial-N · <state>` at the end
        self.params = dict(params or {})
        self.flush_seconds = flush_seconds
        self.retries = retries
        self.retry_delay = retry_delay
        self._client: MlflowClient | None = None
        self._pending: list[Metric] = []
        self._params_sent = not self.params
        self._last_flush = 0.0
        self._last_step: dict[str, int] = {}  # each name logged per epoch: the last epoch it was
        self._writer: Writer | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {
            k: getattr(self, k)
            for k in ("uri", "run_id", "number", "params", "flush_seconds", "retries", "retry_delay")
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        uri, run_id = state.pop("uri"), state.pop("run_id")
        self.__init__(uri, run_id, **state)  # type: ignore[misc]

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        return self._client

    @property
    def writer(self) -> Writer:
        if self._writer is None:
            shared = writer()
            # A logger's own retry settings (tests shorten them) on the shared thread's behalf.
            self._writer = (
                shared
                if (self.retries, self.retry_delay) == (shared.retries, shared.retry_delay)
                else Writer(retries=self.retries, retry_delay=self.retry_delay)
            )
        return self._writer

    def on_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Queue an epoch's metrics at step=epoch; hand the batch over when a second has passed."""
        self._pending.extend(_metric_batch(metrics, epoch))
        self._last_step.update(dict.fromkeys(metrics, epoch))
        fault_point("epoch-logged")
        if self._last_flush == 0.0:
            self._last_flush = time.monotonic()
        elif time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Hand what is batched to the writer (blocks only while the writer's queue is full)."""
        self._last_flush = time.monotonic()
        self._submit_batches(self._pending, [])
        self._pending = []

    def _submit_batches(self, metrics: list[Metric], tags: list[RunTag]) -> None:
        params: list[Param] = []
        if not self._params_sent:
            params = [Param(k, param_value(v)) for k, v in self.params.items()][:_BATCH_LIMIT]
            self._params_sent = True
        if not metrics and not tags and not params:
            return
        # MLflow's limit per call is 1000 metrics; the tags and params go with the last batch.
        chunks = [metrics[i : i + 1000] for i in range(0, len(metrics), 1000)] or [[]]
        for i, chunk in enumerate(chunks):
            last = i == len(chunks) - 1
            self.writer.submit(
                f"metrics and tags of run {self.run_id} to {redact_uri(self.uri)}",
                functools.partial(
                    self.client.log_batch,
                    self.run_id,
                    metrics=chunk,
                    params=params if last else [],
                    tags=tags if last else [],
                ),
                self.run_id,
            )

    def finish(
        self,
        result: TrialResult,
        metric: str,
        artifacts_dir: Path | None = None,
        root_files: Sequence[Path] = (),
        scratch: Path | None = None,
    ) -> None:
        """Hand over the final metrics, state tags, weight artifacts and the end of the run.

        `artifacts_dir` is logged as `weights/`, each of `root_files` at the run's root (where
        MLflow's compare view lists the files runs share). They belong to the logger from here on;
        `scratch`, the folder holding them, is removed once they are written (or given up on).
        """
        now = _now_ms()
        self._pending.extend(
            [
                Metric("epochs_trained", float(result.epochs_trained), now, 0),
                Metric("train_seconds", float(result.train_seconds), now, 0),
            ]
        )
        if result.param_count > 0:  # 0: no model seen (a training function's own, a trial failed before)
            self._pending.append(Metric("param_count", float(result.param_count), now, 0))
        if result.predicted_final is not None:
            self._pending.append(Metric(f"predicted_final_{metric}", float(result.predicted_final), now, 0))
        # The last epoch's weight summaries, from the final weights, where the epochs did not log
        # them: `tracking.weight_summary_every` skipped that epoch, or a training function's model
        # has weights only at the end.
        last = max(result.epochs_trained - 1, 0)
        for name, hist in (result.histograms or {}).items():
            if len(hist.get("shape", ())) >= 2 and self._last_step.get(f"weights/{name}/mean") != last:
                for stat in ("mean", "std", "near_zero"):
                    self._pending.append(Metric(f"weights/{name}/{stat}", float(hist[stat]), now, last))
        # Where the trial ran: a worker process, a Dask worker on another host.
        tags = [
            RunTag(TAG_STATE, result.state),
            RunTag(TAG_HOST, socket.gethostname()),
            RunTag(TAG_PID, str(os.getpid())),
        ]
        if self.number is not None:
            tags.append(RunTag(TAG_RUN_NAME, trial_run_name(self.number, result.state)))
        if result.stop_reason:
            tags.append(RunTag(TAG_STOP_REASON, result.stop_reason[:5000]))
        if result.error:
            tags.append(RunTag(TAG_ERROR, result.error[:5000]))
        self._submit_batches(self._pending, tags)
        self._pending = []
        where = redact_uri(self.uri)
        if artifacts_dir is not None:
            folder = artifacts_dir

            def upload() -> None:
                if folder.exists() and any(folder.iterdir()):
                    fault_point("artifact-write")
                    self.client.log_artifacts(self.run_id, str(folder), "weights")

            self.writer.submit(f"the weights of run {self.run_id} to {where}", upload, self.run_id)
        for file in root_files:
            self.writer.submit(
                f"{file.name} of run {self.run_id} to {where}",
                functools.partial(self.client.log_artifact, self.run_id, str(file)),
                self.run_id,
            )
        if scratch is not None:
            self.writer.submit(
                f"cleaning up {scratch}", functools.partial(shutil.rmtree, scratch, True), always=True
            )
        # The last write of a trial: a run still RUNNING is one whose records may be incomplete.
        status = RUN_STATUS[result.state]
        self.writer.submit(
            f"the end of run {self.run_id} to {where}",
            functools.partial(self.client.set_terminated, self.run_id, status, end_time=now),
            self.run_id,
        )

    def wait(self, timeout: float | None = None) -> None:
        """Wait until this process's writes are done.

        Raises:
            TrackingError: a write failed after its retries (the run is left for resume to mark).
        """
        errors = self.writer.flush(timeout)
        full = [e for e in errors if DISK_FULL_MARK in e]
        if full:
            raise DiskFull(f"the disk is full: {full[0]}")
        if errors:
            raise TrackingError("; ".join(errors[:5]))


def health_answer(base_url: str, timeout: float) -> int | str:
    """GET `<base_url>/health` (MLflow's and Prefect's servers both have it): the HTTP status it
    answered with, or why nothing answered (text)."""
    import urllib.error
    import urllib.request

    # urllib cannot send a URI's user-info; /health answers without credentials anyway.
    url = _USERINFO.sub(r"\1", base_url).rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # a loopback or configured server
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError as exc:  # URLError included
        return str(getattr(exc, "reason", None) or exc)


def _probe_server(uri: str, timeout: float) -> None:
    answer = health_answer(uri, timeout)
    if isinstance(answer, str):
        raise TrackingError(f"cannot reach the MLflow tracking server at {redact_uri(uri)}: {answer}")
    if answer >= 500:
        raise TrackingError(f"the MLflow tracking server at {redact_uri(uri)} answers {answer}")


def run_list_view(cfg: ExperimentConfig, study_run_id: str) -> dict[str, Any]:
    """The run list a study opens with in MLflow's UI: its trials expanded, the searched params and
    the search metric as columns (MLflow's own default shows none of them).

    MLflow keeps a shared view in the experiment tag `mlflow.sharedViewState.<key>` and opens it
    at `#/experiments/<id>?viewStateShareKey=<key>`; the key is the study run's id.
    """
    metric = cfg.search.metric
    columns = [f"params.`{name}`" for name in cfg.search.space]
    columns += [f"metrics.`{metric}`", f"metrics.`best_{metric}`", "metrics.`epochs_trained`"]
    columns += ["attributes.`Duration`"]
    return {
        "selectedColumns": columns,
        "runsExpanded": {study_run_id: True},
        # The trials of this study, flat (their parent is filtered out), best first.
        "searchFilter": f"tags.`{TAG_PARENT}` = '{study_run_id}'",
        "orderByKey": f"metrics.`{metric}`",
        "orderByAsc": cfg.search.mode == "min",
    }


def ui_command(uri: str, experiment_id: str, run_id: str, port: int = 5000, *, study: bool = True) -> str:
    """The exact command (or address) that shows a study's run list in the MLflow UI (the view
    saved under the study's run id), or with `study=False` the page of one run."""
    # MLflow 3.17's UI picks GenAI or model training from the URL (else the browser's last choice),
    # not from the experiment's kind: the address says which.
    path = (
        f"#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={run_id}"
        if study
        else f"#/experiments/{experiment_id}/runs/{run_id}"
    )
    uri = redact_uri(uri)
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/{path}"
    return f"mlflow ui --backend-store-uri {uri} --port {port}   then open http://127.0.0.1:{port}/{path}"


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
