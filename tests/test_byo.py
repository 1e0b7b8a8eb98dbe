"""Bring your own model: a user's LightningModule and DataModule by import path, and the Python API."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
import torch
import yaml
from conftest import ROOT
from mlflow.tracking import MlflowClient

from hyperflow.components.adapters import LightningAdapter
from hyperflow.components.config import ConfigError, load_config, validate_config
from hyperflow.components.curves import StopPolicy
from hyperflow.components.training import build_module, train_trial
from hyperflow.components.trial import TrialPruned, TrialSpec
from hyperflow.components.usercode import UserCodeError, check_user_code, import_object, registered

EXAMPLE = ROOT / "examples" / "digits_cnn" / "config.yaml"
HYPERFLOW = str(Path(sys.executable).parent / "hyperflow")
CNN_PARAMS = {"learning_rate": 3e-3, "channels": 8, "dropout": 0.1, "weight_decay": 1e-4, "batch_size": 64}


def example_config(*overrides: str) -> Any:
    return load_config(EXAMPLE, ["model.max_epochs=2", *overrides])


def user_project(tmp_path: Path) -> Path:
    """A user's project folder: the example package next to where hyperflow runs."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def trial_runs(client: MlflowClient, study_run_id: str) -> list:
    exp = client.get_run(study_run_id).info.experiment_id
    runs = client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{study_run_id}'")
    return sorted(runs, key=lambda r: int(r.data.tags["hyperflow.trial"]))


# --------------------------------------------------------------------------------------------
# Config and checks before anything runs


def test_the_example_validates_against_its_constructors() -> None:
    cfg = load_config(EXAMPLE)
    check_user_code(cfg)
    assert set(cfg.search.space) == {"learning_rate", "channels", "dropout", "weight_decay", "batch_size"}


def test_a_searched_hyperparameter_the_module_does_not_take_is_named() -> None:
    cfg = example_config("search.space.momentum={low: 0.1, high: 0.9}", "model.args.depth=3")
    with pytest.raises(UserCodeError) as err:
        check_user_code(cfg)
    paths = dict(err.value.problems)
    assert "DigitsCNN(" in paths["search.space.momentum"] and "'momentum'" in paths["search.space.momentum"]
    assert "'depth'" in paths["model.args.depth"]
    assert set(paths) == {"search.space.momentum", "model.args.depth"}


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("examples.digits_cnn.nope:DigitsCNN", "no module named 'examples.digits_cnn.nope'"),
        ("examples.digits_cnn.model:Nope", "has no attribute 'Nope'"),
        ("examples.digits_cnn.data:DigitsDataModule", "not a LightningModule subclass"),
    ],
)
def test_an_import_path_that_names_no_module_is_a_clear_error(path: str, fragment: str) -> None:
    with pytest.raises(UserCodeError) as err:
        check_user_code(example_config(f"model.module={path}"))
    ((key, message),) = err.value.problems
    assert key == "model.module" and fragment in message


def test_config_checks_the_form_of_import_paths_and_a_lone_datamodule() -> None:
    with pytest.raises(ConfigError) as err:
        validate_config({"model": {"module": "no_colon"}, "data": {"module": "pkg data:DM"}})
    paths = {p for p, _ in err.value.problems}
    assert paths == {"model.module", "data.module"}
    with pytest.raises(ConfigError, match=r"needs a model\.module"):
        validate_config({"data": {"module": "pkg.data:DM"}})


def test_custom_module_space_keys_need_not_be_builtin_fields() -> None:
    cfg = validate_config(
        {
            "model": {"module": "examples.digits_cnn.model:DigitsCNN", "args": {"kernel_size": 5}},
            "search": {"space": {"channels": {"choices": [4, 8]}}, "initial_points": [{"channels": 4}]},
        }
    )
    assert cfg.search.space["channels"].choices == [4, 8]  # type: ignore[union-attr]


# --------------------------------------------------------------------------------------------
# A user's LightningModule and DataModule in one trial


