"""The pipeline end to end: the real Prefect flow, a real MLflow store, real training on digits."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch
from conftest import ROOT, small_config
from mlflow.tracking import MlflowClient

from hyperflow.components.data import load_dataset
from hyperflow.components.fingerprint import config_hash, flatten
from hyperflow.components.model import expected_param_count


def trial_runs(client: MlflowClient, study_run_id: str) -> list:
    exp = client.get_run(study_run_id).info.experiment_id
    runs = client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{study_run_id}'")
    return sorted(runs, key=lambda r: int(r.data.tags["hyperflow.trial"]))


def load_champion(uri: str, name: str):  # type: ignore[no-untyped-def]
    import mlflow
    import mlflow.pytorch

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return mlflow.pytorch.load_model(f"models:/{name}@champion")


@pytest.fixture(scope="module")
def parallel_study(prefect_server, tmp_path_factory):  # type: ignore[no-untyped-def]
    """One real search: 4 trials, 2 in parallel, dropout and batch norm on."""
    from hyperflow.flows.search_flow import run_search

    tmp = tmp_path_factory.mktemp("parallel")
    cfg = small_config(
        tmp,
        model={
            "hidden_layers": [64],
            "max_epochs": 8,
            "dropout": 0.1,
            "batch_norm": True,
            "optimizer": "adam",
        },
        search={
            "strategy": "random",
            "n_trials": 4,
            "n_parallel": 2,
            "space": {
                "learning_rate": {"low": 2e-3, "high": 2e-2, "log": True},
                "hidden_layers": {"choices": [[64], [96, 32]]},
            },
        },
    )
    result = run_search(cfg)
    return cfg, result, MlflowClient(result.tracking_uri, registry_uri=result.tracking_uri)


@pytest.mark.slow
def test_study_run_has_the_schema(parallel_study) -> None:  # type: ignore[no-untyped-def]
    cfg, result, client = parallel_study
    run = client.get_run(result.study_run_id)
    tags = run.data.tags
    assert run.info.status == "FINISHED"
    assert tags["hyperflow.role"] == "study"
    assert tags["hyperflow.strategy"] == "random"
    assert tags["hyperflow.config_hash"] == config_hash(cfg)
    assert tags["hyperflow.flow_run_id"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode == 0:
        assert tags["mlflow.source.git.commit"] == head.stdout.strip()
    params = run.data.params
    assert params["model.optimizer"] == "adam"
    assert params["search.n_trials"] == "4"
    assert set(params) == set(flatten(cfg))
    data = load_dataset(cfg.data, cfg.seed)
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == "digits"
    assert dataset_input.dataset.digest == data.digest
    artifacts = {a.path for a in client.list_artifacts(result.study_run_id)}
    assert {"config.yaml", "environment.txt", "plots", "best_model"} <= artifacts
    plots = {a.path for a in client.list_artifacts(result.study_run_id, "plots")}
    assert plots == {"plots/optimization_history.png", "plots/learning_curves.png"}
    metrics = run.data.metrics
    assert metrics["n_trials_completed"] + metrics["n_trials_pruned"] + metrics["n_trials_failed"] == 4
    assert "test_accuracy" in metrics and "test_loss" in metrics


@pytest.mark.slow
def test_trial_runs_hold_params_curves_and_weights(parallel_study, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg, result, client = parallel_study
    runs = trial_runs(client, result.study_run_id)
    assert [r.data.tags["hyperflow.trial"] for r in runs] == ["0", "1", "2", "3"]
    data = load_dataset(cfg.data, cfg.seed)
    for run in runs:
        assert run.data.tags["hyperflow.role"] == "trial"
        assert run.data.tags["hyperflow.state"] == "completed"
        assert run.data.tags["hyperflow.seed"].isdigit()
        assert set(run.data.params) == {"learning_rate", "hidden_layers"}
        epochs = int(run.data.metrics["epochs_trained"])
        assert epochs == 8
        for name in ("val_loss", "val_accuracy", "train_loss"):
            history = client.get_metric_history(run.info.run_id, name)
            assert sorted(m.step for m in history) == list(range(epochs))
        hidden = json.loads(run.data.params["hidden_layers"])
        assert run.data.metrics["param_count"] == expected_param_count(64, hidden, 10, batch_norm=True)
        files = {a.path for a in client.list_artifacts(run.info.run_id, "weights")}
        assert files == {"weights/state_dict.pt", "weights/histograms.json"}
        assert "weight_histograms.png" in {a.path for a in client.list_artifacts(run.info.run_id)}
        folder = Path(client.download_artifacts(run.info.run_id, "weights", str(tmp_path / run.info.run_id)))
        hist = json.loads((folder / "histograms.json").read_text())
        state = torch.load(folder / "state_dict.pt", weights_only=True)
        widths = [data.n_features, *hidden, data.n_outputs]
        linear_shapes = [
            list(v["shape"]) for k, v in hist.items() if k.endswith("weight") and len(v["shape"]) == 2
        ]
        assert linear_shapes == [[b, a] for a, b in itertools.pairwise(widths)]
        for name, h in hist.items():
            assert list(state[name].shape) == h["shape"]
            assert sum(h["counts"]) == state[name].numel()
            assert len(h["bin_edges"]) == len(h["counts"]) + 1
            assert h["mean"] == pytest.approx(float(state[name].double().mean()), abs=1e-6)


@pytest.mark.slow
def test_best_is_the_best_trial_and_trials_overlap(parallel_study) -> None:  # type: ignore[no-untyped-def]
    _cfg, result, client = parallel_study
    runs = trial_runs(client, result.study_run_id)
    values = {r.info.run_id: r.data.metrics["val_accuracy"] for r in runs}
    best_run = max(values, key=values.get)
    study = client.get_run(result.study_run_id).data
    assert study.metrics["best_val_accuracy"] == pytest.approx(values[best_run])
    assert study.tags["hyperflow.best_run_id"] == best_run
    spans = sorted((r.info.start_time, r.info.end_time) for r in runs)
    overlaps = sum(1 for a, b in itertools.pairwise(spans) if b[0] < a[1])
    assert overlaps >= 1, f"no two trials ran at the same time: {spans}"


@pytest.mark.slow
def test_champion_loads_scores_the_test_split_and_is_deterministic(parallel_study) -> None:  # type: ignore[no-untyped-def]
    cfg, result, client = parallel_study
    assert result.promoted
    model = load_champion(result.tracking_uri, cfg.name)
    data = load_dataset(cfg.data, cfg.seed)
    raw = torch.as_tensor(
        data.raw_features(data.X_test)
    )  # float64: the network scales in the rows' precision
    scores = model(raw)
    accuracy = float((scores.argmax(dim=1).numpy() == data.y_test).mean())
    assert accuracy >= 0.9
    assert torch.equal(model(raw), scores), "repeated calls must agree (eval mode)"
    batch = raw[:300]
    alone = model(batch[7:8])
    assert torch.allclose(alone, model(batch)[7:8], atol=1e-5)
    version = client.get_model_version_by_alias(cfg.name, "champion")
    assert float(version.tags["hyperflow.test_value"]) == pytest.approx(result.test_metrics["test_accuracy"])


@pytest.mark.slow
def test_prefect_flow_run_completed_with_a_task_run_per_trial(parallel_study) -> None:  # type: ignore[no-untyped-def]
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from servers import poll

    _cfg, result, client = parallel_study
    flow_run_id = client.get_run(result.study_run_id).data.tags["hyperflow.flow_run_id"]

    with get_client(sync_client=True) as prefect:
        flow_run = prefect.read_flow_run(flow_run_id)
    assert flow_run.state is not None and flow_run.state.is_completed()

    def recorded() -> list[Any]:
        # Task runs reach Prefect's database through its server's event pipeline, a moment
        # after the flow run has ended: read until every trial's is there.
        with get_client(sync_client=True) as prefect:
            found = prefect.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id]))
            )
        trials = [t for t in found if t.task_key.startswith("train_trial") or t.name.startswith("trial-")]
        settled = all(t.state is not None and t.state.is_final() for t in found)
        return found if len(trials) >= 4 and settled and {"prepare-data", "log-best"} <= _names(found) else []

    tasks = poll("every task run of the flow run in Prefect's database", recorded, 60)
    trials = [t for t in tasks if t.task_key.startswith("train_trial") or t.name.startswith("trial-")]
    assert sorted(t.name for t in trials) == ["trial-0", "trial-1", "trial-2", "trial-3"]
    assert all(t.state is not None and t.state.is_completed() for t in trials)
    assert {"prepare-data", "log-best"} <= _names(tasks)


def _names(tasks: list[Any]) -> set[str]:
    """The task names of other task runs than trials (`prepare-data-1a2` -> `prepare-data`)."""
    return {t.name.rsplit("-", 1)[0] for t in tasks if not t.name.startswith("trial-")}


@pytest.mark.slow
def test_same_config_twice_gives_the_same_trials(prefect_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from hyperflow.flows.search_flow import run_search

    outcomes = []
    for attempt in ("a", "b"):
        folder = tmp_path / attempt
        folder.mkdir()
        cfg = small_config(
            folder,
            name="repro",
            model={"max_epochs": 3, "dropout": 0.2},
            search={"strategy": "bayes", "n_trials": 3, "bayes": {"n_initial_points": 2, "surrogate": "RF"}},
        )
        result = run_search(cfg)
        client = MlflowClient(result.tracking_uri, registry_uri=result.tracking_uri)
        outcomes.append(
            [
                (r.data.params["learning_rate"], r.data.metrics["val_accuracy"])
                for r in trial_runs(client, result.study_run_id)
            ]
        )
    assert len(outcomes[0]) == 3
    assert outcomes[0] == outcomes[1]


@pytest.mark.slow
def test_champion_moves_only_when_beaten_or_always(prefect_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from hyperflow.flows.search_flow import run_search

    store = {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    good = run_search(
        small_config(tmp_path, name="promo", tracking=store, model={"max_epochs": 5}, search={"n_trials": 1})
    )
    assert good.promoted and good.model_version == "1"
    worse_cfg = dict(
        model={"max_epochs": 1, "learning_rate": 1e-4},
        search={"n_trials": 1, "space": {"learning_rate": {"low": 1e-4, "high": 2e-4}}},
    )
    worse = run_search(small_config(tmp_path, name="promo", tracking=store, **worse_cfg))
    assert worse.test_metrics["test_accuracy"] < good.test_metrics["test_accuracy"]
    assert not worse.promoted and worse.model_version == "2"
    client = MlflowClient(good.tracking_uri, registry_uri=good.tracking_uri)
    assert str(client.get_model_version_by_alias("promo", "champion").version) == "1"
    forced = run_search(
        small_config(tmp_path, name="promo", tracking={**store, "promote": "always"}, **worse_cfg)
    )
    assert forced.promoted
    assert str(client.get_model_version_by_alias("promo", "champion").version) == forced.model_version == "3"


@pytest.mark.parametrize("strategy", ["grid", "random", "bayes", "genetic"])
@pytest.mark.slow
def test_every_strategy_completes_a_search(prefect_server, tmp_path: Path, strategy: str) -> None:  # type: ignore[no-untyped-def]
    from hyperflow.flows.search_flow import run_search

    cfg = small_config(
        tmp_path,
        model={"max_epochs": 2},
        search={
            "strategy": strategy,
            "n_trials": 4,
            "space": {
                "learning_rate": {"low": 0.01, "high": 0.1, "log": True},
                "batch_size": {"choices": [32, 64]},
            },
            "grid": {"points_per_dimension": 2},
            "bayes": {"n_initial_points": 2, "surrogate": "ET"},
            "genetic": {"population_size": 2, "elite": 1},
        },
    )
    result = run_search(cfg)
    client = MlflowClient(result.tracking_uri, registry_uri=result.tracking_uri)
    runs = trial_runs(client, result.study_run_id)
    assert result.status == "FINISHED"
    assert len(runs) == 4
    assert len({(r.data.params["learning_rate"], r.data.params["batch_size"]) for r in runs}) == 4
    assert client.get_run(result.study_run_id).data.tags["hyperflow.strategy"] == strategy


def test_cli_rejects_a_broken_config_before_any_run(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: broken\nsearch:\n  n_trials: 0\n  space:\n    learning_rate: {low: 0.0, high: 0.1, log: true}\n"
    )
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "hyperflow"), "run", str(bad)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "search.n_trials" in proc.stderr
    assert "search.space.learning_rate" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()


@pytest.mark.slow
def test_curve_fit_prunes_a_hopeless_trial_and_says_why(prefect_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from hyperflow.flows.search_flow import run_search

    # Grid order is fixed: a good learning rate first (it completes), then two hopeless ones.
    cfg = small_config(
        tmp_path,
        model={"max_epochs": 20, "hidden_layers": [32]},
        search={
            "strategy": "grid",
            "n_trials": 3,
            "space": {"learning_rate": {"choices": [0.05, 1e-4, 2e-4]}},
        },
        early_stopping={"kind": "curve_fit", "min_epochs": 4},
    )
    result = run_search(cfg)
    client = MlflowClient(result.tracking_uri, registry_uri=result.tracking_uri)
    runs = trial_runs(client, result.study_run_id)
    first, *rest = runs
    assert first.data.tags["hyperflow.state"] == "completed"
    best_then = first.data.metrics["val_accuracy"]
    pruned = [r for r in rest if r.data.tags["hyperflow.state"] == "pruned"]
    assert pruned, [r.data.tags["hyperflow.state"] for r in rest]
    for run in pruned:
        assert run.info.status == "FINISHED"
        assert run.data.tags["hyperflow.stop_reason"]
        assert run.data.metrics["predicted_final_val_accuracy"] < best_then
        assert run.data.metrics["epochs_trained"] < 20
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")]
        assert sorted(steps) == list(range(int(run.data.metrics["epochs_trained"])))
    assert result.n_pruned == len(pruned)
    assert client.get_run(result.study_run_id).data.metrics["n_trials_pruned"] == len(pruned)
    assert result.best_trial == 0, "a pruned trial is never the best"


def test_prefect_retries_infrastructure_errors_only() -> None:
    from prefect.states import Completed, Failed

    from hyperflow.components.study import TrialError
    from hyperflow.components.trial import TrialResult
    from hyperflow.flows.search_flow import _infrastructure_only

    failed_trial = TrialError("nan", TrialResult(params={}, seed=0, state="failed"))
    assert _infrastructure_only(None, None, Failed(data=failed_trial)) is False
    assert _infrastructure_only(None, None, Failed(data=ConnectionError("refused"))) is True
    assert _infrastructure_only(None, None, Completed(data=1)) is False


def _still_serving(proc: psutil.Process) -> bool:
    """Alive and not a zombie (an orphan that no init reaps in this container counts as gone)."""
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _ui_argv(config: Path, port: int) -> list[str]:
    return [str(Path(sys.executable).parent / "hyperflow"), "ui", str(config), "--port", str(port)]


def _ui_config(folder: Path) -> Path:
    """A config that names only a SQLite store of its own, for `hyperflow ui`."""
    config = folder / "c.yaml"
    config.write_text(f"name: ui\ntracking: {{uri: 'sqlite:///{folder / 'ui.db'}'}}\n")
    return config


@pytest.mark.slow
def test_hyperflow_ui_serves_the_configured_store(tmp_path: Path) -> None:
    import urllib.request

    from servers import free_port, stop, wait_http

    port, config = free_port(), _ui_config(tmp_path)
    proc = subprocess.Popen(
        _ui_argv(config, port),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc, 120)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as page:
            assert page.status == 200
        servers = psutil.Process(proc.pid).children(recursive=True)  # MLflow's process and its uvicorn
        assert servers
        # A SIGTERM to the command alone (as a supervisor sends it) ends the UI's processes too.
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        _, alive = psutil.wait_procs(servers, timeout=30)
        assert [p for p in alive if _still_serving(p)] == [], alive
    finally:
        stop(proc)
    assert proc.stdout is not None
    printed = proc.stdout.read().decode()
    assert f"MLflow UI on http://127.0.0.1:{port}" in printed
    assert (tmp_path / "ui.db").exists(), "the UI opened the config's store"
    # A port in use: refused by name, before anything starts; so is a port out of range.
    busy = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", busy))
        taken.listen()
        refused = subprocess.run(
            _ui_argv(config, busy),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert refused.returncode == 2
    assert f"--port {busy}: cannot listen on 127.0.0.1:{busy}" in refused.stderr
    out_of_range = subprocess.run(
        [str(Path(sys.executable).parent / "hyperflow"), "ui", "--port", "99999"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out_of_range.returncode == 2
    assert "--port" in out_of_range.stderr and "Traceback" not in out_of_range.stderr


@pytest.mark.slow
def test_hyperflow_ui_ends_its_servers_when_its_terminal_closes(tmp_path: Path) -> None:
    """MLflow's processes run in a session of their own (a Ctrl-C is the command's to handle), so
    a closed terminal's SIGHUP reaches the command alone: it must end them, not leave them serving."""
    from servers import Terminal, free_port, poll, wait_http

    port, config = free_port(), _ui_config(tmp_path)
    terminal = Terminal(_ui_argv(config, port), cwd=tmp_path)
    servers: list[psutil.Process] = []
    try:
        wait_http(f"http://127.0.0.1:{port}/health", terminal.proc, 120)  # type: ignore[arg-type]
        poll(
            "the address on the terminal",
            lambda: f"MLflow UI on http://127.0.0.1:{port}" in terminal.text(),
            30,
        )
        servers = psutil.Process(terminal.proc.pid).children(recursive=True)
        assert servers
        terminal.hang_up()
        assert terminal.proc.wait(timeout=60) == 0
        _, alive = psutil.wait_procs(servers, timeout=30)
        assert [p for p in alive if _still_serving(p)] == [], alive
    finally:
        terminal.hang_up()
        if terminal.proc.poll() is None:
            os.killpg(terminal.proc.pid, signal.SIGKILL)
        for leftover in servers:  # in a session of their own: the command's group does not hold them
            with contextlib.suppress(psutil.Error):
                leftover.kill()


