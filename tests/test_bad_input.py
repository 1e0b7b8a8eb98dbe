"""A matrix of bad configs and bad data files: each is refused by the CLI before any run exists."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from hyperflow.flows.cli import app

GOOD: dict[str, Any] = {
    "name": "bad-input",
    "data": {"source": "digits"},
    "model": {"hidden_layers": [16], "max_epochs": 2},
    "search": {
        "strategy": "random",
        "n_trials": 2,
        "space": {"learning_rate": {"low": 0.01, "high": 0.1, "log": True}},
    },
}


def merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in patch.items():
        out[key] = (
            merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def csv_file(tmp: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp / name
    path.write_text(text)
    return path


def rows(n: int, label: Callable[[int], str], extra: str = "") -> str:
    return "a,b,label\n" + "".join(f"{i % 7}.5,{i % 3},{label(i)}{extra}\n" for i in range(n))


def file_source(path: Path, target: str | None = "label", **data: Any) -> dict[str, Any]:
    return {"data": {"source": "file", "path": str(path), "target": target, **data}}


# (id, config patch or a function of the temp dir giving it, extra CLI args, fragment the message must hold)
CASES: list[tuple[str, Any, list[str], str]] = [
    ("wrong-type", {"model": {"learning_rate": "fast"}}, [], "model.learning_rate"),
    ("unknown-key", {"model": {"colour": "red"}}, [], "model.colour: unknown key"),
    ("unknown-section", {"optimiser": {}}, [], "optimiser: unknown key"),
    (
        "low-above-high",
        {"search": {"space": {"momentum": {"low": 0.9, "high": 0.1}}}},
        [],
        "search.space.momentum",
    ),
    (
        "log-low-zero",
        {"search": {"space": {"l2": {"low": 0.0, "high": 0.1, "log": True}}}},
        [],
        "must be > 0 for a log scale",
    ),
    (
        "empty-choices",
        {"search": {"space": {"batch_size": {"choices": []}}}},
        [],
        "search.space.batch_size.choices",
    ),
    (
        "choice-wrong-type",
        {"search": {"space": {"hidden_layers": {"choices": [64]}}}},
        [],
        "search.space.hidden_layers.choices.0",
    ),
    (
        "range-on-text-field",
        {"search": {"space": {"optimizer": {"low": 0, "high": 1}}}},
        [],
        "search.space.optimizer",
    ),
    (
        "unknown-space-field",
        {"search": {"space": {"colour": {"choices": [1, 2]}}}},
        [],
        "search.space.colour",
    ),
    (
        "fractions-sum-to-one",
        {"data": {"val_fraction": 0.5, "test_fraction": 0.5}},
        [],
        "leaves no training data",
    ),
    ("unknown-strategy", {"search": {"strategy": "anneal"}}, [], "search.strategy"),
    ("unknown-surrogate", {"search": {"bayes": {"surrogate": "XGB"}}}, [], "search.bayes.surrogate"),
    ("bad-pruned-policy", {"search": {"bayes": {"pruned": "dropped"}}}, [], "search.bayes.pruned"),
    (
        "ehvi-without-param-count",
        {"search": {"objectives": [{"metric": "val_accuracy"}, {"metric": "val_loss"}]}},
        ["--set", "search.bayes.multi_objective=ehvi"],
        "search.bayes.multi_objective: ehvi needs strategy bayes and exactly two search.objectives",
    ),
    ("gbrt-surrogate", {"search": {"strategy": "bayes", "bayes": {"surrogate": "GBRT"}}}, [], "GBRT"),
    ("n-trials-zero", {"search": {"n_trials": 0}}, [], "search.n_trials"),
    ("n-parallel-zero", {"search": {"n_parallel": 0}}, [], "search.n_parallel"),
    ("metric-for-other-task", {"data": {"source": "diabetes"}}, [], "search.metric"),
    # issue 15: each of these validated before and failed (or silently misbehaved) only once trials ran
    ("bool-for-int", {"search": {"n_trials": True}}, [], "search.n_trials: Input should be a valid integer"),
    ("bool-for-int-set", {}, ["--set", "model.max_epochs=true"], "model.max_epochs"),
    ("int-for-bool", {"model": {"batch_norm": 1}}, [], "model.batch_norm: Input should be a valid boolean"),
    ("infinite-float", {"model": {"l2": float("inf")}}, [], "model.l2: Input should be a finite number"),
    ("nan-float-set", {}, ["--set", "data.val_fraction=.nan"], "data.val_fraction"),
    ("infinite-choice", {"search": {"space": {"l1": {"choices": [0.0, float("inf")]}}}}, [], "choices.1"),
    ("bool-choice", {"search": {"space": {"batch_size": {"choices": [32, True]}}}}, [], "choices.1"),
    ("name-with-slash", {"name": "team/digits"}, [], "name: 'team/digits' contains '/'"),
    ("name-with-colon", {}, ["--set", "name=digits:v2"], "contains ':'"),
    ("name-as-path", {"name": ".."}, [], "would resolve to"),
    ("name-blank", {"name": "   "}, [], "name: must not be blank"),
    (
        "args-without-module",
        {"model": {"args": {"hidden": 8}}},
        [],
        "model.args: only used with model.module",
    ),
    (
        "credentials-in-uri",
        {"tracking": {"uri": "http://alice:s3cret@127.0.0.1:1"}},
        [],
        "MLFLOW_TRACKING_PASSWORD",
    ),
    ("bad-override", {}, ["--set", "search.n_trails=3"], "search.n_trails"),
    (
        "initial-point-outside",
        {"search": {"initial_points": [{"learning_rate": 5.0}]}},
        [],
        "search.initial_points.0.learning_rate",
    ),
    ("missing-file", lambda tmp: file_source(tmp / "nope.csv"), [], "no such file"),
    ("unsupported-file", lambda tmp: file_source(csv_file(tmp, "x", "data.xlsx")), [], "unsupported"),
    (
        "missing-target",
        lambda tmp: file_source(csv_file(tmp, rows(60, lambda i: str(i % 2))), target="y"),
        [],
        "data.target",
    ),
    (
        "nan-features",
        lambda tmp: merge(
            file_source(csv_file(tmp, rows(60, lambda i: str(i % 2)) + "nan,1,0\n")),
            {"data": {"missing": "error"}},
        ),
        [],
        "NaN",
    ),
    ("single-class", lambda tmp: file_source(csv_file(tmp, rows(60, lambda i: "yes"))), [], "single class"),
    ("empty-file", lambda tmp: file_source(csv_file(tmp, "a,b,label\n")), [], "no rows"),
    (
        "categorical-not-a-column",
        lambda tmp: merge(
            file_source(csv_file(tmp, "a,b,label\n" + "".join(f"x{i},1,{i % 2}\n" for i in range(60)))),
            {"data": {"categorical": ["colour"]}},
        ),
        [],
        "data.categorical: 'colour'",
    ),
    ("npz-without-x", lambda tmp: file_source(_npz(tmp, y=np.zeros(50)), target=None), [], "no array 'X'"),
    (
        "too-few-rows",
        lambda tmp: merge(
            file_source(csv_file(tmp, rows(6, lambda i: str(i))), task="regression", val_fraction=0.05),
            {"search": {"metric": "val_rmse"}},
        ),
        [],
        "too few to split",
    ),
    (
        "regression-metric-on-classes",
        lambda tmp: merge(
            file_source(csv_file(tmp, rows(60, lambda i: "ab"[i % 2]))), {"search": {"metric": "val_rmse"}}
        ),
        [],
        "search.metric",
    ),
]


def _npz(tmp: Path, **arrays: Any) -> Path:
    path = tmp / "data.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(("case", "patch", "args", "fragment"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("command", ["run", "validate"])
def test_bad_input_is_refused_before_any_run(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    patch: Any,
    args: list[str],
    fragment: str,
    command: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    raw = merge(GOOD, patch(tmp_path) if callable(patch) else patch)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(app, [command, str(config), *args])
    output = result.stdout + result.stderr
    assert result.exit_code == 2, output
    assert fragment in output, output
    assert "Traceback" not in output
    assert "s3cret" not in output  # a refused credential is not echoed either
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists(), "a run was created"


def test_broken_or_empty_yaml_is_refused(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("search: [unclosed\n")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    for path, fragment in (
        (broken, "not valid YAML"),
        (empty, "empty"),
        (tmp_path / "none.yaml", "no such config file"),
        (tmp_path, "is a folder, not a config file"),
    ):
        result = CliRunner().invoke(app, ["run", str(path)])
        assert result.exit_code == 2
        assert fragment in result.stdout + result.stderr


@pytest.mark.parametrize("key", ["model..lr", ".seed", "search.", "model. .l2"])
def test_a_set_key_with_an_empty_part_is_named_as_typed(tmp_path: Path, key: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(GOOD))
    result = CliRunner().invoke(app, ["validate", str(config), "--set", f"{key}=3"])
    assert result.exit_code == 2
    assert f"{key!r}: a dotted key has an empty part" in result.output


def test_an_unreachable_tracking_server_is_reported_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from servers import free_port

    monkeypatch.chdir(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(merge(GOOD, {"tracking": {"uri": f"http://127.0.0.1:{free_port()}"}})))
    result = CliRunner().invoke(app, ["run", str(config)])
    assert result.exit_code == 3
    assert "cannot reach the MLflow tracking server" in result.stdout + result.stderr


@pytest.mark.parametrize("command", ["run", "validate"])
def test_a_tracking_uri_of_no_known_kind_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(merge(GOOD, {"tracking": {"uri": "bogus://x"}})))
    result = CliRunner().invoke(app, [command, str(config)])
    assert result.exit_code == 2, result.output
    assert "tracking.uri (or $MLFLOW_TRACKING_URI) 'bogus://x': MLflow has no tracking store" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    # A folder is MLflow's file store, which MLflow 3 refuses: said so, not "no store of this kind".
    folder = tmp_path / "runs"
    result = CliRunner().invoke(app, [command, str(config), "--set", f"tracking.uri={folder}"])
    assert result.exit_code == 2, result.output
    assert "a folder is MLflow's file store, which MLflow 3 refuses" in result.output
    assert "MLFLOW_ALLOW_FILE_STORE=true" in result.output
    assert not folder.exists() and not (tmp_path / "mlflow.db").exists(), "nothing was created"
    from hyperflow.components.tracking import store_kind_problem

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the user's opt-out is MLflow's to honour
    assert store_kind_problem(str(folder)) is None
    assert store_kind_problem(f"sqlite:///{tmp_path / 'a.db'}") is None


def test_an_unreachable_dask_scheduler_is_reported_before_any_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient
    from servers import free_port

    monkeypatch.chdir(tmp_path)
    address = f"tcp://127.0.0.1:{free_port()}"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(merge(GOOD, {"runner": {"kind": "dask", "address": address}})))
    result = CliRunner().invoke(app, ["run", str(config)])
    assert result.exit_code == 3, result.output
    assert f"runner.address '{address}': cannot reach the Dask scheduler" in result.output
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == [], "no run exists"


@pytest.mark.parametrize("command", [["run"], ["serve", "--cron", "0 3 * * *"]])
def test_an_unreachable_prefect_server_is_reported_before_any_run(tmp_path: Path, command: list[str]) -> None:
    import os
    import subprocess
    import sys

    from servers import free_port

    url = f"http://127.0.0.1:{free_port()}/api"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(GOOD))
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "hyperflow"), command[0], str(config), *command[1:]],
        cwd=tmp_path,
        env={**os.environ, "PREFECT_API_URL": url},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert f"cannot reach the Prefect server at {url} (PREFECT_API_URL)" in proc.stderr
    assert "Traceback" not in proc.stderr
    if command[0] == "run":
        from mlflow.tracking import MlflowClient

        client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
        assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


def _alias_bomb(levels: int, width: int = 10) -> str:
    """`a: &a [1 x width]`, then each level `width` aliases of the one before: width**levels values."""
    lines = ["    l0: &l0 [" + ", ".join(["1"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"    l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    return "\n".join(lines)


# (id, YAML text, --set args, fragment). A million values expanded would pass today and only cost
# seconds; the bound (100,000) refuses it at once, and with it the 10**9 bombs of the issue.
YAML_TRAPS: list[tuple[str, str, list[str], str]] = [
    ("duplicate-top-key", "name: a\nseed: 1\nseed: 2\n", [], "seed: duplicate key (line 3; first at line 2)"),
    ("duplicate-nested-key", "name: a\nmodel:\n  l2: 0.1\n  l2: 0.0\n", [], "model.l2: duplicate key"),
    (
        "duplicate-key-in-set",
        "name: a\n",
        ["--set", "search.bayes={surrogate: GP, surrogate: RF}"],
        "search.bayes.surrogate: duplicate key",
    ),
    (
        "alias-bomb-file",
        "name: a\nmodel:\n  args:\n" + _alias_bomb(6) + "\n",
        [],
        "model.args.l4: expands to more than 100,000",
    ),
    (
        "alias-bomb-set",
        "name: a\n",
        [
            "--set",
            "model.args={a: &a [1,1,1,1,1,1,1,1,1,1], b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a], c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b], d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c], e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d], f: [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]}",
        ],
        "model.args.e: expands to more than",
    ),
    ("recursive-alias", "name: a\nmodel:\n  args: &x {self: *x}\n", [], "recursive alias"),
    ("python-tag", "name: !!python/object/apply:os.getcwd []\n", [], "not valid YAML"),
]


@pytest.mark.parametrize(("case", "text", "args", "fragment"), YAML_TRAPS, ids=[c[0] for c in YAML_TRAPS])
def test_yaml_traps_are_refused_by_path_before_any_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, text: str, args: list[str], fragment: str
) -> None:
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(text)
    result = CliRunner().invoke(app, ["run", str(config), *args])
    output = result.stdout + result.stderr
    assert result.exit_code == 2, output
    assert fragment in output, output
    assert "Traceback" not in output
    assert not (tmp_path / "mlflow.db").exists(), "a run was created"


def test_a_merge_key_may_override_what_it_brings(tmp_path: Path) -> None:
    # `<<: *base` then the same key is what a merge is for, not a duplicate.
    config = tmp_path / "config.yaml"
    config.write_text(
        "name: merged\nmodel: &base\n  l2: 0.1\n  max_epochs: 2\nsearch:\n  n_trials: 1\n"
        "  space: {}\n  strategy: random\n"
    )
    from hyperflow.components.config import load_config

    assert load_config(config, ["model.l2=0.2"]).model.l2 == 0.2
    from hyperflow.components.yamlload import load_yaml

    assert load_yaml("d: &d {l2: 0.1, max_epochs: 2}\nm:\n  <<: *d\n  l2: 0.3\n")["m"] == {
        "l2": 0.3,
        "max_epochs": 2,
    }
