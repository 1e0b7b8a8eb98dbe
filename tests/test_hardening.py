"""Issue 15's hardening: every field of the schema refuses wrong types and non-finite values by path,
names follow MLflow's rules, no credential is stored, and the faults end cleanly."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import types
import typing
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import psutil
import pytest
import yaml
from conftest import ROOT
from mlflow.tracking import MlflowClient
from pydantic import BaseModel

from hyperflow.components.config import ConfigError, ExperimentConfig, RangeSpec, load_config, validate_config
from hyperflow.components.config_checks import mlflow_name_problem
from hyperflow.components.names import FAILED
from hyperflow.components.training import train_trial
from hyperflow.components.trial import TrialSpec

HYPERFLOW = str(Path(sys.executable).parent / "hyperflow")
CNN_PARAMS = {"learning_rate": 3e-3, "channels": 8, "dropout": 0.1, "weight_decay": 1e-4, "batch_size": 64}


def _scalar_type(annotation: Any) -> type | None:
    """int, float or bool for a (possibly optional) scalar field, else None."""
    options = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (Union, types.UnionType) and len(options) == 1:
        annotation = options[0]
    if get_origin(annotation) is typing.Annotated:
        annotation = get_args(annotation)[0]
    return annotation if annotation in (int, float, bool) else None


def _scalar_fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, type]]:
    """Every int, bool and float field below `model`, by dotted path (sections recursed into)."""
    out: list[tuple[str, type]] = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out += _scalar_fields(annotation, f"{path}.")
        elif (kind := _scalar_type(annotation)) is not None:
            out.append((path, kind))
    return out


SCALARS = _scalar_fields(ExperimentConfig)
# A searched range's bounds and flag, by their own dotted path.
SCALARS += [(f"search.space.learning_rate.{name}", kind) for name, kind in _scalar_fields(RangeSpec)]


def _nested(path: str, value: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    node = raw
    *parents, leaf = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    if path.startswith("search.space.learning_rate."):
        node.setdefault("low", 0.01)
        node.setdefault("high", 0.1)
    return raw


def _wrong_values(kind: type) -> list[Any]:
    if kind is bool:
        return [1, "true", "yes"]
    if kind is int:
        return [True, "3", 2.5]
    return [True, "0.5", math.inf, -math.inf, math.nan]


CASES = [(path, bad) for path, kind in SCALARS for bad in _wrong_values(kind)]


def test_the_walk_covers_the_schema() -> None:
    paths = {p for p, _ in SCALARS}
    # the fields of the issue, and one of every section, are among the walked ones
    for path in (
        "search.n_trials",
        "model.l2",
        "model.batch_norm",
        "search.genetic.crossover_rate",
        "early_stopping.threshold",
        "tracking.register_model",
        "data.val_fraction",
        "search.timeout_minutes",
        "model.depth",
        "seed",
    ):
        assert path in paths
    assert len(SCALARS) >= 40


@pytest.mark.parametrize(("path", "bad"), CASES, ids=[f"{p}={b!r}" for p, b in CASES])
def test_every_scalar_field_refuses_a_wrong_type_or_a_non_finite_value(path: str, bad: Any) -> None:
    with pytest.raises(ConfigError) as info:
        validate_config(_nested(path, bad))
    assert path in [p for p, _ in info.value.problems], info.value


NAMES = ["digits", "team digits", "digits-v2.1", "a/b", "a:b", "..", ".", "x" * 501, " ", "ünïcode", "a\\b"]


@pytest.mark.parametrize("name", NAMES)
def test_name_rules_are_mlflows(name: str) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_experiment_name, _validate_model_name

    try:
        _validate_experiment_name(name)
        _validate_model_name(name)
        mlflow_accepts = True
    except MlflowException:
        mlflow_accepts = False
    assert (mlflow_name_problem(name) is None) == mlflow_accepts
    if not mlflow_accepts:
        with pytest.raises(ConfigError, match="name: "):
            validate_config({"name": name})


# --------------------------------------------------------------------------------------------
# A DataModule whose dataloaders yield nothing (issue 15, item 7)

EMPTY_DATA = """
import torch
from torch.utils.data import DataLoader, TensorDataset