@pytest.mark.slow
def test_a_killed_hyperflow_ui_leaves_no_mlflow_process_serving(tmp_path: Path) -> None:
    """kill -9 skips every clean-up of the command: its group leader (armed with a death signal)
    ends MLflow's process and the uvicorn that one started."""
    from servers import free_port, wait_http

    port, config = free_port(), _ui_config(tmp_path)
    proc = subprocess.Popen(
        _ui_argv(config, port),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    servers: list[psutil.Process] = []
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc, 120)
        servers = psutil.Process(proc.pid).children(recursive=True)
        assert len(servers) >= 3, "the group leader, MLflow's process and its uvicorn"
        proc.kill()
        proc.wait(timeout=30)
        _, alive = psutil.wait_procs(servers, timeout=30)
        assert [p for p in alive if _still_serving(p)] == [], alive
    finally:
        for leftover in servers:
            with contextlib.suppress(psutil.Error):
                leftover.kill()
        if proc.poll() is None:
            proc.kill()


def test_validate_prints_the_space_grid_size_and_parameter_range(tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "hyperflow"), "validate", str(ROOT / "conf" / "grid.yaml")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "# resolved config" in out and "points_per_dimension: 3" in out
    assert "learning_rate  real [0.001, 0.1] log" in out
    assert "hidden_layers  one of [[64], [128, 64]]" in out
    assert "grid points: 18" in out
    smallest = expected_param_count(64, [64], 10)
    largest = expected_param_count(64, [128, 64], 10)
    assert f"parameters: {smallest:,} to {largest:,}" in out
    assert not (tmp_path / "mlflow.db").exists(), "validate creates no tracking store"


@pytest.mark.slow
def test_a_study_whose_every_trial_failed_ends_its_flow_run_failed(prefect_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Prefect's UI and a deployment's alerts must see the failure, not a Completed flow run."""
    from mlflow.tracking import MlflowClient
    from prefect.client.orchestration import get_client

    from hyperflow.flows.search_flow import run_search

    space = {"learning_rate": {"choices": [1e5, 1e6]}}  # every trial diverges: failed
    cfg = small_config(
        tmp_path, model={"max_epochs": 2}, search={"strategy": "grid", "space": space, "n_trials": 2}
    )
    result = run_search(cfg)
    assert result.status == "FAILED" and result.n_failed == 2, "the caller still gets the study's result"
    flow_run_id = (
        MlflowClient(result.tracking_uri).get_run(result.study_run_id).data.tags["hyperflow.flow_run_id"]
    )
    with get_client(sync_client=True) as prefect:
        state = prefect.read_flow_run(flow_run_id).state
    assert state is not None and state.is_failed(), state
    assert state.message and state.message.startswith(
        "the study ended FAILED: no trial completed (2 failed, 0 pruned)"
    )
