"""The MLflow writer on a real store: writes leave the caller's path, are retried, never dropped,
block when the queue is full, and give up clearly."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from hyperflow.components.names import TAG_ERROR, TAG_STATE
from hyperflow.components.tracking import StudyTracker, TrackingError, TrialLogger, Writer
from hyperflow.components.trial import TrialResult


class Flaky:
    """A real client method that fails its first `failures` calls (a server restarting)."""

    def __init__(self, method: Any, failures: int) -> None:
        self.method = method
        self.failures = failures
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError(f"injected fault {self.calls}")
        return self.method(*args, **kwargs)


PARAMS = {"learning_rate": 0.1}


def trial_run(uri: str, name: str) -> str:
    tracker = StudyTracker(uri)
    exp = tracker.experiment_id(name)
    study = tracker.client.create_run(exp).info.run_id
    return tracker.start_trial(exp, study, number=0, params=PARAMS, seed=1, log_params=False)


def logger_with(uri: str, run_id: str, method: str, failures: int) -> tuple[TrialLogger, Flaky]:
    logger = TrialLogger(uri, run_id, params=PARAMS, flush_seconds=0.0, retries=3, retry_delay=0.0)
    flaky = Flaky(getattr(logger.client, method), failures)
    setattr(logger.client, method, flaky)
    return logger, flaky


def finished(state: str = "completed", **extra: Any) -> TrialResult:
    return TrialResult(params=PARAMS, seed=1, state=state, value=0.5, **{"epochs_trained": 2, **extra})  # type: ignore[arg-type]


def test_final_writes_are_retried_until_they_succeed_and_the_params_go_with_the_metrics(
    sqlite_store: str,
) -> None:
    run_id = trial_run(sqlite_store, "retry-succeeds")
    logger, flaky = logger_with(sqlite_store, run_id, "log_batch", failures=2)
    logger.on_epoch(0, {"val_accuracy": 0.4})
    logger.on_epoch(1, {"val_accuracy": 0.5})
    logger.finish(finished(), "val_accuracy")
    logger.wait()
    run = MlflowClient(sqlite_store).get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags[TAG_STATE] == "completed"
    history = MlflowClient(sqlite_store).get_metric_history(run_id, "val_accuracy")
    assert sorted((m.step, m.value) for m in history) == [(0, 0.4), (1, 0.5)], "nothing queued was dropped"
    assert run.data.metrics["epochs_trained"] == 2
    assert run.data.params == {"learning_rate": "0.1"}
    assert flaky.calls >= 3


def test_finish_hands_everything_over_without_waiting_for_the_store(sqlite_store: str) -> None:
    run_id = trial_run(sqlite_store, "behind")
    logger = TrialLogger(sqlite_store, run_id, params=PARAMS, retries=3, retry_delay=0.0)
    release = threading.Event()
    logger.writer.submit("a write held back", release.wait)  # the store is slow: the queue waits
    logger.on_epoch(0, {"val_accuracy": 0.4})
    logger.finish(finished(), "val_accuracy")  # returns although nothing could be written yet
    assert MlflowClient(sqlite_store).get_run(run_id).info.status == "RUNNING"
    release.set()
    logger.wait()
    run = MlflowClient(sqlite_store).get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["val_accuracy"] == 0.4


def test_the_end_of_the_run_is_retried_too(sqlite_store: str) -> None:
    run_id = trial_run(sqlite_store, "retry-end")
    logger, flaky = logger_with(sqlite_store, run_id, "set_terminated", failures=2)
    logger.finish(finished("failed", error="nan"), "val_accuracy")
    logger.wait()
    run = MlflowClient(sqlite_store).get_run(run_id)
    assert run.info.status == "FAILED" and run.data.tags[TAG_ERROR] == "nan" and flaky.calls == 3


def test_a_store_that_stays_down_fails_clearly_after_the_retries(sqlite_store: str) -> None:
    run_id = trial_run(sqlite_store, "retry-gives-up")
    logger, flaky = logger_with(sqlite_store, run_id, "log_batch", failures=10)
    logger.on_epoch(0, {"val_accuracy": 0.4})
    logger.finish(finished(), "val_accuracy")
    with pytest.raises(
        TrackingError, match=r"could not write metrics and tags of run .* \(after 3 attempts\)"
    ):
        logger.wait()
    assert flaky.calls == 3
    # The end of the run was still written: a run is never left RUNNING by a refused metric write.
    assert MlflowClient(sqlite_store).get_run(run_id).info.status == "FINISHED"


def test_a_full_queue_blocks_the_caller_and_drops_nothing() -> None:
    writer = Writer(maxsize=2, retries=1, retry_delay=0.0)
    release = threading.Event()
    done: list[int] = []
    writer.submit("held", release.wait)  # taken by the thread, which then waits
    started = threading.Event()

    def producer() -> None:
        started.set()
        for i in range(5):
            writer.submit(f"write {i}", lambda i=i: done.append(i))

    thread = threading.Thread(target=producer, daemon=True)
    thread.start()
    started.wait()
    thread.join(timeout=0.5)
    assert thread.is_alive(), "the producer went on although the queue was full"
    assert done == []
    release.set()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert writer.flush() == []
    assert done == [0, 1, 2, 3, 4], "every write, in the order given"


def test_a_prepared_store_syncs_at_checkpoints_and_other_sqlite_files_keep_their_setting(
    tmp_path: Path,
) -> None:
    """synchronous=NORMAL on MLflow's connections to our WAL stores (a commit does not wait for the
    disk), and nothing changed on any other SQLite database the process opens."""
    import sqlalchemy

    from hyperflow.components.tracking import prepare_local_store

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    prepare_local_store(uri)
    client = MlflowClient(uri)
    client.create_experiment("checkpoints")
    store = client._tracking_client.store
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    other = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'other.db'}")
    with other.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # SQLite's default, FULL
    other.dispose()


def test_waiting_for_the_first_writes_returns_once_they_are_done_not_before() -> None:
    """What the search loop waits for before it records a trial: the writes queued before that
    trial started (the writer lags one trial behind at most), not the ones queued after."""
    writer = Writer(retries=1, retry_delay=0.0)
    gate, started = threading.Event(), threading.Event()
    writer.submit("first", lambda: (started.set(), gate.wait(30)))
    before = writer.submitted
    writer.submit("queued after", lambda: None)
    waiting = threading.Thread(target=writer.wait_for, args=(before,), daemon=True)
    waiting.start()
    assert started.wait(30)
    waiting.join(timeout=0.5)
    assert waiting.is_alive(), "it returned before the write it waits for was done"
    gate.set()
    waiting.join(timeout=30)
    assert not waiting.is_alive()
    assert writer.flush() == []


def _servers_of(home: Path) -> list[int]:
    """Processes started with this Prefect home (the command's own Prefect server)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            cmdline = " ".join(proc.cmdline())
            serves = "create_app" in cmdline or "hyperflow.flows.prefect_server" in cmdline
            if proc.environ().get("PREFECT_HOME") == str(home) and serves:
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


@pytest.mark.slow
def test_a_trial_without_a_model_logs_no_parameter_count(tmp_path: Path) -> None:
    tracker = StudyTracker(f"sqlite:///{tmp_path / 'm.db'}")
    experiment = tracker.experiment_id("counts")
    for count in (0, 42):
        run_id = tracker.client.create_run(experiment).info.run_id
        result = TrialResult(
            params={}, seed=0, state="completed", value=1.0, param_count=count, epochs_trained=1
        )
        logger = TrialLogger(tracker.uri, run_id)
        logger.finish(result, "score", None)
        logger.wait()
        metrics = tracker.client.get_run(run_id).data.metrics
        assert ("param_count" in metrics) is (count > 0), "0 means no model was seen, not a model of 0"
        assert metrics.get("param_count", 42) == 42 and metrics["epochs_trained"] == 1


def _four_trial_study(tmp_path: Path, fault: str) -> tuple[Any, Path, Path, dict[str, str]]:
    """Four random trials of 8 epochs as a config file, and the environment of a command with
    Prefect's own ephemeral server (its home under tmp_path) and `HYPERFLOW_FAULT=fault`."""
    import os

    from conftest import config_file

    cfg, config = config_file(
        tmp_path, model={"max_epochs": 8, "hidden_layers": [32]}, search={"n_trials": 4, "strategy": "random"}
    )
    home = tmp_path / "prefect-home"  # the command's own server (Prefect's ephemeral mode)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(home), HYPERFLOW_FAULT=fault)
    return cfg, config, home, env


def _assert_every_epoch_written(client: MlflowClient, exps: list[str], trials: int, at_least: int) -> None:
    """`trials` trial runs, none RUNNING, each with every epoch's metrics it trained (steps 0..n-1),
    `at_least` epochs in all: nothing queued was lost when the study was stopped."""
    runs = client.search_runs(exps, "tags.`hyperflow.role` = 'trial'")
    assert len(runs) == trials and all(r.info.status != "RUNNING" for r in runs)
    logged = 0
    for run in runs:
        epochs = int(run.data.metrics["epochs_trained"])
        for name in ("train_loss", "val_loss", "val_accuracy"):
            steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, name))
            assert steps == list(range(epochs)), f"{name} of {run.info.run_name}"
        logged += epochs
    assert logged >= at_least, "every epoch logged before the stop was written"


