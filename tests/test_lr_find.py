"""The learning-rate range test: the narrowing rule, `hyperflow lr-find`, and the heuristic start of a study."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import small_config
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from hyperflow.components.lr_find import narrow, steepest_descent

# --------------------------------------------------------------------------------------------
# The rule (README: [s / 10, s * 3] clipped to the bounds; a suggestion outside them is clipped first)


@pytest.mark.parametrize(
    ("suggestion", "expected", "clipped"),
    [
        (0.01, (0.001, 0.03), False),  # inside, room on both sides: strictly inside the bounds
        (0.3, (0.03, 0.5), False),  # near the top: the range stops at the bound
        (2e-4, (1e-4, 6e-4), False),  # near the bottom
        (2.0, (0.05, 0.5), True),  # above the bounds: clipped to 0.5, then the rule
        (1e-6, (1e-4, 3e-4), True),  # below the bounds: clipped to 1e-4
    ],
)
def test_the_narrowing_rule(suggestion: float, expected: tuple[float, float], clipped: bool) -> None:
    bounds = (1e-4, 0.5)
    got = narrow(suggestion, bounds)
    assert (got.low, got.high) == pytest.approx(expected)
    assert bounds[0] <= got.low < got.high <= bounds[1]
    assert got.low <= (got.suggestion or 0) <= got.high
    assert got.raw_suggestion == suggestion
    assert (got.note is not None) == clipped
    if clipped:
        assert f"{suggestion:.4g}" in (got.note or "")
    else:
        assert got.suggestion == suggestion


def test_no_suggestion_keeps_the_bounds() -> None:
    got = narrow(None, (1e-4, 0.5))
    assert (got.low, got.high, got.suggestion) == (1e-4, 0.5, None)
    assert got.note and "no suggestion" in got.note


def test_the_suggestion_is_the_steepest_descent_against_log_rate() -> None:
    # A loss flat at first, falling fastest around 1e-2, then diverging past its minimum near 1e-1.
    lrs = [10 ** (-6 + 6 * i / 99) for i in range(100)]
    losses = [
        2.0 - math.tanh(3 * (math.log10(lr) + 2)) + (50 * (lr - 0.1) if lr > 0.1 else 0.0) for lr in lrs
    ]
    got = steepest_descent(lrs, losses)
    assert got is not None and 0.7e-2 < got < 1.4e-2
    assert steepest_descent(lrs[:12], losses[:12]) is None  # too few points past the skipped start


# --------------------------------------------------------------------------------------------
# `hyperflow lr-find` on digits


def lr_find(tmp_path: Path, low: float, high: float) -> tuple[str, dict[str, float]]:
    from hyperflow.flows.cli import app

    cfg = small_config(
        tmp_path,
        model={"hidden_layers": [64], "batch_size": 64},
        search={"space": {"learning_rate": {"low": low, "high": high, "log": True}}},
    )
    path = tmp_path / f"lr-{low:g}-{high:g}.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    result = CliRunner().invoke(app, ["lr-find", str(path)])
    assert result.exit_code == 0, result.output
    out = result.output
    number = r"([0-9.e+-]+)"
    suggested = re.search(rf"suggested\s+{number}", out)
    found = re.search(
        rf"range\s+\[{number}, {number}\]\s+within search.space.learning_rate \[{number}, {number}\]", out
    )
    assert suggested and found, out
    values = [float(v) for v in (suggested.group(1), *found.groups())]
    return out, dict(zip(["suggestion", "low", "high", "bound_low", "bound_high"], values, strict=True))


@pytest.mark.slow
def test_lr_find_reports_a_range_inside_the_bounds_around_the_suggestion(tmp_path: Path) -> None:
    out, got = lr_find(tmp_path, 1e-4, 0.5)
    s = got["suggestion"]
    assert (got["bound_low"], got["bound_high"]) == (1e-4, 0.5)
    assert 1e-4 < s < 0.5, "on digits the suggestion lies inside the default bounds"
    assert 1e-4 < got["low"] <= s <= got["high"] < 0.5, out  # strictly inside, and holds the suggestion
    assert "note" not in out
    # The range test is logged to an MLflow run: its plot, its data and the range as params.
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs(
        [client.get_experiment_by_name(f"test-{tmp_path.name}").experiment_id],
        "tags.`hyperflow.role` = 'lr_range_test'",
    )
    assert run.info.status == "FINISHED"
    assert float(run.data.params["lr_range_test.suggestion"]) == pytest.approx(s, rel=1e-3)
    assert float(run.data.params["lr_range_test.low"]) == pytest.approx(got["low"], rel=1e-3)
    assert run.data.params["model.optimizer"] == "sgd"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert artifacts == {"plots/lr_range_test.png"}
    # The address printed opens that run's page (a study's saved view does not exist for it).
    assert f"/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}" in out

    # Bounds that leave the suggestion out: it is clipped into them, and said so.
    out, clipped = lr_find(tmp_path, 1e-4, s / 20)
    assert "note" in out and "lies above" in out
    assert clipped["high"] == pytest.approx(s / 20, rel=1e-3) and clipped["low"] >= 1e-4


# --------------------------------------------------------------------------------------------
# The heuristic start of a study


def run_trials(study: Any, data: Any, n: int) -> None:
    from hyperflow.components.study import execute_trial

    for _ in range(n):
        (plan,) = study.plan(limit=1)
        study.record(plan, execute_trial(data, plan, study.spec))


@pytest.mark.slow
def test_a_study_with_the_heuristic_start_narrows_evaluates_the_suggestion_first_and_resumes_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hyperflow.components import heuristic
    from hyperflow.components.data import load_dataset
    from hyperflow.components.lifecycle import open_study
    from hyperflow.components.resume import resume_study

    cfg = small_config(
        tmp_path,
        model={"hidden_layers": [32], "max_epochs": 2},
        search={
            "strategy": "bayes",
            "n_trials": 4,
            "heuristic_start": "lr_range_test",
            "initial_points": [{"learning_rate": 1e-4, "momentum": 0.5}],
            "space": {
                "learning_rate": {"low": 1e-4, "high": 0.5, "log": True},
                "momentum": {"low": 0.0, "high": 0.95},
            },
            "bayes": {"n_initial_points": 2},
        },
    )
    data = load_dataset(cfg.data, cfg.seed)
    study = open_study(cfg, data)
    run_trials(study, data, 2)
    study.abort("interrupted")

    client = MlflowClient(cfg.tracking.uri)
    params = client.get_run(study.study_run_id).data.params
    low, high = float(params["lr_range_test.low"]), float(params["lr_range_test.high"])
    suggestion = float(params["lr_range_test.suggestion"])
    assert 1e-4 <= low < high <= 0.5 and (low, high) != (1e-4, 0.5)
    assert low <= suggestion <= high
    assert params["search.space.learning_rate.low"] == "0.0001"  # the configured bounds stay recorded
    artifacts = {a.path for a in client.list_artifacts(study.study_run_id)}
    assert {"lr_range_test.json", "plots"} <= artifacts
    first, second = sorted(study.records, key=lambda r: r.number)
    # the suggestion first, with the rest of the configured point; then that point, clipped into the range
    assert first.params == {"learning_rate": suggestion, "momentum": 0.5}
    assert second.params == {"learning_rate": low, "momentum": 0.5}
    # each epoch's learning rate and momentum are trial metrics at step = epoch
    history = sorted(client.get_metric_history(first.run_id, "learning_rate"), key=lambda m: m.step)
    assert [(m.step, m.value) for m in history] == [(0, suggestion), (1, suggestion)]
    assert [m.value for m in client.get_metric_history(first.run_id, "momentum")] == [0.5, 0.5]

    def rerun(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the range test ran again on resume")

    monkeypatch.setattr(heuristic, "range_test", rerun)
    resumed = resume_study(cfg, data, study.study_run_id)
    run_trials(resumed, data, 2)
    assert resumed.n_finished == 4
    lrs = [r.params["learning_rate"] for r in resumed.records]
    assert all(low <= lr <= high for lr in lrs), (lrs, low, high)
    assert len(set(lrs)) == 4


@pytest.mark.slow
def test_the_flow_runs_the_recipe_end_to_end(prefect_server: Any, tmp_path: Path) -> None:
    """Through the real flow: the heuristic start, schedules and depth / width searched, the best model exported."""
    from hyperflow.flows.search_flow import run_search

    cfg = small_config(
        tmp_path,
        model={"hidden_layers": None, "max_epochs": 4},
        search={
            "strategy": "random",
            "n_trials": 3,
            "heuristic_start": "lr_range_test",
            "space": {
                "learning_rate": {"low": 1e-3, "high": 0.5, "log": True},
                "lr_schedule": {"choices": ["cosine", "one_cycle", "step"]},
                "depth": {"low": 1, "high": 3},
                "width": {"low": 16, "high": 64},
            },
        },
    )
    result = run_search(cfg)
    assert result.status == "FINISHED" and result.n_completed + result.n_pruned == 3
    client = MlflowClient(cfg.tracking.uri)
    study = client.get_run(result.study_run_id)
    low, high = float(study.data.params["lr_range_test.low"]), float(study.data.params["lr_range_test.high"])
    exp = study.info.experiment_id
    trials = sorted(
        client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{result.study_run_id}'"),
        key=lambda r: int(r.data.tags["hyperflow.trial"]),
    )
    first = trials[0]
    assert float(first.data.params["learning_rate"]) == pytest.approx(
        float(study.data.params["lr_range_test.suggestion"])
    )
    for trial in trials:
        assert low <= float(trial.data.params["learning_rate"]) <= high
        assert {"learning_rate", "momentum", "val_accuracy"} <= set(trial.data.metrics)
    assert result.model_uri is not None and result.test_metrics["test_accuracy"] > 0.5


def test_the_narrowed_config_puts_the_suggestion_first_and_clips_the_rest() -> None:
    from hyperflow.components.config import validate_config
    from hyperflow.components.heuristic import narrowed_config

    space = {
        "learning_rate": {"low": 1e-3, "high": 0.5, "log": True},
        "lr_schedule": {"choices": ["cosine", "one_cycle", "none"]},
        "depth": {"low": 1, "high": 3},
    }
    cfg = validate_config(
        {
            "search": {
                "heuristic_start": "lr_range_test",
                "initial_points": [{"learning_rate": 0.3, "depth": 3}, {"depth": 1}],
                "space": space,
            },
        }
    )
    got = narrowed_config(cfg, narrow(0.02, (1e-3, 0.5)))
    spec = got.search.space["learning_rate"]
    assert (spec.low, spec.high, spec.log) == pytest.approx((0.002, 0.06, True))  # type: ignore[union-attr]
    assert got.search.initial_points == [
        {"learning_rate": 0.02, "depth": 3, "lr_schedule": "none"},  # the suggestion, the first point's rest
        {"learning_rate": 0.06, "depth": 3},  # 0.3 clipped into the range
        {"depth": 1, "learning_rate": 0.01},  # the model's learning_rate, inside the range
    ]
    # Without initial points the model's values fill the first: clipped into a range, or the first choice.
    alone = validate_config(
        {
            "model": {"max_epochs": 4},
            "search": {
                "heuristic_start": "lr_range_test",
                "space": {
                    **space,
                    "lr_schedule": {"choices": ["cosine", "step"]},
                    "width": {"low": 16, "high": 64},
                    "max_epochs": {"low": 10, "high": 20},
                },
            },
        }
    )
    (first,) = narrowed_config(alone, narrow(0.02, (1e-3, 0.5))).search.initial_points
    assert first == {
        "learning_rate": 0.02,
        "lr_schedule": "cosine",
        "depth": 2,
        "width": 64,
        "max_epochs": 10,
    }
    assert narrowed_config(alone, narrow(None, (1e-3, 0.5))).search.initial_points == []  # no suggestion