from examples.digits_cnn.data import DigitsDataModule


def _empty():
    return DataLoader(TensorDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long)))


class EmptyDigits(DigitsDataModule):
    def train_dataloader(self):
        return _empty()

    def val_dataloader(self):
        return _empty()
"""


def empty_data_project(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "emptydata.py").write_text(EMPTY_DATA)
    config = tmp_path / "config.yaml"
    raw = yaml.safe_load((ROOT / "examples" / "digits_cnn" / "config.yaml").read_text())
    raw["data"]["module"] = "emptydata:EmptyDigits"
    raw["model"]["max_epochs"] = 2
    raw["search"].update(strategy="random", n_trials=2)
    raw["early_stopping"] = {"kind": "none"}
    raw["tracking"] = {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    config.write_text(yaml.safe_dump(raw))
    return config


def test_a_trial_whose_dataloaders_yield_nothing_fails_saying_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = empty_data_project(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    cfg = load_config(config)
    result = train_trial(None, CNN_PARAMS, TrialSpec.from_config(cfg, num_threads=1), seed=0)
    assert result.state == FAILED
    assert result.epochs_trained == 0 and result.value is None
    assert result.error is not None and "no epoch reported val_accuracy" in result.error
    assert "dataloader" in result.error


@pytest.mark.slow
def test_cli_run_on_empty_dataloaders_fails_every_trial_and_lists_the_error(
    prefect_server: Any, tmp_path: Path
) -> None:
    config = empty_data_project(tmp_path)
    proc = subprocess.run(
        [HYPERFLOW, "run", str(config)],
        cwd=tmp_path,
        env={**os.environ, "PREFECT_API_URL": prefect_server.url},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout.count("no epoch reported val_accuracy") == 2, proc.stdout
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    (exp,) = [e for e in client.search_experiments() if e.name == "digits-cnn"]
    trials = client.search_runs([exp.experiment_id], "tags.`hyperflow.role` = 'trial'")
    assert len(trials) == 2
    for run in trials:
        assert run.data.tags["hyperflow.state"] == "failed"
        assert run.info.status == "FAILED"
        assert "no epoch reported" in run.data.tags["hyperflow.error"]


# --------------------------------------------------------------------------------------------
# kill -9 of the command leaves nothing behind (item 10)


def _session(sid: int) -> list[psutil.Process]:
    """The live processes of a session (the killed command's, started with start_new_session)."""
    out = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return out


def _own_session_children(pid: int) -> list[psutil.Process]:
    """The children of `pid` that lead a session of their own."""
    try:
        children = psutil.Process(pid).children()
    except psutil.Error:
        return []
    out = []
    for child in children:
        try:
            if os.getsid(child.pid) == child.pid:
                out.append(child)
        except (ProcessLookupError, PermissionError):
            continue
    return out


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _describe(procs: list[psutil.Process]) -> list[str]:
    out = []
    for proc in procs:
        try:
            out.append(" ".join(proc.cmdline())[:160])
        except psutil.Error:
            continue
    return out


def _small_config(folder: Path, **search: Any) -> Path:
    raw = {
        "name": f"hardening-{folder.name}",
        "data": {"source": "digits"},
        "model": {"hidden_layers": [32], "max_epochs": 200, "batch_size": 32},
        "search": {
            "strategy": "random",
            "n_trials": 4,
            "space": {"learning_rate": {"low": 0.001, "high": 0.01, "log": True}},
            **search,
        },
        "early_stopping": {"kind": "none"},
        "tracking": {"uri": f"sqlite:///{folder / 'mlflow.db'}"},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _epochs_logged(db: Path) -> int:
    import sqlite3

    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            (n,) = conn.execute("select count(*) from metrics where key = 'train_loss'").fetchone()
    except sqlite3.Error:
        return 0
    return int(n)


def _poll(check: Any, deadline_s: float, what: str) -> Any:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_kill_9_of_the_command_leaves_no_process_behind(tmp_path: Path) -> None:
    # Prefect's ephemeral mode (its server is our child) and parallel trials (worker processes,
    # multiprocessing's resource tracker), plus the plot worker: everything a search starts.
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    config = _small_config(tmp_path, n_parallel=2)
    proc = subprocess.Popen(
        [HYPERFLOW, "run", str(config)],
        cwd=tmp_path,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    servers: list[psutil.Process] = []
    try:
        _poll(lambda: _epochs_logged(tmp_path / "mlflow.db") >= 4, 400, "both trials to train")
        # Prefect's server runs in a session of its own (a Ctrl-C at the terminal is the command's
        # to handle): it is found as the command's child.
        ours = lambda: _session(proc.pid) + _own_session_children(proc.pid)  # noqa: E731
        before = _describe(ours())
        # the command, two trial workers, the resource tracker, Prefect's server (the plot worker
        # starts with the first finished trial)
        assert len(before) >= 5, before
        assert any("hyperflow.flows.prefect_server" in c for c in before), before
        # ...and no second server: every thread of the command talks to that one
        assert not any("uvicorn" in c for c in before), before
        servers = [p for p in ours() if "hyperflow.flows.prefect_server" in " ".join(p.cmdline())]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        # nothing of ours outlives it by more than a few seconds
        _poll(
            lambda: not _session(proc.pid) and not [p for p in servers if _alive(p)],
            15,
            f"the command's processes to end: {before}",
        )
    finally:
        remaining = _session(proc.pid) + [p for p in servers if _alive(p)]
        for p in remaining:
            with contextlib.suppress(psutil.Error):
                p.kill()
    assert not remaining, _describe(remaining)


# --------------------------------------------------------------------------------------------
# A full disk (item 11)


def test_a_full_disk_is_recognised_through_mlflows_wrapping_and_travels_between_processes() -> None:
    import errno
    import pickle

    from mlflow.exceptions import MlflowException

    from hyperflow.components.diskfull import DiskFull, disk_full_cause

    raw = OSError(errno.ENOSPC, "No space left on device")
    try:
        try:
            raise raw
        except OSError as exc:
            raise MlflowException("could not log artifacts") from exc
    except MlflowException as wrapped:
        assert disk_full_cause(wrapped) is raw
    assert disk_full_cause(MlflowException("(sqlite3.OperationalError) database or disk is full")) is not None
    assert disk_full_cause(OSError(errno.EACCES, "Permission denied")) is None
    assert disk_full_cause(ValueError("no")) is None
    again = pickle.loads(pickle.dumps(DiskFull("the disk is full: weights of run x")))
    assert isinstance(again, DiskFull) and str(again) == "the disk is full: weights of run x"


def test_the_artifact_write_fault_raises_enospc_from_its_count_on(monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from hyperflow.components import faults

    monkeypatch.setenv(faults.FAULT_ENV, "artifact-write:2")
    monkeypatch.setattr(faults, "_seen", {})
    faults.fault_point("artifact-write")  # the first passes
    for _ in range(2):  # the second and every later one fail: a full disk stays full
        with pytest.raises(OSError) as info:
            faults.fault_point("artifact-write")
        assert info.value.errno == errno.ENOSPC


@pytest.mark.slow
@pytest.mark.parametrize("nth", [2, 4], ids=["second-trial", "last-trial"])
def test_a_full_disk_ends_the_study_failed_with_one_line_and_resume_finishes_it(
    prefect_server: Any, tmp_path: Path, nth: int
) -> None:
    config = _small_config(tmp_path, n_trials=4)
    raw = yaml.safe_load(config.read_text())
    raw["model"]["max_epochs"] = 2
    config.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "PREFECT_API_URL": prefect_server.url}
    # The nth trial's weights meet a full disk, and so would everything after. The last trial's
    # are written after the search loop has ended: the study is failed all the same.
    full = subprocess.run(
        [HYPERFLOW, "run", str(config)],
        cwd=tmp_path,
        env={**env, "HYPERFLOW_FAULT": f"artifact-write:{nth}"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert full.returncode == 4, full.stdout + full.stderr
    assert "Traceback" not in full.stderr, full.stderr
    errors = [line for line in full.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "disk is full" in errors[0], full.stderr
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    (exp,) = [e for e in client.search_experiments() if e.name == raw["name"]]
    (study,) = client.search_runs([exp.experiment_id], "tags.`hyperflow.role` = 'study'")
    assert study.info.status == "FAILED"
    assert "disk is full" in study.data.tags["hyperflow.error"]
    assert f"hyperflow resume {study.info.run_id}" in errors[0]
    trials = client.search_runs([exp.experiment_id], "tags.`hyperflow.role` = 'trial'")
    states = sorted(
        (int(r.data.tags["hyperflow.trial"]), r.data.tags["hyperflow.state"], r.info.status) for r in trials
    )
    # The search stopped at the full disk. A trial's writes go on behind the next trial, so at most
    # one more trial trained meanwhile: its records are incomplete, it is interrupted (resume asks
    # it again) and nothing is left RUNNING.
    done = [(n, "completed", "FINISHED") for n in range(nth - 1)]
    assert states[:nth] == [*done, (nth - 1, "failed", "FAILED")], states
    assert states[nth:] in ([], [(nth, "interrupted", "KILLED")]), states

    again = subprocess.run(
        [HYPERFLOW, "resume", study.info.run_id, "--tracking-uri", uri],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    resumed = client.get_run(study.info.run_id)
    assert resumed.info.status == "FINISHED"
    counts = resumed.data.metrics
    assert counts["n_trials_completed"] + counts["n_trials_pruned"] + counts["n_trials_failed"] == 4


# --------------------------------------------------------------------------------------------
# Three searches at once on a fresh store and a fresh PREFECT_HOME (item 9)


@pytest.mark.slow
def test_three_searches_started_at_once_on_fresh_stores_all_finish(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")  # fresh: its database is made by the first
    env["OMP_NUM_THREADS"] = "1"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # fresh: no tables yet
    configs = []
    for i in range(3):
        folder = tmp_path / f"search-{i}"
        folder.mkdir()
        path = _small_config(folder, n_trials=2)
        raw = yaml.safe_load(path.read_text())
        raw["model"]["max_epochs"] = 2
        raw["tracking"]["uri"] = uri
        path.write_text(yaml.safe_dump(raw))
        configs.append((raw["name"], path))
    procs = [
        subprocess.Popen(
            [HYPERFLOW, "run", str(path)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _, path in configs
    ]
    outputs = [proc.communicate(timeout=600) for proc in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out + err
        assert "Traceback" not in err, err
    client = MlflowClient(uri)
    for name, _ in configs:
        exp = client.get_experiment_by_name(name)
        assert exp is not None
        (study,) = client.search_runs([exp.experiment_id], "tags.`hyperflow.role` = 'study'")
        assert study.info.status == "FINISHED"
        trials = client.search_runs([exp.experiment_id], "tags.`hyperflow.role` = 'trial'")
        assert len(trials) == 2 and all(r.info.status == "FINISHED" for r in trials)
        for run in trials:
            assert len(client.get_metric_history(run.info.run_id, "val_accuracy")) == 2


# --------------------------------------------------------------------------------------------
# Flow-run heartbeats: for a server that outlives the command only


@pytest.mark.slow
def test_flow_run_heartbeats_go_to_a_users_server_and_not_to_the_commands_own(
    prefect_server: Any, tmp_path: Path
) -> None:
    # Prefect's flow run logger at DEBUG says when its heartbeat thread starts (and the flow's end
    # waits for that thread); the rest of Prefect's logging stays as it is.
    base = {**os.environ, "PREFECT_LOGGING_LOGGERS_PREFECT_FLOW_RUNS_LEVEL": "DEBUG"}
    own = {k: v for k, v in base.items() if k != "PREFECT_API_URL"}
    own["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    outputs = {}
    for name, env in (("users", {**base, "PREFECT_API_URL": prefect_server.url}), ("own", own)):
        folder = tmp_path / name
        folder.mkdir()
        config = _small_config(folder, n_trials=1)
        raw = yaml.safe_load(config.read_text())
        raw["model"]["max_epochs"] = 2
        config.write_text(yaml.safe_dump(raw))
        proc = subprocess.run(
            [HYPERFLOW, "run", str(config)], cwd=folder, env=env, capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        outputs[name] = proc.stdout + proc.stderr
        # The debug lines are there either way: the flow ran with its run logger at DEBUG.
        assert "Executing flow 'hyperparameter-search'" in outputs[name], outputs[name]
    assert "Started flow run heartbeat context" in outputs["users"], outputs["users"]
    assert "flow run heartbeat" not in outputs["own"], outputs["own"]


# --------------------------------------------------------------------------------------------
# Credentials never reach Prefect (item 12)


def _files_holding(root: Path, secret: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and secret in p.read_bytes()]


@pytest.mark.slow
def test_a_password_in_mlflow_tracking_uri_reaches_neither_prefect_nor_mlflow(
    mlflow_server: Any, tmp_path: Path
) -> None:
    secret = "pw-" + os.urandom(6).hex()
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    home = tmp_path / "prefect-home"
    env["PREFECT_HOME"] = str(home)  # the ephemeral server's database lands here
    env["MLFLOW_TRACKING_URI"] = mlflow_server.url.replace("http://", f"http://alice:{secret}@")
    config = _small_config(tmp_path, n_trials=2)
    raw = yaml.safe_load(config.read_text())
    raw["model"]["max_epochs"] = 2
    del raw["tracking"]  # the store comes from the environment
    config.write_text(yaml.safe_dump(raw))
    proc = subprocess.run(
        [HYPERFLOW, "run", str(config)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "http://***@127.0.0.1" in proc.stdout  # the address printed, masked
    assert secret not in proc.stdout + proc.stderr
    assert (home / "prefect.db").exists()
    assert _files_holding(home, secret.encode()) == [], "the secret is in Prefect's store"
    assert _files_holding(mlflow_server.home, secret.encode()) == [], "the secret is in MLflow's store"
    # ... and the same URI in the config is refused before anything runs
    raw["tracking"] = {"uri": env["MLFLOW_TRACKING_URI"]}
    config.write_text(yaml.safe_dump(raw))
    refused = subprocess.run(
        [HYPERFLOW, "run", str(config)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert refused.returncode == 2
    assert "MLFLOW_TRACKING_PASSWORD" in refused.stderr and secret not in refused.stderr


@pytest.mark.slow
def test_the_commands_prefect_server_leaves_a_whole_database_and_a_deleted_one_stays_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prefect's database runs in WAL mode too: the server child folds its log back when the command
    stops it, and a `prefect.db` deleted without its log is not rebuilt from that log (SQLite does
    not replay a log into a new, empty file; a store made by copying a template would be)."""
    import json
    import sqlite3
    import urllib.request

    from hyperflow.flows.prefect_api import CommandServer

    home = tmp_path / "home"
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(home))
    db = home / "prefect.db"

    def serve_and_write(flow: str) -> CommandServer:
        server = CommandServer(startup_timeout=120).start()
        server.wait_ready()
        url = server.url()
        assert url is not None
        request = urllib.request.Request(
            f"{url}/flows/", json.dumps({"name": flow}).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status in (200, 201)
        return server

    def flows_in(path: Path) -> list[str]:
        with sqlite3.connect(path) as con:
            assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            return sorted(name for (name,) in con.execute("SELECT name FROM flow"))

    serve_and_write("first").stop()  # the command's end
    alone = tmp_path / "copy.db"
    shutil.copyfile(db, alone)
    assert flows_in(alone) == ["first"], "prefect.db alone lacks what the server wrote"

    server = serve_and_write("second")
    assert server.process is not None
    server.process.kill()  # killed: its writes are in the log only
    server.process.wait()
    server.stop()
    assert Path(f"{db}-wal").stat().st_size > 0
    db.unlink()  # a reset by hand: the log stays
    serve_and_write("third").stop()
    assert flows_in(db) == ["third"], "the deleted database's flows came back from its log"
