"""Operations against the real parts: a served schedule, an MLflow server, Dask clusters, the container job."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from conftest import ROOT, small_config
from mlflow.tracking import MlflowClient
from servers import BIN, Server, base_env, free_port, poll, stop

from hyperflow.flows.deploy import ScheduleError, check_cron

HYPERFLOW = BIN / "hyperflow"


def trial_runs(client: MlflowClient, study_run_id: str) -> list[Any]:
    exp = client.get_run(study_run_id).info.experiment_id
    runs = client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{study_run_id}'")
    return sorted(runs, key=lambda r: int(r.data.tags["hyperflow.trial"]))


def write_config(path: Path, cfg: Any) -> Path:
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    return path


def new_children(before: set[int]) -> dict[int, str]:
    """Processes started under this one since `before`, but multiprocessing's resource tracker.

    The tracker is started once per process by the first semaphore (a StopSignal's, a cluster's)
    and stays, by design, until the process exits.
    """
    found = {}
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            cmdline = " ".join(proc.cmdline())
            if proc.pid not in before and "resource_tracker" not in cmdline:
                found[proc.pid] = cmdline
    return found


# --------------------------------------------------------------------------------------------
# Schedules: `hyperflow serve` and prefect.yaml


@pytest.mark.parametrize(
    ("cron", "timezone", "message"),
    [
        ("61 * * * *", "UTC", "--cron '61 * * * *' is not a valid schedule"),
        ("0 3 * *", "UTC", "is not a valid schedule"),
        ("H 3 * * *", "UTC", "is not a valid schedule"),
        ("0 3 * * *", "Mars/Olympus", "--timezone 'Mars/Olympus' is not an IANA time zone"),
    ],
)
def test_bad_schedules_are_named(cron: str, timezone: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=re.escape(message)):
        check_cron(cron, timezone)


def test_good_schedules_pass() -> None:
    assert check_cron("0 3 * * *").cron == "0 3 * * *"
    assert check_cron("*/30 * * * 1-5", "Europe/Berlin").timezone == "Europe/Berlin"


def test_prefect_yaml_holds_the_default_config() -> None:
    from hyperflow.components.config import load_config, validate_config

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    expected = load_config(ROOT / "conf" / "digits.yaml").model_dump(mode="json")
    assert validate_config(spec["definitions"]["digits_config"]).model_dump(mode="json") == expected
    for deployment in spec["deployments"]:
        assert deployment["entrypoint"] == "hyperflow.flows.search_flow.hyperparameter_search"
        assert deployment["parameters"]["config"] == spec["definitions"]["digits_config"]
        check_cron(deployment["schedules"][0]["cron"], deployment["schedules"][0]["timezone"])


@pytest.mark.slow
def test_serve_creates_a_cron_deployment_whose_runs_complete(prefect_server: Server, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    cfg = small_config(
        tmp_path, name=f"served-{tmp_path.name}", search={"n_trials": 2}, model={"max_epochs": 2}
    )
    config = write_config(tmp_path / "served.yaml", cfg)
    deployment_name = f"hyperparameter-search/nightly-{tmp_path.name}"
    env = base_env(PREFECT_API_URL=prefect_server.url, PREFECT_RUNNER_POLL_FREQUENCY="1")
    log = tmp_path / "serve.log"
    cmd = [str(HYPERFLOW), "serve", str(config), "--cron", "0 3 * * *", "--name", f"nightly-{tmp_path.name}"]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        with get_client(sync_client=True) as prefect:
            deployment = poll(
                "the deployment", lambda: prefect.read_deployment_by_name(deployment_name), 120, proc
            )
            (schedule,) = deployment.schedules
            assert schedule.schedule.cron == "0 3 * * *"
            assert schedule.active
            assert deployment.parameters["config"] == cfg.model_dump(mode="json")
            # The Prefect UI's form comes from the pydantic model.
            schema = deployment.parameter_openapi_schema
            assert "config" in schema["properties"] and "ExperimentConfig" in json.dumps(schema)

            flow_run = run_deployment(deployment_name, timeout=240, poll_interval=1)
            assert flow_run.state is not None and flow_run.state.is_completed(), log.read_text()[-3000:]
            assert proc.poll() is None, "serving must go on after a run"
    finally:
        stop(proc)
    client = MlflowClient(cfg.tracking.uri)
    (study,) = client.search_runs(
        [client.get_experiment_by_name(cfg.name).experiment_id],
        f"tags.`hyperflow.flow_run_id` = '{flow_run.id}'",
    )
    assert study.info.status == "FINISHED"
    runs = trial_runs(client, study.info.run_id)
    assert [r.data.tags["hyperflow.state"] for r in runs] == ["completed", "completed"]
    with get_client(sync_client=True) as prefect:
        assert prefect.read_deployment_by_name(deployment_name).paused, "stopping pauses the schedule"


@pytest.mark.slow
def test_serve_refuses_a_bad_cron_before_creating_anything(prefect_server: Server, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    config = write_config(tmp_path / "c.yaml", small_config(tmp_path))
    env = base_env(PREFECT_API_URL=prefect_server.url)
    name = f"bad-{tmp_path.name}"
    proc = subprocess.run(
        [str(HYPERFLOW), "serve", str(config), "--cron", "0 25 * * *", "--name", name],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "--cron '0 25 * * *' is not a valid schedule" in proc.stderr
    assert "Traceback" not in proc.stderr
    with get_client(sync_client=True) as prefect, pytest.raises(ObjectNotFound):
        prefect.read_deployment_by_name(f"hyperparameter-search/{name}")
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_prefect_yaml_deploys_to_process_and_docker_pools(prefect_server: Server, tmp_path: Path) -> None:
    import prefect
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.workers.process import ProcessWorker

    from hyperflow.components.config import load_config, validate_config

    # Pools as `prefect work-pool create` makes them; the docker template is the one Prefect ships
    # (the CLI would ask the collection registry on the internet for it).
    bundled = (
        Path(prefect.__file__).parent / "server/api/collections_data/views/aggregate-worker-metadata.json"
    )
    docker_template = json.loads(bundled.read_text())["prefect-docker"]["docker"][
        "default_base_job_configuration"
    ]
    pools = {
        "hyperflow-process": ("process", ProcessWorker.get_default_base_job_template()),
        "hyperflow-docker": ("docker", docker_template),
    }
    with get_client(sync_client=True) as client:
        for name, (kind, template) in pools.items():
            with contextlib.suppress(ObjectAlreadyExists):
                client.create_work_pool(WorkPoolCreate(name=name, type=kind, base_job_template=template))
    tracking = "http://mlflow.example.internal:5000"
    proc = subprocess.run(
        [
            str(BIN / "prefect"),
            "--no-prompt",
            "deploy",
            "--all",
            "--prefect-file",
            str(ROOT / "prefect.yaml"),
        ],
        cwd=tmp_path,
        env=base_env(PREFECT_API_URL=prefect_server.url, MLFLOW_TRACKING_URI=tracking),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    expected = load_config(ROOT / "conf" / "digits.yaml").model_dump(mode="json")
    with get_client(sync_client=True) as client:
        process = client.read_deployment_by_name("hyperparameter-search/digits-nightly")
        docker = client.read_deployment_by_name("hyperparameter-search/digits-nightly-docker")
    for deployment, pool in ((process, "hyperflow-process"), (docker, "hyperflow-docker")):
        assert deployment.work_pool_name == pool
        assert deployment.entrypoint == "hyperflow.flows.search_flow.hyperparameter_search"
        assert validate_config(deployment.parameters["config"]).model_dump(mode="json") == expected
        assert [s.schedule.cron for s in deployment.schedules] == ["0 3 * * *"]
        assert deployment.job_variables["env"] == {"MLFLOW_TRACKING_URI": tracking}
    assert docker.job_variables["image"] == "hyperflow:latest"


# --------------------------------------------------------------------------------------------
# A real MLflow tracking server

SECRETS = {
    "MLFLOW_TRACKING_USERNAME": "hf-user-5f1c",
    "MLFLOW_TRACKING_PASSWORD": "hf-password-9a7e",
    "MLFLOW_TRACKING_TOKEN": "hf-token-3d2b",
}


def _all_artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> Iterator[str]:
    for item in client.list_artifacts(run_id, path):
        if item.is_dir:
            yield from _all_artifacts(client, run_id, item.path)
        else:
            yield item.path


@pytest.mark.slow
def test_search_logs_to_an_mlflow_server_over_http(
    prefect_server: Server, mlflow_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    import mlflow.pytorch
    import torch

    from hyperflow.flows.search_flow import run_search

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    for key, value in SECRETS.items():  # the test server has no auth: it ignores what the client sends
        monkeypatch.setenv(key, value)
    cfg = small_config(
        tmp_path, name=f"served-store-{tmp_path.name}", tracking={"uri": None}, search={"n_trials": 2}
    )
    result = run_search(cfg)
    assert result.status == "FINISHED" and result.tracking_uri == mlflow_server.url

    client = MlflowClient(mlflow_server.url, registry_uri=mlflow_server.url)
    study = client.get_run(result.study_run_id)
    assert study.info.status == "FINISHED"
    assert study.info.artifact_uri.startswith("mlflow-artifacts:"), "artifacts go through the server"
    study_files = set(_all_artifacts(client, result.study_run_id))
    assert {"config.yaml", "environment.txt", "plots/optimization_history.png"} <= study_files
    assert any(f.startswith("best_model/") for f in study_files)
    runs = trial_runs(client, result.study_run_id)
    assert len(runs) == 2
    for run in runs:
        files = set(_all_artifacts(client, run.info.run_id))
        assert files == {"weights/state_dict.pt", "weights/histograms.json", "weight_histograms.png"}
        png = Path(client.download_artifacts(run.info.run_id, "weight_histograms.png", str(tmp_path)))
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stored = mlflow_server.home / "artifacts"
    assert len(list(stored.rglob("weight_histograms.png"))) >= 2, "the server's artifact store holds them"

    version = client.get_model_version_by_alias(cfg.name, "champion")
    assert version.run_id == result.study_run_id
    mlflow.set_tracking_uri(mlflow_server.url)
    mlflow.set_registry_uri(mlflow_server.url)
    try:
        model = mlflow.pytorch.load_model(f"models:/{cfg.name}@champion")
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    assert model(torch.zeros(3, 64, dtype=torch.float64)).shape == (3, 10)

    assert not (work / "mlflow.db").exists()
    assert not (work / "mlruns").exists() and not (work / "mlartifacts").exists()

    # The credentials reached MLflow's client only: nothing logged or stored holds them.
    logged: list[Any] = []
    for run in [study, *runs]:
        logged += [*run.data.params.items(), *run.data.tags.items(), *run.data.metrics]
        for path in _all_artifacts(client, run.info.run_id):
            local = Path(client.download_artifacts(run.info.run_id, path, str(tmp_path / "scan")))
            logged.append(local.read_bytes().decode("latin-1"))
    logged += [*version.tags.items(), version.description or ""]
    text = "\n".join(map(str, logged))
    assert "config.yaml" in " ".join(study_files) and "hidden_layers" in text
    for key, secret in SECRETS.items():
        assert secret not in text, f"{key} leaked into what was logged"


def test_unreachable_tracking_server_fails_fast_before_training(tmp_path: Path) -> None:
    cfg = small_config(tmp_path, tracking={"uri": None})
    config = write_config(tmp_path / "c.yaml", cfg)
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    proc = subprocess.run(
        [str(HYPERFLOW), "run", str(config)],
        cwd=tmp_path,
        env=base_env(MLFLOW_TRACKING_URI=closed),
        capture_output=True,
        text=True,
        timeout=120,
    )
    took = time.monotonic() - started
    assert proc.returncode == 3, proc.stderr
    assert f"cannot reach the MLflow tracking server at {closed}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert took < 60, f"took {took:.0f} s: MLflow's own retries were not cut short"
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()


def test_credentials_in_a_uri_are_masked() -> None:
    from hyperflow.components.tracking import redact_uri, ui_command

    assert redact_uri("http://alice:s3cret@mlflow:5000") == "http://***@mlflow:5000"
    assert redact_uri("uri: postgresql://u:pw@db/mlflow\n") == "uri: postgresql://***@db/mlflow\n"
    assert redact_uri("sqlite:////data/a@b/mlflow.db") == "sqlite:////data/a@b/mlflow.db"
    assert "s3cret" not in ui_command("https://alice:s3cret@mlflow", "1", "abc")


# --------------------------------------------------------------------------------------------
# Trials on Dask


def test_local_cluster_is_sized_to_the_machine() -> None:
    from hyperflow.flows.dask_runner import dask_task_runner, local_workers

    cores = len(os.sched_getaffinity(0))
    assert local_workers(1) == 1
    assert local_workers(cores + 3) == cores
    cfg = small_config(Path("/nonexistent"), search={"n_parallel": 2}, runner={"kind": "dask"})
    runner = dask_task_runner(cfg)
    assert runner.cluster_kwargs["n_workers"] == min(2, cores)
    assert runner.cluster_kwargs["threads_per_worker"] == 1
    assert runner.cluster_kwargs["processes"] is True
    remote = small_config(
        Path("/nonexistent"), runner={"kind": "dask", "address": "tcp://scheduler.example.internal:8786"}
    )
    assert dask_task_runner(remote).address == "tcp://scheduler.example.internal:8786"


def _worker_state() -> dict[str, Any]:
    import torch

    from hyperflow.components.interrupt import current_stop_event

    event = current_stop_event()
    return {
        "pid": os.getpid(),
        "sigint_ignored": signal.getsignal(signal.SIGINT) == signal.SIG_IGN,
        "torch_threads": torch.get_num_threads(),
        "omp": os.environ.get("OMP_NUM_THREADS"),
        "stop": None if event is None else event.is_set(),
    }


@pytest.mark.slow
def test_local_workers_get_the_trial_environment_and_stop_requests() -> None:
    from hyperflow.components.interrupt import StopSignal
    from hyperflow.flows.dask_runner import dask_task_runner

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    cfg = small_config(Path("/nonexistent"), runner={"kind": "dask"})
    stop_signal = StopSignal()
    with dask_task_runner(cfg, stop=stop_signal) as runner:
        (state,) = runner.client.run(_worker_state).values()
        assert state["pid"] != os.getpid()
        assert state["sigint_ignored"], "Ctrl-C in the terminal must not kill a worker mid-trial"
        assert (state["torch_threads"], state["omp"]) == (1, "1")
        assert state["stop"] is False
        stop_signal.set(signal.SIGINT)
        poll(
            "the stop request on the worker",
            lambda: all(s["stop"] for s in runner.client.run(_worker_state).values()),
            30,
        )
    poll("the worker processes to end", lambda: not new_children(before), 30)
    assert not psutil.pid_exists(state["pid"])


@pytest.mark.slow
def test_dask_local_cluster_runs_trials_in_worker_processes(prefect_server: Server, tmp_path: Path) -> None:
    from hyperflow.flows.search_flow import run_search

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    cfg = small_config(tmp_path, search={"n_trials": 3, "n_parallel": 2}, runner={"kind": "dask"})
    result = run_search(cfg)
    assert result.status == "FINISHED" and result.n_completed == 3
    client = MlflowClient(result.tracking_uri, registry_uri=result.tracking_uri)
    study = client.get_run(result.study_run_id)
    assert study.data.tags["hyperflow.role"] == "study"
    assert study.data.metrics["n_trials_completed"] == 3
    runs = trial_runs(client, result.study_run_id)
    assert [r.data.tags["hyperflow.state"] for r in runs] == ["completed"] * 3
    pids = {int(r.data.tags["hyperflow.pid"]) for r in runs}
    assert os.getpid() not in pids, "trials ran in the flow's process"
    assert {r.data.tags["hyperflow.host"] for r in runs} == {socket.gethostname()}
    for run in runs:
        files = {a.path for a in client.list_artifacts(run.info.run_id, "weights")}
        assert "weights/state_dict.pt" in files
        assert "weight_histograms.png" in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert client.get_model_version_by_alias(cfg.name, "champion").run_id == result.study_run_id
    poll("the cluster's processes to end", lambda: not new_children(before), 30)
    assert not any(psutil.pid_exists(pid) for pid in pids)


@pytest.fixture
def dask_cluster(tmp_path: Path) -> Iterator[str]:
    """A scheduler and one worker, started as an operator would (`dask scheduler`, `dask worker`)."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = base_env()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for name, cmd in (
            ("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"]),
            ("worker", ["worker", address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard"]),
        ):
            log = (tmp_path / f"dask-{name}.log").open("wb")
            procs.append(
                subprocess.Popen(
                    [str(BIN / "dask"), *cmd],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        yield address
    finally:
        for proc in reversed(procs):
            stop(proc)


@pytest.mark.slow
def test_dask_runner_uses_an_existing_scheduler(
    prefect_server: Server, dask_cluster: str, tmp_path: Path
) -> None:
    from distributed import Client

    from hyperflow.flows.search_flow import run_search

    with Client(dask_cluster, timeout=60) as client:
        client.wait_for_workers(1, timeout=60)
        worker_pids = set(client.run(os.getpid).values())
        cfg = small_config(tmp_path, search={"n_trials": 2}, runner={"kind": "dask", "address": dask_cluster})
        result = run_search(cfg)
        assert result.status == "FINISHED"
        # An operator's worker keeps its own Ctrl-C: only a local cluster's workers ignore it.
        assert not any(client.run(lambda: signal.getsignal(signal.SIGINT) == signal.SIG_IGN).values())
    mlflow = MlflowClient(result.tracking_uri)
    runs = trial_runs(mlflow, result.study_run_id)
    assert [r.data.tags["hyperflow.state"] for r in runs] == ["completed", "completed"]
    assert {int(r.data.tags["hyperflow.pid"]) for r in runs} <= worker_pids


# --------------------------------------------------------------------------------------------
# The container job


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), line continuations joined."""
    lines, current = [], ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, args = current.partition(" ")
        lines.append((keyword.upper(), args.strip()))
        current = ""
    return lines


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile()
    last_from = max(i for i, (k, _) in enumerate(instructions) if k == "FROM")
    return instructions[last_from:]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, args in final_stage():
        if keyword == "ENV":
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def copies(stage: list[tuple[str, str]]) -> list[tuple[list[str], str]]:
    out = []
    for keyword, args in stage:
        if keyword == "COPY":
            parts = [p for p in shlex.split(args) if not p.startswith("--")]
            if "--from" not in args:
                out.append((parts[:-1], parts[-1]))
    return out


def dockerignored(path: str) -> bool:
    """Docker's rule: the last .dockerignore pattern that matches the path (or a folder above it) decides."""
    from fnmatch import fnmatch

    parts = Path(path).parts
    folders = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if pattern.startswith("**/"):
            hit = any(fnmatch(part, pattern[3:]) for part in parts)
        else:
            hit = any(fnmatch(folder, pattern) for folder in folders)
        if hit:
            ignored = not negate
    return ignored


def test_dockerfile_is_the_container_job() -> None:
    instructions = dockerfile()
    keywords = [k for k, _ in instructions]
    assert "ENTRYPOINT" not in keywords, "a Prefect docker work pool passes its own command"
    stage = final_stage()
    assert stage[0][1].startswith("python:${PYTHON_VERSION}-slim")
    assert ("ARG", "PYTHON_VERSION=3.11") in instructions
    args = dict(a.split("=", 1) for k, a in stage if k == "ARG")
    assert args == {"TORCH_VERSION": "2.13.0", "TORCH_INDEX_URL": "https://download.pytorch.org/whl/cpu"}
    (cmd,) = [json.loads(a) for k, a in stage if k == "CMD"]
    assert cmd == ["hyperflow", "run", "conf/digits.yaml"]
    (user,) = [a for k, a in stage if k == "USER"]
    assert user.split(":")[0] not in ("root", "0")
    env = image_env()
    # The image repeats hyperflow's runtime defaults for what runs before hyperflow is imported (a
    # Prefect worker, a Dask worker): the same values as RUNTIME_DEFAULTS, the one list of them.
    from hyperflow import RUNTIME_DEFAULTS

    assert env["DO_NOT_TRACK"] == "true" and env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert {"DO_NOT_TRACK", "MLFLOW_DISABLE_TELEMETRY", "PREFECT_SERVER_ANALYTICS_ENABLED"} <= env.keys()
    assert {k: v for k, v in env.items() if k in RUNTIME_DEFAULTS} == {
        k: RUNTIME_DEFAULTS[k] for k in env if k in RUNTIME_DEFAULTS
    }
    assert "MLFLOW_TRACKING_URI" not in env and "PREFECT_API_URL" not in env, "set at `docker run`"

    proc = subprocess.run(
        [str(BIN / "hadolint"), "--failure-threshold", "warning", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

    for sources, _ in copies(instructions):
        for source in sources:
            assert not dockerignored(source.rstrip("/")), f"{source} is copied but .dockerignore drops it"
    for kept_out in (".venv", ".venv/bin/python", "mlflow.db", "mlruns", "mlruns/1/x", "mlartifacts", ".git"):
        assert dockerignored(kept_out), f"{kept_out} would be sent to the docker build"
    assert dockerignored("components/__pycache__/x.pyc")


@pytest.mark.slow
def test_the_image_command_runs_from_the_wheel_in_a_fresh_environment(
    prefect_server: Server, tmp_path: Path
) -> None:
    """What `docker build` + `docker run` do, without a Docker engine.

    The build stage's files build the wheel; a fresh virtual environment gets the Dockerfile's
    torch version (pip takes the CPU wheel from this machine's wheel folder, as `make` does, since
    the CPU index is out of reach) and then the wheel with its dependencies from the package index.
    `--no-compile` skips writing bytecode for ~1.5 GB of packages (two thirds of the install time);
    what is installed is the same. WORKDIR gets only what the final stage copies, and the CMD runs
    there with the Dockerfile's ENV and nothing of this checkout on its path.
    """
    instructions = dockerfile()
    stage = final_stage()
    build_stage = instructions[: instructions.index(stage[0])]
    context = tmp_path / "context"
    for sources, _ in copies(build_stage):
        for source in sources:
            src = ROOT / source
            if src.is_dir():
                shutil.copytree(src, context / source, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                context.mkdir(exist_ok=True)
                shutil.copy2(src, context / source)
    timings: dict[str, float] = {}
    venv = tmp_path / "venv"
    try:
        started = time.monotonic()
        dist = tmp_path / "dist"
        subprocess.run(
            [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(context)],
            check=True,
            capture_output=True,
            timeout=300,
        )
        (wheel,) = dist.glob("hyperflow-*.whl")
        timings["wheel"] = time.monotonic() - started

        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-compile"]
        torch_version = dict(a.split("=", 1) for k, a in stage if k == "ARG")["TORCH_VERSION"]
        for what in (f"torch=={torch_version}", str(wheel)):
            proc = subprocess.run([*pip, what], capture_output=True, text=True, timeout=900)
            assert proc.returncode == 0, proc.stderr[-3000:]
        timings["install"] = time.monotonic() - started

        (workdir,) = [a for k, a in stage if k == "WORKDIR"]
        app = tmp_path / "image" / workdir.lstrip("/")
        app.mkdir(parents=True)
        for sources, dest in copies(stage):
            for source in sources:
                shutil.copytree(ROOT / source, app / dest)
        home = tmp_path / "home"
        home.mkdir()
        env = {
            "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
            "HOME": str(home),
            "LANG": "C.UTF-8",
            **image_env(),
            "PREFECT_API_URL": prefect_server.url,  # docker run -e PREFECT_API_URL=...
        }
        (cmd,) = [json.loads(a) for k, a in stage if k == "CMD"]
        budget = ["--set", "search.n_trials=2", "--set", "model.max_epochs=10"]
        budget += ["--set", "search.space.max_epochs.high=12"]
        started = time.monotonic()
        proc = subprocess.run([*cmd, *budget], cwd=app, env=env, capture_output=True, text=True, timeout=600)
        timings["run"] = time.monotonic() - started
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        print(f"container job timings (s): {timings}")

        where = subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import hyperflow.flows as f; print(f.__file__)"],
            cwd=app,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        assert where.stdout.startswith(str(venv)), "the command must run the installed wheel"
        for bare in ("components", "flows"):
            probe = subprocess.run(
                [str(venv / "bin" / "python"), "-c", f"import {bare}"], cwd=app, env=env, capture_output=True
            )
            assert probe.returncode != 0, f"the wheel puts a top-level {bare!r} on the import path"

        # From the repository root (its own hyperflow/ folder first on the path of the spawned
        # workers, which import the example from there), two trials in parallel.
        from_root = subprocess.run(
            [
                "hyperflow",
                "run",
                "examples/digits_cnn/config.yaml",
                *("--set", "search.strategy=random", "--set", "search.n_trials=2"),
                *("--set", "search.n_parallel=2", "--set", "model.max_epochs=2"),
                *("--set", f"tracking.uri=sqlite:///{tmp_path / 'root.db'}"),
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert from_root.returncode == 0, from_root.stdout[-3000:] + from_root.stderr[-3000:]
    finally:
        shutil.rmtree(venv, ignore_errors=True)  # 1.5 GB

    client = MlflowClient(f"sqlite:///{app / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("digits-mlp")
    (study,) = client.search_runs([experiment.experiment_id], "tags.`hyperflow.role` = 'study'")
    assert study.info.status == "FINISHED"
    assert len(trial_runs(client, study.info.run_id)) == 2
    assert "mlflow.source.git.commit" not in study.data.tags, "an installed wheel has no checkout"
    root = MlflowClient(f"sqlite:///{tmp_path / 'root.db'}")
    (study,) = root.search_runs(
        [root.get_experiment_by_name("digits-cnn").experiment_id], "tags.`hyperflow.role` = 'study'"
    )
    states = [r.data.tags["hyperflow.state"] for r in trial_runs(root, study.info.run_id)]
    assert states == ["completed", "completed"]
