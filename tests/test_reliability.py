"""Faults: killed and resumed studies, signals, time budgets, failing trials, a server outage."""

from __future__ import annotations

import collections
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from conftest import config_file, small_config
from mlflow.tracking import MlflowClient
from servers import poll, start_mlflow_server, stop

from hyperflow.components.config import validate_config
from hyperflow.components.resume import recorded_trials
from hyperflow.components.search import make_strategy
from hyperflow.components.search._lookahead import Lookahead, Outcome
from hyperflow.components.tracking import StudyTracker

pytestmark = pytest.mark.slow

HYPERFLOW = str(Path(sys.executable).parent / "hyperflow")


def write_config(folder: Path, **sections: Any) -> Path:
    return config_file(folder, **sections)[1]


def runs_of(uri: str) -> list:
    client = MlflowClient(uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps, "") if exps else []


def peek(uri: str) -> list[tuple[str, str | None, str | None]]:
    """(status, role, state) of every run, read while another process writes the store.

    A SQLite file is read with sqlite3 directly: an MlflowClient opening a store that the search
    is still creating would race it to create the tables.
    """
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.exists():
            return []
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
                rows = db.execute(
                    "select r.status, "
                    "(select value from tags t where t.run_uuid = r.run_uuid and t.key = 'hyperflow.role'), "
                    "(select value from tags t where t.run_uuid = r.run_uuid and t.key = 'hyperflow.state') "
                    "from runs r"
                ).fetchall()
        except sqlite3.Error:
            return []
        return [(str(a), b, c) for a, b, c in rows]
    try:
        return [
            (r.info.status, r.data.tags.get("hyperflow.role"), r.data.tags.get("hyperflow.state"))
            for r in runs_of(uri)
        ]
    except Exception:
        return []


def epoch_logged(uri: str) -> bool:
    """Whether a trial has logged a per-epoch metric: it is training, past its set-up."""
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
                (n,) = db.execute("select count(*) from metrics where key = 'train_loss'").fetchone()
        except sqlite3.Error:
            return False
        return bool(n)
    try:
        return any("train_loss" in r.data.metrics for r in runs_of(uri))
    except Exception:
        return False


class RefusingServer:
    """A stand-in on a stopped server's port that answers every request 503 and counts them.

    It shows that the search really tried to write while the tracking server was down.
    """

    def __init__(self, port: int) -> None:
        import http.server
        import threading

        outer = self
        self.requests = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def _refuse(self) -> None:
                outer.requests += 1
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = _refuse

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def count_state(uri: str, state: str) -> int:
    return sum(s == state for _, _, s in peek(uri))


def trial_running(uri: str) -> bool:
    return any(status == "RUNNING" and role == "trial" for status, role, _ in peek(uri))


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