def test_example_trains_with_its_own_metrics_and_rebuilds_without_data() -> None:
    cfg = example_config()
    spec = TrialSpec.from_config(cfg, num_threads=1)
    result = train_trial(None, CNN_PARAMS, spec, seed=3)
    assert result.state == "completed", result.error
    assert set(result.history) == {"train_loss", "train_accuracy", "val_loss", "val_accuracy"}
    assert result.epochs_trained == 2 and result.value == result.history["val_accuracy"][-1]
    assert result.value > 0.5
    assert "features.0.weight" in result.param_names and result.state_dict is not None
    # The module got the sampled values and model.args; the DataModule got batch_size and the seed.
    module = build_module(None, CNN_PARAMS, spec)
    assert dict(module.hparams) == {
        "channels": 8,
        "kernel_size": 3,
        "dropout": 0.1,
        "learning_rate": 3e-3,
        "weight_decay": 1e-4,
    }
    assert result.param_count == sum(p.numel() for p in module.parameters())
    module.load_state_dict(result.state_dict)  # what resume does with weights/state_dict.pt
    test = LightningAdapter(spec).evaluate(module, None, CNN_PARAMS)
    assert test["test_accuracy"] > 0.5 and "test_loss" in test


def _epoch_end_module(lightning: Any) -> type:
    """A module that logs its search metric in on_train_epoch_end, with no validation_step."""

    class EpochEndModule(lightning.LightningModule):
        def __init__(self, in_features: int, out_features: int, hidden: int = 16, lr: float = 0.1) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(
                torch.nn.Linear(in_features, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, out_features)
            )
            self.lr = lr
            self.correct = 0
            self.seen = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.net(x)
            return out

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            logits = self(x)
            self.correct += int((logits.argmax(1) == y).sum())
            self.seen += len(y)
            return torch.nn.functional.cross_entropy(logits, y)

        def on_train_epoch_end(self) -> None:
            self.log("train_score", self.correct / self.seen)
            self.correct = self.seen = 0

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)

    return EpochEndModule


@pytest.mark.parametrize("namespace", ["lightning.pytorch", "pytorch_lightning"])
def test_either_lightning_package_trains_on_builtin_data_with_epoch_end_metrics(
    namespace: str, digits: Any
) -> None:
    lightning = pytest.importorskip(namespace)
    cls = _epoch_end_module(lightning)
    path = f"test_byo_{namespace.replace('.', '_')}:EpochEndModule"
    with registered(path, cls):
        cfg = validate_config(
            {
                "model": {"module": path, "max_epochs": 3, "batch_size": 32},
                "search": {"metric": "train_score", "space": {"hidden": {"choices": [8, 16]}}},
            }
        )
        check_user_code(cfg)
        spec = TrialSpec.from_config(cfg, num_threads=1)
        result = train_trial(digits, {"hidden": 8}, spec, seed=0)
    assert result.state == "completed", result.error
    # Read after the module's own epoch-end hook: the Trainer of the module's package ran it last.
    assert len(result.history["train_score"]) == 3
    assert result.history["train_score"][-1] > 0.8
    assert result.param_count == (64 + 1) * 8 + (8 + 1) * 10


# --------------------------------------------------------------------------------------------
# A plain training function


def _spec(objective: Any, **search: Any) -> TrialSpec:
    with registered("toy:objective", objective):
        cfg = validate_config(
            {
                "model": {"module": "toy:objective", "max_epochs": 6, "args": {"scale": 2.0}},
                "search": {"metric": "score", "space": {"quality": {"low": 0.0, "high": 1.0}}, **search},
            }
        )
        return TrialSpec.from_config(cfg, num_threads=1)