def test_sigterm_mid_study_loses_no_per_epoch_metric_and_leaves_no_server(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    # SIGTERM at the 12th epoch the process logs: trial 0's 8, then the 4th of trial 1.
    cfg, config, home, env = _four_trial_study(tmp_path, fault="epoch-logged:12:TERM")
    hyperflow = str(Path(sys.executable).parent / "hyperflow")
    done = subprocess.run(
        [hyperflow, "run", str(config)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 128 + signal.SIGTERM, done.stderr[-3000:]
    assert _servers_of(home) == [], "the command's Prefect server outlived it"
    client = MlflowClient(cfg.tracking.uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    _assert_every_epoch_written(client, exps, trials=2, at_least=12)  # before the signal


def test_a_closed_terminal_mid_study_loses_no_per_epoch_metric_and_leaves_no_server(tmp_path: Path) -> None:
    """The window closes (or the SSH session drops) while a study trains: SIGHUP, and a terminal
    that fails every write from then on. The study stops as for SIGTERM: runs ended, every epoch
    logged so far written, the server gone, and the command's exit code says SIGHUP."""
    import os
    import signal
    import sys

    import psutil
    from servers import Terminal, poll

    # The command stops itself (SIGSTOP) at the 12th epoch it logs, the 4th of trial 1; the
    # terminal is closed while it is stopped, so the hangup lands at that point.
    cfg, config, home, env = _four_trial_study(tmp_path, fault="epoch-logged:12:STOP")
    terminal = Terminal(
        [str(Path(sys.executable).parent / "hyperflow"), "run", str(config)], cwd=tmp_path, env=env
    )
    try:
        poll(
            "the command to stop at its 12th epoch",
            lambda: psutil.Process(terminal.proc.pid).status() == psutil.STATUS_STOPPED,
            300,
            terminal.proc,  # type: ignore[arg-type]
            detail=terminal.text,
        )
        terminal.hang_up()
        os.kill(terminal.proc.pid, signal.SIGCONT)
        rc = terminal.proc.wait(timeout=120)
    finally:
        terminal.hang_up()
        if terminal.proc.poll() is None:
            os.killpg(terminal.proc.pid, signal.SIGKILL)
    assert rc == 128 + signal.SIGHUP, terminal.text()[-3000:]
    assert "trials" in terminal.text(), "the progress was on the terminal before it closed"
    assert _servers_of(home) == [], "the command's Prefect server outlived it"
    client = MlflowClient(cfg.tracking.uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    (study,) = client.search_runs(exps, "tags.`hyperflow.role` = 'study'")
    assert study.info.status == "KILLED", "ended as interrupted: resumable"
    _assert_every_epoch_written(client, exps, trials=2, at_least=12)  # before the hangup


def test_under_nohup_a_hangup_leaves_the_study_running_to_its_end(tmp_path: Path) -> None:
    """`nohup hyperflow run ...` ignores SIGHUP, and the study must not take that back."""
    import os
    import signal
    import subprocess
    import sys

    from conftest import config_file

    cfg, config = config_file(
        tmp_path, model={"max_epochs": 4, "hidden_layers": [16]}, search={"n_trials": 2}
    )
    env = {**os.environ, "HYPERFLOW_FAULT": "epoch-logged:3:HUP"}  # a SIGHUP while trial 0 trains

    def ignore_hangups() -> None:  # what nohup does before it runs the command
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    done = subprocess.run(
        [str(Path(sys.executable).parent / "hyperflow"), "run", str(config)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=ignore_hangups,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(cfg.tracking.uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    (study,) = client.search_runs(exps, "tags.`hyperflow.role` = 'study'")
    assert study.info.status == "FINISHED"
    assert study.data.metrics["n_trials_completed"] + study.data.metrics["n_trials_pruned"] == 2


def _schema(db: Path) -> tuple[list[tuple[str, str, list[str]]], list[tuple[str]], str]:
    """Tables and indexes with their columns and constraints (in any order: alembic's batch
    migrations recreate a table's constraints in set order), the migration version, integrity."""
    import sqlite3

    with sqlite3.connect(db) as con:
        rows = con.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name"
        ).fetchall()
        objects = [
            (kind, name, sorted(p.strip() for p in (sql or "").split(", \n"))) for kind, name, sql in rows
        ]
        version = con.execute("SELECT version_num FROM alembic_version").fetchall()
        (check,) = con.execute("PRAGMA integrity_check").fetchone()
    return objects, version, check


def test_a_new_local_store_has_mlflows_own_schema_and_a_killed_creation_leaves_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first store is migrated and leaves a template in the cache; the next is copied from it.
    Both are MLflow's own schema, each with its own Default experiment."""
    from hyperflow.components import tracking
    from hyperflow.components.tracking import _store_template, prepare_local_store

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    template = _store_template()
    assert template is not None and not template.exists()

    def default_location(db: Path) -> str:
        return MlflowClient(f"sqlite:///{db}").get_experiment("0").artifact_location

    # MLflow's own creation, for comparison.
    theirs = tmp_path / "theirs.db"
    MlflowClient(f"sqlite:///{theirs}").search_experiments(max_results=1)
    for folder in ("first", "second"):  # migrated; then copied from the template, elsewhere
        where = tmp_path / folder
        where.mkdir()
        monkeypatch.chdir(where)  # MLflow puts the Default experiment's artifacts under the working folder
        theirs_here = where / "theirs.db"
        MlflowClient(f"sqlite:///{theirs_here}").search_experiments(max_results=1)
        # What a creation killed half-way leaves: a partial file of a dead process, never the store.
        ours = where / "mlflow.db"
        (where / "mlflow.db.creating-999999999").write_bytes(b"half a database")
        prepare_local_store(f"sqlite:///{ours}")
        objects, version, check = _schema(ours)
        assert (objects, version) == _schema(theirs)[:2], f"{folder}: the same tables, indexes and version"
        assert check == "ok"
        assert not list(where.glob("mlflow.db.creating-*")), "the killed creation's file is gone"
        assert default_location(ours) == default_location(theirs_here), folder
        assert template.is_file(), "the first creation kept a template"
        client = MlflowClient(f"sqlite:///{ours}")
        run = client.create_run(client.create_experiment("e"))
        client.log_metric(run.info.run_id, "m", 1.0)
        assert client.get_run(run.info.run_id).data.metrics == {"m": 1.0}

        def migrating(building: Path) -> None:
            raise AssertionError("the second store was migrated, not copied")

        monkeypatch.setattr(tracking, "_migrate_unsynced", migrating)
    import sqlite3

    with sqlite3.connect(template) as con:
        assert con.execute("SELECT count(*) FROM experiments").fetchone() == (0,), (
            "no Default in the template"
        )


_WRITE_RUNS = """
import os, sys
from mlflow.tracking import MlflowClient
from hyperflow.components.tracking import prepare_local_store
uri = sys.argv[1]
prepare_local_store(uri)
client = MlflowClient(uri)
experiment = client.create_experiment(sys.argv[2])
for i in range(int(sys.argv[3])):
    client.log_metric(client.create_run(experiment).info.run_id, "m", float(i))
if sys.argv[4] == "command":
    from hyperflow.flows.cli import _leave
    _leave(0)  # how `hyperflow` exits: atexit handlers, then os._exit
os._exit(0)  # a process killed: SQLite closes nothing
"""


@pytest.mark.slow
def test_the_store_file_alone_holds_every_run_and_a_deleted_store_stays_deleted(tmp_path: Path) -> None:
    """SQLite's write-ahead log (WAL mode) is folded back into mlflow.db when the command exits,
    and a store deleted without its log does not come back from it (nor come out malformed)."""
    import shutil
    import sqlite3
    import subprocess
    import sys

    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"

    def write(experiment: str, runs: int, how: str) -> None:
        done = subprocess.run(
            [sys.executable, "-c", _WRITE_RUNS, uri, experiment, str(runs), how],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-3000:]

    def runs_in(path: Path) -> dict[str, int]:
        with sqlite3.connect(path) as con:
            assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            rows = con.execute(
                "SELECT e.name, count(r.run_uuid) FROM experiments e JOIN runs r"
                " ON r.experiment_id = e.experiment_id GROUP BY e.name"
            ).fetchall()
        return dict(rows)

    write("first", 30, "command")
    alone = tmp_path / "copy" / "mlflow.db"  # the file alone, as a backup or an upload takes it
    alone.parent.mkdir()
    shutil.copyfile(db, alone)
    assert runs_in(alone) == {"first": 30}

    write("second", 30, "killed")  # its runs are in the log only
    assert Path(f"{db}-wal").stat().st_size > 0
    db.unlink()  # `rm mlflow.db`: the log stays
    write("third", 1, "command")
    assert runs_in(db) == {"third": 1}, "the deleted store's runs came back from its log"


@pytest.mark.slow
def test_a_tracking_server_restarted_mid_trial_loses_no_per_epoch_metric(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real MLflow server is stopped while a trial's metric write is in flight and started again
    on the same port and store: the writer retries, and every epoch's metrics are there."""
    from servers import start_mlflow_server, stop

    # MLflow's client gives up quickly on a refused connection: our writer's retries are tested.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    home = tmp_path / "server"
    server = start_mlflow_server(home)
    epochs, names = 10, ("train_loss", "val_loss", "val_accuracy")
    try:  # the server is stopped whatever fails from here on
        port = int(server.url.rsplit(":", 1)[1])
        run_id = trial_run(server.url, "restart")
        logger = TrialLogger(
            server.url, run_id, params=PARAMS, flush_seconds=0.0, retries=12, retry_delay=0.2
        )
        attempted_while_down = threading.Event()
        down = threading.Event()
        log_batch = logger.client.log_batch

        def watched(*args: Any, **kwargs: Any) -> Any:
            if down.is_set():
                attempted_while_down.set()
            return log_batch(*args, **kwargs)

        logger.client.log_batch = watched  # type: ignore[method-assign]
        for epoch in range(epochs):
            if epoch == 5:
                logger.writer.flush()  # epochs 0-4 are in; the server goes down mid-trial
                assert server.proc is not None
                stop(server.proc)
                down.set()
            logger.on_epoch(epoch, {name: 0.1 * epoch + i for i, name in enumerate(names)})
        assert attempted_while_down.wait(60), "a write was tried while the server was down"
        server = start_mlflow_server(home, port=port)  # the same port and store
        down.clear()
        logger.finish(finished(epochs_trained=epochs), "val_accuracy")
        logger.wait()
    finally:
        if server.proc is not None:
            stop(server.proc)
    # Read from the store itself: the server is gone.
    store = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    assert store.get_run(run_id).info.status == "FINISHED"
    for name in names:
        steps = sorted(m.step for m in store.get_metric_history(run_id, name))
        assert steps == list(range(epochs)), f"{name}: {steps}"