# Where a kill -9 lands (HYPERFLOW_FAULT, see hyperflow.components.faults): right after the
# study run is created, between a trial run's creation and its params (the third trial), between
# trials (after the second), while the best model is exported.
KILL_POINTS = ["study-created", "trial-created:3", "between-trials:2", "model-export"]


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_kill_at_any_instant_resumes_to_exactly_n_trials(
    prefect_server, tmp_path: Path, point: str
) -> None:  # type: ignore[no-untyped-def]
    n_trials = 4
    config = write_config(
        tmp_path,
        model={"max_epochs": 3, "hidden_layers": [32]},
        search={
            "strategy": "bayes",
            "n_trials": n_trials,
            "bayes": {"surrogate": "ET", "n_initial_points": 2},
            "space": {
                "learning_rate": {"low": 0.01, "high": 0.2, "log": True},
                "batch_size": {"choices": [32, 64]},
            },
        },
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    scratch = tmp_path / "tmp"  # the runs' temp folder: what a kill leaves there is swept at the next start
    scratch.mkdir()
    killed = subprocess.Popen(
        [HYPERFLOW, "run", str(config)],
        cwd=tmp_path,
        env={**os.environ, "HYPERFLOW_FAULT": point, "TMPDIR": str(scratch)},
        start_new_session=True,
        stderr=subprocess.PIPE,
    )
    try:
        rc = killed.wait(timeout=300)
    finally:
        if group_alive(killed.pid):
            os.killpg(killed.pid, signal.SIGKILL)
    assert rc == -signal.SIGKILL, (killed.stderr.read() if killed.stderr else b"")[-3000:]
    before = runs_of(uri)
    (study,) = [r for r in before if r.data.tags.get("hyperflow.role") == "study"]
    assert study.info.status == "RUNNING"
    # A trial is recorded once its run has ended (its last write; the writes of the trial that had
    # just finished may still have been queued when the kill came: that one is asked again).
    trained_before = {
        r.info.run_id
        for r in before
        if r.data.tags.get("hyperflow.role") == "trial" and r.info.status != "RUNNING"
    }

    # What a fresh strategy, told the recorded trials, asks next: what the resumed study must ask.
    cfg = validate_config(yaml.safe_load(config.read_text()))
    tracker = StudyTracker(uri)
    recorded = recorded_trials(tracker, cfg, tracker.client.get_run(study.info.run_id))
    left_running = [t for t in recorded if t.status == "RUNNING"]
    next_number = max((t.number for t in recorded), default=-1) + 1
    # With lookahead (the default) suggestion k comes from the trials before k - n_parallel, told
    # in number order, the recorded ones pending: what a fresh strategy given the records asks.
    finished = [t for t in recorded if t.status != "RUNNING" and t.state in ("completed", "pruned", "failed")]
    fresh = Lookahead(
        make_strategy(cfg),
        cfg.search.n_parallel,
        start=next_number,
        replay={t.number: t.params for t in finished},
    )
    for t in finished:
        fresh.tell(t.number, Outcome(t.params, t.value if t.state != "failed" else None, t.state == "pruned"))
    if left_running:
        expected_next = left_running[0].params
    else:
        expected_next = fresh.start().take(next_number)[1]
        fresh.close()

    left = sorted(scratch.glob(f"hyperflow-*-{killed.pid}-*"))
    if point == "model-export":
        assert [p.name.split("-")[1] for p in left] == ["model"], left
    done = subprocess.run(
        [HYPERFLOW, "run", str(config), "--resume"],
        cwd=tmp_path,
        env={**os.environ, "TMPDIR": str(scratch)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert not any(p.exists() for p in left), "the killed run's scratch folders were swept"
    assert study.info.run_id in done.stdout
    after = runs_of(uri)
    studies = [r for r in after if r.data.tags.get("hyperflow.role") == "study"]
    assert [s.info.run_id for s in studies] == [study.info.run_id]
    assert studies[0].info.status == "FINISHED"
    assert studies[0].data.params["search.n_trials"] == str(n_trials)  # written on resume if it was lost
    trials = [r for r in after if r.data.tags.get("hyperflow.role") == "trial"]
    assert all(r.info.status != "RUNNING" for r in trials)
    finished = [r for r in trials if r.data.tags["hyperflow.state"] in ("completed", "pruned", "failed")]
    assert len(finished) == n_trials
    per_params = collections.Counter(r.data.tags["hyperflow.params"] for r in finished)
    assert max(per_params.values()) == 1, "a finished trial was trained twice"
    assert not any(
        r.info.run_id in trained_before for r in trials if r.data.tags["hyperflow.state"] == "interrupted"
    )
    numbers = sorted(int(r.data.tags["hyperflow.trial"]) for r in trials)
    assert numbers == list(range(len(numbers))), "trial numbers continue without gaps or repeats"
    resumed = {t.number: t for t in recorded_trials(tracker, cfg, tracker.client.get_run(study.info.run_id))}
    if point.startswith("trial-created"):
        # created, params only in its creation tag, never trained (before it, at most the trial
        # whose writes were still queued)
        (lost,) = [t for t in left_running if t.number == int(point.split(":")[1]) - 1]
        assert len(left_running) <= 2, left_running
        assert tracker.client.get_run(lost.run_id).data.tags["hyperflow.state"] == "interrupted"
    if next_number < len(resumed):
        assert resumed[next_number].params == expected_next, "the resumed search asked what a fresh one would"
    if point == "model-export":
        assert len(trials) == n_trials, "nothing was trained after the kill"
    completed = [r for r in finished if r.data.tags["hyperflow.state"] == "completed"]
    best = max(r.data.metrics["val_accuracy"] for r in completed)
    assert studies[0].data.metrics["best_val_accuracy"] == pytest.approx(best)
    versions = tracker.client.search_model_versions(f"name = '{cfg.name}'")
    assert len(versions) == 1, "the best model was registered once"


def resume_cli(result: Any, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`hyperflow resume` of a study that `run_search` returned, on its store."""
    return subprocess.run(
        [HYPERFLOW, "resume", result.study_run_id, "--tracking-uri", result.tracking_uri, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_resume_extends_a_finished_study(prefect_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from hyperflow.flows.search_flow import run_search

    cfg = small_config(tmp_path, model={"max_epochs": 2})
    result = run_search(cfg)
    client = MlflowClient(result.tracking_uri)
    # Fewer trials than it has (or as many, or no new total at all) would only re-test and
    # re-register the same best model.
    for new_total in (["--n-trials", "2"], ["--n-trials", "3"], []):
        refused = resume_cli(result, tmp_path, *new_total)
        assert refused.returncode == 2, refused.stderr[-3000:]
        assert "the study already has 3 finished trials" in refused.stderr
        assert "Traceback" not in refused.stderr
    assert len(client.search_model_versions(f"name = '{cfg.name}'")) == 1
    assert client.get_run(result.study_run_id).info.status == "FINISHED"
    more = resume_cli(result, tmp_path, "--n-trials", "4")
    assert more.returncode == 0, more.stderr[-3000:]
    extended = MlflowClient(result.tracking_uri).get_run(result.study_run_id)
    assert extended.info.status == "FINISHED"
    counts = extended.data.metrics
    assert counts["n_trials_completed"] + counts["n_trials_pruned"] + counts["n_trials_failed"] == 4


def test_extending_a_study_that_finds_no_better_trial_registers_no_second_version(
    prefect_server, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from hyperflow.flows.search_flow import run_search

    # A grid in the listed order: three trials that train, then one that diverges (fails).
    space = {"learning_rate": {"choices": [0.1, 0.05, 0.2, 1e5]}}
    cfg = small_config(tmp_path, model={"max_epochs": 2}, search={"strategy": "grid", "space": space})
    result = run_search(cfg)
    client = MlflowClient(result.tracking_uri)
    (first,) = client.search_model_versions(f"name = '{cfg.name}'")
    more = resume_cli(result, tmp_path, "--n-trials", "4")
    assert more.returncode == 0, more.stderr[-3000:]
    study = client.get_run(result.study_run_id)
    assert study.info.status == "FINISHED"
    assert study.data.metrics["n_trials_failed"] == 1, "the fourth trial diverged"
    assert study.data.tags["hyperflow.champion_trial"] == str(result.champion_trial)
    assert [v.version for v in client.search_model_versions(f"name = '{cfg.name}'")] == [first.version]
    assert f"version {first.version}; champion unchanged (the study's champion is still trial" in more.stdout
    assert "test_accuracy" in more.stdout, "the champion was tested again for the summary"


def test_sigterm_ends_every_run_and_every_process_and_run_resume_continues(tmp_path: Path) -> None:
    # Prefect's ephemeral mode on purpose: its temporary server is a child process that must go too.
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    config = write_config(
        tmp_path,
        model={"max_epochs": 400, "hidden_layers": [32]},
        search={"n_trials": 6, "n_parallel": 2},
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # To a file, not a pipe: a pipe nobody reads until the end would block the command once full.
    log = tmp_path / "stderr.txt"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [HYPERFLOW, "run", str(config)], cwd=tmp_path, start_new_session=True, stderr=err, env=env
        )
    try:
        poll("a trial training", lambda: epoch_logged(uri), 300, proc)
        # Prefect's server leads a session of its own (a Ctrl-C at the terminal is the command's to
        # handle): found as the command's child, it must go too.
        servers = [
            p
            for p in psutil.Process(proc.pid).children()
            if "hyperflow.flows.prefect_server" in " ".join(p.cmdline())
        ]
        assert servers, "the command's Prefect server"
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running 60 s after SIGTERM: {log.read_text()[-3000:]}")
        took = time.monotonic() - sent
        poll("the process group to be gone", lambda: not group_alive(proc.pid), 10)
        poll("the Prefect server to be gone", lambda: not any(_alive(p) for p in servers), 10)
    finally:
        if group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
    assert rc == 143, log.read_text()[-2000:]
    assert took < 20, f"took {took:.1f} s to stop: {log.read_text()[-2000:]}"
    runs = runs_of(uri)
    statuses = collections.Counter((r.data.tags.get("hyperflow.role"), r.info.status) for r in runs)
    assert ("study", "KILLED") in statuses
    assert not any(status == "RUNNING" for (_, status) in statuses)
    assert statuses[("trial", "KILLED")] >= 1
    (study,) = [r for r in runs if r.data.tags.get("hyperflow.role") == "study"]

    # `run --resume` finds that study by its config hash and finishes it (n_trials is not hashed).
    done = subprocess.run(
        [
            HYPERFLOW,
            "run",
            str(config),
            "--resume",
            "--set",
            "search.n_trials=1",
            "--set",
            "search.n_parallel=1",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    after = MlflowClient(uri).get_run(study.info.run_id)
    assert after.info.status == "FINISHED"
    assert after.data.metrics["n_trials_completed"] == 1


_HOLD_THE_QUEUE_LOCK = """
import sys
import time
from pathlib import Path

from prefect import task

from prefect.task_runners import ProcessPoolTaskRunner

from hyperflow.flows.slot_runner import end_pool_workers


def hold_the_queue_lock(flag: str) -> None:
    # In the worker: take the write lock of Prefect's message queue to this process, as a worker
    # ended in the middle of sending a log or an event holds it, then wait to be ended.
    from prefect.logging import handlers

    queue = handlers._api_log_sink.args[0]
    queue._wlock.acquire()
    Path(flag).write_text("held")
    time.sleep(600)


if __name__ == "__main__":
    flag = Path(sys.argv[1])
    with ProcessPoolTaskRunner(max_workers=1) as runner:
        runner.submit(task(hold_the_queue_lock, name="hold"), {"flag": str(flag)})
        deadline = time.monotonic() + 120
        while not flag.exists():
            assert time.monotonic() < deadline, "the worker never took the lock"
            time.sleep(0.1)
        end_pool_workers(runner)  # what a stop request does to the trials' workers
    print("closed", flush=True)
"""


@pytest.mark.slow
def test_a_worker_ended_while_it_held_prefects_queue_lock_does_not_hang_the_exit(
    prefect_server, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "hold.py"
    script.write_text(_HOLD_THE_QUEUE_LOCK)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "held")],
        cwd=tmp_path,
        env={**os.environ, "PREFECT_API_URL": prefect_server.url},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"the process did not exit after closing its runner: {out[-3000:]}")
    assert proc.returncode == 0, out[-3000:]
    assert "closed" in out


def test_study_time_budget_ends_cleanly_with_the_best_so_far(prefect_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from hyperflow.flows.search_flow import run_search

    cfg = small_config(tmp_path, model={"max_epochs": 60}, search={"n_trials": 500, "timeout_minutes": 0.12})
    started = time.monotonic()
    result = run_search(cfg)
    assert time.monotonic() - started < 60
    assert result.status == "FINISHED"
    assert result.stop_reason and "timeout_minutes" in result.stop_reason
    assert result.n_completed >= 1 and result.n_completed < 500
    assert result.model_version is not None
    runs = runs_of(result.tracking_uri)
    assert not any(r.info.status == "RUNNING" for r in runs)
    states = collections.Counter(
        r.data.tags.get("hyperflow.state") for r in runs if r.data.tags.get("hyperflow.role") == "trial"
    )
    assert set(states) <= {"completed", "interrupted"}


def test_trial_time_budget_fails_slow_trials(prefect_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from hyperflow.flows.search_flow import run_search

    cfg = small_config(
        tmp_path, model={"max_epochs": 5000}, search={"n_trials": 2, "trial_timeout_minutes": 0.005}
    )
    result = run_search(cfg)
    assert result.status == "FAILED"
    assert result.n_failed == 2
    trials = [r for r in runs_of(result.tracking_uri) if r.data.tags.get("hyperflow.role") == "trial"]
    assert all(
        r.info.status == "FAILED" and "trial_timeout_minutes" in r.data.tags["hyperflow.error"]
        for r in trials
    )


def test_nan_trials_fail_and_max_failures_ends_the_study(prefect_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from hyperflow.flows.search_flow import run_search

    # A learning rate this large makes the loss explode: every trial fails, the third ends the study.
    cfg = small_config(
        tmp_path,
        model={"max_epochs": 3},
        search={
            "n_trials": 10,
            "max_failures": 2,
            "space": {"learning_rate": {"low": 1e5, "high": 1e6, "log": True}},
        },
    )
    result = run_search(cfg)
    assert result.status == "FAILED"
    assert result.n_failed == 3 and result.n_completed == 0
    assert result.stop_reason and "max_failures" in result.stop_reason
    assert len(result.errors) == 3
    client = MlflowClient(result.tracking_uri)
    study = client.get_run(result.study_run_id)
    assert study.info.status == "FAILED"
    assert study.data.metrics["n_trials_failed"] == 3
    trials = [r for r in runs_of(result.tracking_uri) if r.data.tags.get("hyperflow.role") == "trial"]
    assert all(r.info.status == "FAILED" and r.data.tags["hyperflow.state"] == "failed" for r in trials)
    assert all(r.data.tags["hyperflow.error"] for r in trials)


def test_cli_exits_nonzero_with_a_summary_when_every_trial_fails(prefect_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = write_config(
        tmp_path,
        model={"max_epochs": 2},
        search={"n_trials": 2, "space": {"learning_rate": {"low": 1e5, "high": 1e6}}},
    )
    proc = subprocess.run(
        [HYPERFLOW, "run", str(config)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 1
    assert "FAILED" in proc.stdout
    assert proc.stdout.count("error") >= 2
    assert "Traceback" not in proc.stderr


def test_a_tracking_server_outage_loses_nothing(prefect_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = start_mlflow_server(tmp_path / "server")
    port = int(server.url.rsplit(":", 1)[1])
    config = write_config(
        tmp_path,
        model={"max_epochs": 150, "hidden_layers": [32]},
        search={"n_trials": 2},
        tracking={"uri": server.url},
    )
    # MLflow's HTTP client retries with backoff; a shorter one (whole seconds) keeps the test short.
    env = {**os.environ, "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
    proc = subprocess.Popen(
        [HYPERFLOW, "run", str(config)], cwd=tmp_path, start_new_session=True, stderr=subprocess.PIPE, env=env
    )
    try:
        poll("a trial logging to the server", lambda: epoch_logged(server.url), 240, proc)
        stop(server.proc)
        refusing = RefusingServer(port)
        try:
            # The outage lasts until the search has failed to write a few times.
            poll("writes refused during the outage", lambda: refusing.requests >= 3, 120, proc)
        finally:
            refusing.close()
        server = start_mlflow_server(tmp_path / "server", port=port)
        rc = proc.wait(timeout=400)
        assert rc == 0, (proc.stderr.read() if proc.stderr else b"")[-3000:]
        client = MlflowClient(server.url)
        trials = [r for r in runs_of(server.url) if r.data.tags.get("hyperflow.role") == "trial"]
        assert len(trials) == 2
        for run in trials:
            assert run.info.status == "FINISHED"
            epochs = int(run.data.metrics["epochs_trained"])
            for name in ("val_loss", "val_accuracy", "train_loss"):
                steps = {m.step for m in client.get_metric_history(run.info.run_id, name)}
                assert steps == set(range(epochs)), f"{name} of trial {run.data.tags['hyperflow.trial']}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        stop(server.proc)


def test_trials_that_raise_or_give_nan_fail_and_the_search_goes_on(prefect_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from hyperflow import search

    def train(params: dict[str, Any], report: Any) -> float:
        quality = params["quality"]
        for epoch in range(3):
            if quality == 0.3 and epoch == 1:
                raise RuntimeError("injected fault in trial with quality 0.3")
            value = float("nan") if quality == 0.4 else quality * (epoch + 1) / 3
            report(epoch, value)
        return value

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = search(
        {
            "name": "faults",
            "model": {"max_epochs": 3},
            "search": {
                "strategy": "grid",
                "metric": "score",
                "n_trials": 5,
                "space": {"quality": {"choices": [0.5, 0.3, 0.9, 0.4, 0.7]}},
            },
            "early_stopping": {"kind": "none"},
        },
        {"tracking.uri": uri},
        objective=train,
    )
    assert result.status == "FINISHED"
    assert (result.n_completed, result.n_failed) == (3, 2)
    assert result.best_params == {"quality": 0.9}
    client = MlflowClient(uri)
    study = client.get_run(result.study_run_id)
    assert study.data.metrics["n_trials_failed"] == 2
    runs = {r.data.params["quality"]: r for r in runs_of(uri) if r.data.tags.get("hyperflow.role") == "trial"}
    for quality, fragment in (("0.3", "injected fault"), ("0.4", "nan")):
        run = runs[quality]
        assert run.info.status == "FAILED"
        assert run.data.tags["hyperflow.state"] == "failed"
        assert fragment in run.data.tags["hyperflow.error"].lower()
    assert study.data.tags["hyperflow.best_run_id"] == runs["0.9"].info.run_id

    with get_client(sync_client=True) as prefect:
        flow_run_id = study.data.tags["hyperflow.flow_run_id"]
        tasks = prefect.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    trial_tasks = {t.name: t.state for t in tasks if t.name.startswith("trial-")}
    assert len(trial_tasks) == 5
    assert sum(state is not None and state.is_failed() for state in trial_tasks.values()) == 2
    assert sum(state is not None and state.is_completed() for state in trial_tasks.values()) == 3


def test_ctrl_c_stops_the_trial_within_a_batch_and_kills_the_runs(prefect_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import threading

    from hyperflow.flows.search_flow import STOP, SearchInterrupted, run_search

    cfg = small_config(tmp_path, model={"max_epochs": 5000}, search={"n_trials": 3})
    uri = cfg.tracking.uri
    sent: list[float] = []

    def interrupt_when_training() -> None:
        poll("a trial training", lambda: epoch_logged(uri), 120)
        sent.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_when_training, daemon=True).start()
    with pytest.raises(SearchInterrupted):
        run_search(cfg)
    stopped = time.monotonic() - sent[0]
    assert STOP.signum == signal.SIGINT
    assert stopped < 10, f"took {stopped:.1f} s to stop"
    runs = runs_of(uri)
    assert {(r.data.tags.get("hyperflow.role"), r.info.status) for r in runs} == {
        ("study", "KILLED"),
        ("trial", "KILLED"),
    }
    (trial,) = [r for r in runs if r.data.tags.get("hyperflow.role") == "trial"]
    assert trial.data.tags["hyperflow.state"] == "interrupted"
    assert trial.data.metrics["epochs_trained"] < 5000


@pytest.mark.parametrize(
    ("fault", "rc", "status"),
    [
        ("between-trials:2:INT", 130, "KILLED"),  # during the trials: they stop, runs end KILLED
        ("model-export:1:INT", 0, "FINISHED"),  # after the last trial: the finish completes
        ("model-export:1:INT:2", 130, "KILLED"),  # pressed twice then: it leaves, resumable
    ],
)
def test_ctrl_c_from_the_command_line(
    prefect_server, tmp_path: Path, fault: str, rc: int, status: str
) -> None:  # type: ignore[no-untyped-def]
    config = write_config(tmp_path, model={"max_epochs": 2}, search={"n_trials": 3})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = subprocess.run(
        [HYPERFLOW, "run", str(config)],
        cwd=tmp_path,
        env={**os.environ, "HYPERFLOW_FAULT": fault},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == rc, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    (study,) = [r for r in runs_of(uri) if r.data.tags.get("hyperflow.role") == "study"]
    assert study.info.status == status
    versions = MlflowClient(uri).search_model_versions("")
    if fault.startswith("model-export"):
        assert "the trials have ended; finishing the study" in proc.stderr
    if status == "FINISHED":
        assert len(versions) == 1
        assert f"{study.info.run_id}  (FINISHED)" in proc.stdout
        return
    assert "interrupted: every open run was ended as KILLED." in proc.stderr
    assert f"Continue it: hyperflow resume {study.info.run_id}" in proc.stderr
    assert versions == [], "nothing was registered"
    # What was interrupted is resumed to the end, without asking for more trials.
    resumed = subprocess.run(
        [HYPERFLOW, "resume", study.info.run_id, "--tracking-uri", uri],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert MlflowClient(uri).get_run(study.info.run_id).info.status == "FINISHED"
    assert len(MlflowClient(uri).search_model_versions("")) == 1


def test_a_resumed_study_shows_its_finished_trials_and_best_from_the_start(
    prefect_server, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from hyperflow.components.study import StudyProgress
    from hyperflow.flows.search_flow import PROGRESS_LISTENERS, run_search

    cfg = small_config(tmp_path, model={"max_epochs": 2})
    first = run_search(cfg)
    seen: list[StudyProgress] = []
    PROGRESS_LISTENERS.append(seen.append)
    try:
        more = cfg.model_copy(update={"search": cfg.search.model_copy(update={"n_trials": 4})})
        run_search(more, resume_run_id=first.study_run_id)
    finally:
        PROGRESS_LISTENERS.remove(seen.append)
    start = seen[0]
    assert (start.finished, start.total, start.resumed) == (3, 4, 3), "before the new trial ends"
    assert start.best_value == pytest.approx(first.best_value)
    assert start.remaining_seconds is None, "no trial of this session has ended to time"
    assert seen[-1].finished == 4 and seen[-1].remaining_seconds == 0