def test_a_function_gets_params_reports_and_is_pruned_through_report() -> None:
    seen: list[dict[str, Any]] = []
    epochs: list[int] = []

    def objective(params: dict[str, Any], report: Any) -> float:
        seen.append(params)
        for epoch in range(params["max_epochs"]):
            epochs.append(epoch)
            report(epoch, params["quality"] * (epoch + 1), train_loss=1.0 / (epoch + 1))
        return params["quality"] * params["max_epochs"]

    spec = _spec(objective)
    logged: list[tuple[int, dict[str, float]]] = []
    done = train_trial(None, {"quality": 0.5}, spec, seed=1, on_epoch=lambda e, m: logged.append((e, m)))
    assert done.state == "completed" and done.value == pytest.approx(3.0)
    assert seen == [{"scale": 2.0, "max_epochs": 6, "quality": 0.5}]
    assert [e for e, _ in logged] == list(range(6))
    assert logged[2][1] == {"score": pytest.approx(1.5), "train_loss": pytest.approx(1 / 3)}
    assert done.curve == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.5, 3.0])

    policy = StopPolicy(
        kind="median", metric="score", mode="max", min_epochs=2, completed=(tuple(done.curve),), best=3.0
    )
    epochs.clear()
    pruned = train_trial(None, {"quality": 0.1}, spec, seed=2, stop_policy=policy)
    assert pruned.state == "pruned" and pruned.stop_reason and pruned.stop_reason.startswith("median")
    assert epochs == [0, 1], "report raised: the function stopped at the epoch the rule said"
    assert pruned.value == pytest.approx(0.2) and pruned.epochs_trained == 2


def test_a_function_that_catches_trialpruned_to_clean_up_is_still_pruned() -> None:
    def objective(params: dict[str, Any], report: Any) -> float:
        try:
            for epoch in range(params["max_epochs"]):
                report(epoch, params["quality"])
        except TrialPruned:
            return 99.0  # cleaned up; the value is ignored: the trial was stopped
        return params["quality"]

    policy = StopPolicy(
        kind="median", metric="score", mode="max", min_epochs=2, completed=((1.0,) * 6,), best=1.0
    )
    result = train_trial(None, {"quality": 0.5}, _spec(objective), seed=0, stop_policy=policy)
    assert result.state == "pruned" and result.value == 0.5 and result.epochs_trained == 2


def test_a_function_that_raises_trialpruned_itself_is_pruned_with_its_reason() -> None:
    import hyperflow

    def objective(params: dict[str, Any], report: Any) -> float:
        for epoch in range(params["max_epochs"]):
            report(epoch, params["quality"] * (epoch + 1))
            if epoch == 2:
                raise hyperflow.TrialPruned("my own rule")  # as one raises optuna.TrialPruned
        return 1.0

    result = train_trial(None, {"quality": 0.5}, _spec(objective), seed=0)
    assert result.state == "pruned" and result.error is None
    assert result.stop_reason == "pruned by the trial's own code: my own rule"
    assert result.value == pytest.approx(1.5) and result.epochs_trained == 3
    # Pruned before it reported anything: no result, so failed (as a completed trial would be).
    scope: dict[str, Any] = {}
    exec("def early(params, report):\n    raise TrialPruned()\n", {"TrialPruned": TrialPruned}, scope)
    early = train_trial(None, {"quality": 0.5}, _spec(scope["early"]), seed=0)
    assert early.state == "failed" and "no epoch reported score" in (early.error or "")


@pytest.mark.parametrize(
    ("body", "state", "error"),
    [
        ("report(0, float('nan'))", "failed", "score became nan"),
        ("raise RuntimeError('boom')", "failed", "RuntimeError: boom"),
        ("return None", "failed", "returned nothing and reported nothing"),
        ("return 'high'", "failed", "returned str"),
        ("return (0.5, 'notamodel')", "failed", "the second element must be a torch model"),
        ("report(0, 0.5); return None", "completed", None),
    ],
)
def test_a_failing_function_fails_its_trial_only(body: str, state: str, error: str | None) -> None:
    scope: dict[str, Any] = {}
    exec(f"def objective(params, report):\n    {body}\n", scope)
    result = train_trial(None, {"quality": 0.5}, _spec(scope["objective"]), seed=0)
    assert result.state == state
    assert (result.error is None) if error is None else (error in (result.error or ""))


