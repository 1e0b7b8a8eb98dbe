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
    ("gbrt-surrogate", {"search": {"strategy": "bayes", "bayes": {"surrogate": "GBRT"}}}, [], "GBRT"),
    ("n-trials-zero", {"search": {"n_trials": 0}}, [], "search.n_trials"),
    ("n-parallel-zero", {"search": {"n_parallel": 0}}, [], "search.n_parallel"),
    ("metric-for-other-task", {"data": {"source": "diabetes"}}, [], "search.metric"),
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
    ):
        result = CliRunner().invoke(app, ["run", str(path)])
        assert result.exit_code == 2
        assert fragment in result.stdout + result.stderr


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