def test_a_returned_value_other_than_the_last_report_is_logged_one_step_later() -> None:
    def objective(params: dict[str, Any], report: Any) -> float:
        for epoch in range(3):
            report(epoch, params["quality"] * (epoch + 1))
        return -5.0

    logged: list[tuple[int, dict[str, float]]] = []
    done = train_trial(
        None, {"quality": 0.5}, _spec(objective), seed=0, on_epoch=lambda e, m: logged.append((e, m))
    )
    assert done.state == "completed" and done.value == -5.0
    # Each step holds one value: MLflow's latest is the returned value, whatever the timestamps.
    assert [(e, m["score"]) for e, m in logged] == [(0, 0.5), (1, 1.0), (2, 1.5), (3, -5.0)]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("report(0, 0.5)", "search.objectives: 'other' was never logged by the trial (log it each epoch"),
        ("report(0, 0.5, other=float('inf'))", "search.objectives: 'other' was inf at the last epoch"),
        (
            "report(0, 0.5, other=1.0); report(1, 0.6, other=float('nan'))",
            "'other' was nan at the last epoch",
        ),
    ],
)
def test_a_trial_without_a_finite_value_of_every_objective_fails_saying_which(body: str, error: str) -> None:
    scope: dict[str, Any] = {}
    exec(f"def objective(params, report):\n    {body}\n", scope)
    objectives = [{"metric": "score", "mode": "max"}, {"metric": "other", "mode": "min"}]
    spec = _spec(scope["objective"], objectives=objectives)
    assert spec.logged_objectives == ("other",)
    result = train_trial(None, {"quality": 0.5}, spec, seed=0)
    assert result.state == "failed" and error in (result.error or ""), result.error
    scope = {}
    exec("def fine(params, report):\n    report(0, 0.5, other=2.0)\n", scope)
    fine = train_trial(None, {"quality": 0.5}, _spec(scope["fine"], objectives=objectives), seed=0)
    assert fine.state == "completed", fine.error


def test_a_closure_travels_to_worker_processes_by_value_and_may_return_its_model() -> None:
    weight = torch.nn.Linear(3, 2)

    def objective(params: dict[str, Any], report: Any) -> tuple[float, torch.nn.Module]:
        report(0, params["quality"])
        return params["quality"], weight

    spec = cloudpickle.loads(cloudpickle.dumps(_spec(objective)))  # what Prefect does for process pools
    result = train_trial(None, {"quality": 0.25}, spec, seed=0)
    assert result.state == "completed" and result.value == 0.25
    assert result.param_names == ["weight", "bias"] and result.param_count == 8
    assert result.state_dict is not None and torch.equal(result.state_dict["weight"], weight.weight)


def test_import_object_finds_a_package_in_the_working_directory(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "mytrainer_byo").mkdir()
    (tmp_path / "mytrainer_byo" / "__init__.py").write_text("def fit(params, report):\n    return 1.0\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert import_object("mytrainer_byo:fit")({}, None) == 1.0


# --------------------------------------------------------------------------------------------
# End to end: the real CLI and the real flow


def _cli(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": ""}
    return subprocess.run(
        [HYPERFLOW, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
def test_the_example_searches_through_the_cli(prefect_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    project = user_project(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = _cli(
        [
            "run",
            "examples/digits_cnn/config.yaml",
            "--set",
            "search.strategy=random",
            "--set",
            "search.n_trials=4",
            "--set",
            "search.n_parallel=2",
            "--set",
            "model.max_epochs=3",
            "--set",
            "search.space.channels={choices: [4, 8]}",
            "--set",
            f"tracking.uri={uri}",
        ],
        project,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    client = MlflowClient(uri, registry_uri=uri)
    (exp,) = [e for e in client.search_experiments() if e.name == "digits-cnn"]
    (study,) = client.search_runs([exp.experiment_id], "tags.`hyperflow.role` = 'study'")
    runs = trial_runs(client, study.info.run_id)
    assert len(runs) == 4 and all(r.data.tags["hyperflow.state"] == "completed" for r in runs)
    assert len({r.data.tags["hyperflow.pid"] for r in runs}) == 2, "two worker processes imported the module"
    cnn = import_object("examples.digits_cnn.model:DigitsCNN")
    for run in runs:
        assert set(run.data.params) == {"learning_rate", "channels", "dropout", "weight_decay", "batch_size"}
        for name in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            history = client.get_metric_history(run.info.run_id, name)
            assert sorted(m.step for m in history) == [0, 1, 2], name
        channels = int(run.data.params["channels"])
        expected = sum(p.numel() for p in cnn(channels=channels, kernel_size=3).parameters())
        assert run.data.metrics["param_count"] == expected
        folder = Path(client.download_artifacts(run.info.run_id, "weights", str(tmp_path / run.info.run_id)))
        hist = json.loads((folder / "histograms.json").read_text())
        assert hist["features.0.weight"]["shape"] == [channels, 1, 3, 3]
        assert hist["features.3.weight"]["shape"] == [2 * channels, channels, 3, 3]
        assert sum(hist["features.3.weight"]["counts"]) == 2 * channels * channels * 9
        png = Path(client.download_artifacts(run.info.run_id, "weight_histograms.png", str(tmp_path / "png")))
        assert png.stat().st_size > 0
    values = {r.info.run_id: r.data.metrics["val_accuracy"] for r in runs}
    assert study.data.tags["hyperflow.best_run_id"] == max(values, key=lambda run_id: values[run_id])
    assert study.data.metrics["best_val_accuracy"] == pytest.approx(max(values.values()))

    import mlflow.pytorch

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    champion = mlflow.pytorch.load_model("models:/digits-cnn@champion")
    data_cls = import_object("examples.digits_cnn.data:DigitsDataModule")
    datamodule = data_cls(seed=0)
    datamodule.setup("test")
    images, labels = datamodule.test_set.tensors
    scores = champion(images)
    accuracy = float((scores.argmax(dim=1) == labels).float().mean())
    assert accuracy == pytest.approx(study.data.metrics["test_accuracy"], abs=1e-4)
    assert accuracy > 0.5
    assert torch.allclose(champion(images[5:6]), scores[5:6], atol=1e-5)
    version = client.get_model_version_by_alias("digits-cnn", "champion")
    assert float(version.tags["hyperflow.test_value"]) == pytest.approx(accuracy, abs=1e-4)


def test_cli_validate_names_a_hyperparameter_the_module_does_not_take(tmp_path: Path) -> None:
    project = user_project(tmp_path)
    proc = _cli(
        [
            "validate",
            "examples/digits_cnn/config.yaml",
            "--set",
            "search.space.momentum={low: 0.5, high: 0.9}",
        ],
        project,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "search.space.momentum" in proc.stderr and "DigitsCNN(" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_run_with_a_missing_module_fails_before_any_run(tmp_path: Path) -> None:
    project = user_project(tmp_path)
    proc = _cli(["run", "examples/digits_cnn/config.yaml", "--set", "model.module=examples.cnn:Net"], project)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "model.module" in proc.stderr and "no module named 'examples.cnn'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (project / "mlflow.db").exists() and not (project / "mlruns").exists()


@pytest.mark.slow
def test_python_api_tunes_a_plain_function_with_early_stopping(prefect_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    from hyperflow import ResumeError, search

    calls: list[tuple[float, int]] = []

    def train(params: dict[str, Any], report: Any) -> float:
        value = 0.0
        for epoch in range(params["max_epochs"]):
            calls.append((params["quality"], epoch))
            value = params["quality"] * (1 - 0.5 ** (epoch + 1))
            report(epoch, value, train_loss=1 - value)
        return value

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = {
        "name": "toy-function",
        "model": {"max_epochs": 6},
        "search": {
            "strategy": "grid",
            "metric": "score",
            "n_trials": 4,
            "space": {"quality": {"choices": [0.9, 0.95, 0.2, 0.1]}},
        },
        "early_stopping": {"kind": "median", "min_epochs": 2},
    }
    # Override values as they are, a numpy scalar too (it was a bare "not JSON serializable").
    result = search(config, {"tracking.uri": uri, "search.n_trials": np.int64(4)}, objective=train)
    client = MlflowClient(uri, registry_uri=uri)
    runs = trial_runs(client, result.study_run_id)
    states = [r.data.tags["hyperflow.state"] for r in runs]
    assert states == ["completed", "completed", "pruned", "pruned"]
    assert [q for q, e in calls if e == 5] == [0.9, 0.95]
    assert [e for q, e in calls if q == 0.2] == [0, 1], "report stopped the function at the rule's epoch"
    for run in runs[2:]:
        assert run.data.tags["hyperflow.stop_reason"].startswith("median")
        assert run.data.metrics["epochs_trained"] == 2
        assert [m.step for m in client.get_metric_history(run.info.run_id, "score")] == [0, 1]
    assert sorted(m.step for m in client.get_metric_history(runs[1].info.run_id, "train_loss")) == list(
        range(6)
    )
    assert result.best_params == {"quality": 0.95}
    best = max(
        (r for r in runs if r.data.tags["hyperflow.state"] == "completed"),
        key=lambda r: r.data.metrics["score"],
    )
    assert result.best_value == pytest.approx(best.data.metrics["score"])
    assert result.best_value == pytest.approx(0.95 * (1 - 0.5**6))
    assert result.best_run_id == best.info.run_id
    study = client.get_run(result.study_run_id)
    assert study.info.status == "FINISHED"
    assert study.data.metrics["best_score"] == pytest.approx(result.best_value)
    assert study.data.metrics["n_trials_pruned"] == 2
    assert study.data.params["model.module"].endswith(
        "test_python_api_tunes_a_plain_function_with_early_stopping.<locals>.train"
    )
    assert result.champion_uri is None and result.model_uri is None
    assert "best_model" not in {a.path for a in client.list_artifacts(result.study_run_id)}
    # An unknown study to resume: the public package's ResumeError, documented by search.
    assert "ResumeError" in (search.__doc__ or "")
    from prefect import get_client

    with get_client(sync_client=True) as prefect:
        flow_runs = prefect.count_flow_runs()
    with pytest.raises(ResumeError, match="no run 'deadbeef'"):
        search(config, {"tracking.uri": uri}, objective=train, resume="deadbeef")
    with get_client(sync_client=True) as prefect:
        assert prefect.count_flow_runs() == flow_runs, "refused before a flow run was started"


@pytest.mark.slow
def test_a_project_with_its_own_flows_and_components_packages_runs_in_parallel(
    prefect_server, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    # Prefect projects keep their flows in flows/; `components` is a common name too. Neither may
    # shadow hyperflow's own modules, in the search loop or in its spawned worker processes.
    for package in ("flows", "components"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text(
            f"raise ImportError('the user project {package!r}')\n"
        )
        (tmp_path / package / "search_flow.py").write_text("raise ImportError('not hyperflow')\n")
    (tmp_path / "mytrain.py").write_text(
        "def train(params, report):\n"
        "    value = 0.0\n"
        "    for epoch in range(params['max_epochs']):\n"
        "        value = params['quality'] * (epoch + 1) / params['max_epochs']\n"
        "        report(epoch, value)\n"
        "    return value\n"
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "shadowed",
                "model": {"module": "mytrain:train", "max_epochs": 3},
                "search": {
                    "strategy": "random",
                    "metric": "score",
                    "n_trials": 4,
                    "n_parallel": 2,
                    "space": {"quality": {"low": 0.0, "high": 1.0}},
                },
                "early_stopping": {"kind": "none"},
                "tracking": {"uri": uri},
            }
        )
    )
    proc = _cli(["run", "config.yaml"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "BrokenProcessPool" not in proc.stdout + proc.stderr
    client = MlflowClient(uri)
    (study,) = client.search_runs(
        [client.get_experiment_by_name("shadowed").experiment_id], "tags.`hyperflow.role` = 'study'"
    )
    runs = trial_runs(client, study.info.run_id)
    assert [r.data.tags["hyperflow.state"] for r in runs] == ["completed"] * 4
    assert len({r.data.tags["hyperflow.pid"] for r in runs}) == 2, "the trials ran in two worker processes"


@pytest.mark.slow
def test_a_script_without_a_main_guard_runs_one_study(prefect_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # The plot worker is a spawned process: it must not run the user's script again.
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / "tune.py").write_text(
        "from hyperflow import search\n"
        f"result = search({{'name': 'unguarded', 'model': {{'hidden_layers': [16], 'max_epochs': 2}},"
        f" 'search': {{'strategy': 'random', 'n_trials': 2}}, 'early_stopping': {{'kind': 'none'}},"
        f" 'tracking': {{'uri': {uri!r}}}}})\n"
        "print('status', result.status)\n"
    )
    proc = subprocess.run(
        [sys.executable, "tune.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.count("status FINISHED") == 1
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("unguarded").experiment_id
    assert len(client.search_runs([exp], "tags.`hyperflow.role` = 'study'")) == 1
    for run in trial_runs(
        client, client.search_runs([exp], "tags.`hyperflow.role` = 'study'")[0].info.run_id
    ):
        assert "weight_histograms.png" in {a.path for a in client.list_artifacts(run.info.run_id)}


SCRIPT = """
from hyperflow import search


def train(params, report):
    report(0, params["quality"])
    return params["quality"]


{call}search(
{indent}    {{"name": "guarded", "model": {{"max_epochs": 1}},
{indent}     "search": {{"strategy": "random", "metric": "score", "n_trials": 2, "n_parallel": 2,
{indent}                "space": {{"quality": {{"low": 0.0, "high": 1.0}}}}}},
{indent}     "tracking": {{"uri": "sqlite:///mlflow.db"}}}},
{indent}    objective=train,
{indent})
"""


@pytest.mark.slow
@pytest.mark.parametrize("guarded", [False, True])
def test_a_script_without_the_main_guard_is_refused_before_anything_starts(
    tmp_path: Path, guarded: bool
) -> None:
    call = 'if __name__ == "__main__":\n    ' if guarded else ""
    (tmp_path / "script.py").write_text(SCRIPT.format(call=call, indent="    " if guarded else ""))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_HOME": str(tmp_path / "prefect")}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.run(
        [sys.executable, "script.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    if not guarded:
        # Named in the caller's own process, before a store, a flow run or a worker exists (the
        # workers used to refuse it one by one, and the study ended FAILED with broken-pool trials).
        assert proc.returncode == 1
        assert (
            "hyperflow.search() is called at the top level of script.py (line 10), outside "
            '`if __name__ == "__main__":`, and its trials run in worker processes (search.n_parallel = 2)'
        ) in proc.stderr, proc.stderr[-3000:]
        assert "BrokenProcessPool" not in proc.stderr
        assert not (tmp_path / "mlflow.db").exists(), "nothing was started"
        return
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    (study,) = [r for r in runs if r.data.tags.get("hyperflow.role") == "study"]
    assert study.info.status == "FINISHED"
    assert "hyperflow.search() is called at the top level" not in proc.stderr


def test_the_main_guard_is_found_where_python_puts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caller's line is checked against the script's `if __name__ == "__main__":` blocks."""
    import types

    from hyperflow.api import _refuse_an_unguarded_call
    from hyperflow.components.config import validate_config

    parallel = validate_config({"name": "g", "search": {"n_parallel": 2}})
    script = tmp_path / "tune.py"
    script.write_text(
        "import x\n"  # line 1
        "x.search()\n"  # 2: unguarded
        "if '__main__' == __name__:\n"  # 3
        "    x.search()\n"  # 4: guarded (the comparison either way round)
        "if __name__ == '__main__': x.search()\n"  # 5: guarded, on one line
        "if __name__ != '__main__':\n"  # 6
        "    x.search()\n"  # 7: not a guard
    )
    fake_main = types.ModuleType("__main__")
    fake_main.__file__ = str(script)
    monkeypatch.setitem(sys.modules, "__main__", fake_main)

    def called_at(line: int, cfg: Any = parallel) -> None:
        # Run the check from a frame that is the script's top level, stopped at `line`.
        code = compile("\n" * (line - 1) + "check(cfg)", str(script), "exec")
        exec(code, {"__name__": "__main__", "check": _refuse_an_unguarded_call, "cfg": cfg})

    for line in (2, 7):
        with pytest.raises(
            RuntimeError, match=rf"top level of tune.py \(line {line}\).*search.n_parallel = 2"
        ):
            called_at(line)
    for line in (4, 5):
        called_at(line)
    called_at(2, validate_config({"name": "g"}))  # one trial at a time, in this process: no workers
