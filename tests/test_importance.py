"""Importance: functional ANOVA main effects on a random-forest surrogate, and what a study logs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hyperflow.components.importance import MIN_TRIALS, fanova_main_effects, param_importances
from hyperflow.components.search import Dimension, SearchSpace

SPACE = SearchSpace(
    [
        Dimension("learning_rate", "real", low=1e-4, high=1e-1, log=True),
        Dimension("batch_size", "categorical", choices=(16, 32, 64, 128)),
        Dimension("width", "int", low=8, high=256),
    ]
)


def random_trials(n: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    return [SPACE.sample(rng) for _ in range(n)]


def unit(params: dict[str, Any]) -> np.ndarray:
    return np.array([d.to_unit(params[d.name]) for d in SPACE])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_parameter_that_explains_ninety_percent_comes_out_on_top(seed: int) -> None:
    # Additive, so the true shares are the terms' variances over the space (as sampled):
    # 0.9 for learning_rate, 0.05 each for the others.
    weights = np.sqrt([0.9, 0.05, 0.05])
    trials = random_trials(30, seed)
    values = [float(weights @ (math.sqrt(12) * (unit(p) - 0.5))) for p in trials]
    got = param_importances(SPACE, list(zip(trials, values, strict=True)), seed=0)
    assert list(got) == ["learning_rate", "batch_size", "width"]
    assert got["learning_rate"] >= 0.8
    assert got["batch_size"] <= 0.1 and got["width"] <= 0.1
    assert sum(got.values()) <= 1.0


def test_an_interaction_alone_gives_both_parameters_low_main_effects() -> None:
    """y = ±1 by the quadrant of (learning_rate, batch_size): all interaction, no main effect.

    A plain impurity importance gives each half the credit; the ANOVA main effects stay low."""
    trials = [
        {"learning_rate": lr, "batch_size": bs, "width": w}
        for lr in (1e-4 * 10 ** (3 * u) for u in (0.125, 0.375, 0.625, 0.875))
        for bs in (16, 32, 64, 128)
        for w in (40, 200)
    ]
    values = [float(np.sign(unit(p)[0] - 0.5) * np.sign(unit(p)[1] - 0.5)) for p in trials]
    got = param_importances(SPACE, list(zip(trials, values, strict=True)), seed=0)
    assert got["learning_rate"] <= 0.1 and got["batch_size"] <= 0.1 and got["width"] <= 0.1
    assert sum(got.values()) <= 0.2, "the variance is the interaction's"
    _, forest = fanova_main_effects(np.array([unit(p) for p in trials]), np.array(values), seed=0)
    impurity = forest.feature_importances_
    assert impurity[0] >= 0.3 and impurity[1] >= 0.3, "what an impurity importance would report"


def test_the_main_effects_equal_optunas_fanova_on_the_same_trials() -> None:
    optuna = pytest.importorskip("optuna")
    from optuna.distributions import FloatDistribution
    from optuna.importance import FanovaImportanceEvaluator

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rng = np.random.default_rng(7)
    x = rng.random((25, 3))
    y = np.sin(4 * x[:, 0]) + x[:, 1] * x[:, 2] + 0.3 * x[:, 2]
    study = optuna.create_study()
    dists = {f"x{i}": FloatDistribution(0.0, 1.0) for i in range(3)}
    for row, v in zip(x, y, strict=True):
        study.add_trial(
            optuna.trial.create_trial(
                params={f"x{i}": row[i] for i in range(3)}, distributions=dists, value=v
            )
        )
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        reference = optuna.importance.get_param_importances(
            study, evaluator=FanovaImportanceEvaluator(seed=0), normalize=False
        )
    ours, _ = fanova_main_effects(x, y, seed=0)
    assert ours == pytest.approx([reference[f"x{i}"] for i in range(3)], abs=1e-9)


def test_too_few_usable_trials_give_no_importances() -> None:
    trials = random_trials(MIN_TRIALS + 3, 0)
    values: list[float | None] = [float(i) for i in range(MIN_TRIALS - 1)] + [None, math.nan, math.inf, None]
    assert param_importances(SPACE, list(zip(trials, values, strict=True))) == {}
    assert param_importances(SPACE, [(p, 1.0) for p in trials]) == {}, "a constant objective"
    enough = param_importances(SPACE, [(p, float(i)) for i, p in enumerate(trials)])
    assert set(enough) == set(SPACE.names)
    assert param_importances(SPACE, [(p, float(i)) for i, p in enumerate(trials)]) == enough, "seeded"


def _objective(params: dict[str, Any], report: Any) -> float:
    value = 0.0
    for epoch in range(params["max_epochs"]):
        value = params["quality"] ** 2 * (1 - 0.5 ** (epoch + 1)) + 0.02 * params["noise"]
        report(epoch, value)
    return value


@pytest.mark.slow
@pytest.mark.parametrize("n_trials", [MIN_TRIALS - 1, 12])
def test_a_finished_study_logs_importances_and_their_plots(in_tmp: Path, n_trials: int) -> None:
    from mlflow.tracking import MlflowClient

    from hyperflow.components.config import validate_config
    from hyperflow.components.lifecycle import finish_study, open_study
    from hyperflow.components.study import execute_trial
    from hyperflow.components.usercode import registered

    tmp_path = in_tmp  # the store's artifacts (mlruns/) land in the working directory
    with registered("toy_importance:objective", _objective):
        cfg = validate_config(
            {
                "name": "toy-importance",
                "model": {"module": "toy_importance:objective", "max_epochs": 4},
                "search": {
                    "strategy": "random",
                    "metric": "score",
                    "n_trials": n_trials,
                    "space": {"quality": {"low": 0.0, "high": 1.0}, "noise": {"low": 0.0, "high": 1.0}},
                },
                "early_stopping": {"kind": "none"},
                "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
            }
        )
        study = open_study(cfg, None)
        while not study.done:
            for plan in study.plan():
                study.record(plan, execute_trial(None, plan, study.spec))
        result = finish_study(study, None)
    client = MlflowClient(cfg.tracking.uri)
    metrics = client.get_run(result.study_run_id).data.metrics
    plots = {a.path for a in client.list_artifacts(result.study_run_id, "plots")}
    if n_trials < MIN_TRIALS:
        assert not [k for k in metrics if k.startswith("importance_")]
        assert plots == {"plots/optimization_history.png", "plots/learning_curves.png"}
        return
    assert not result.errors
    importances = {k: v for k, v in metrics.items() if k.startswith("importance_")}
    assert set(importances) == {"importance_quality", "importance_noise"}
    assert importances["importance_quality"] > 0.8 > importances["importance_noise"]
    assert sum(importances.values()) <= 1.0
    assert {"plots/importance.png", "plots/parallel_coordinates.png"} <= plots


def test_a_study_uses_completed_and_pruned_trials_and_never_fails_on_importance() -> None:
    from hyperflow.components.config import validate_config
    from hyperflow.components.importance import study_importances
    from hyperflow.components.study import TrialRecord

    cfg = validate_config({"search": {"space": {"learning_rate": {"low": 1e-4, "high": 0.1, "log": True}}}})
    rng = np.random.default_rng(0)
    records = []
    for i in range(14):
        lr = float(10 ** rng.uniform(-4, -1))
        state = ("completed", "pruned", "failed")[i % 3]
        value = None if state == "failed" else -abs(math.log10(lr) + 2.5)
        records.append(TrialRecord(i, {"learning_rate": lr}, i, f"run{i}", state, value))  # type: ignore[arg-type]
    assert study_importances(cfg, records[:14]) == {"learning_rate": pytest.approx(1.0, abs=0.02)}
    assert study_importances(cfg, records[:13]) == {}, "9 usable trials: 13 less the failed ones"
    broken = [*records, TrialRecord(99, {"learning_rate": "fast"}, 0, "x", "completed", 0.5)]  # type: ignore[arg-type]
    errors: list[str] = []
    assert study_importances(cfg, broken, errors) == {"learning_rate": pytest.approx(1.0, abs=0.02)}
    assert not errors, "a trial outside the space is left out"


def test_the_importance_and_parallel_coordinates_plots_are_drawn(tmp_path: Path) -> None:
    from hyperflow.components.plots import draw_importance, draw_parallel_coordinates

    trials = random_trials(12, 3)
    rows = [(p, float(unit(p)[0]), "completed" if i % 2 else "pruned") for i, p in enumerate(trials)]
    for path in (
        draw_importance(
            {"learning_rate": 0.7, "batch_size": 0.1, "width": 0.05}, "val_accuracy", tmp_path / "i.png"
        ),
        draw_parallel_coordinates(SPACE, rows, "val_accuracy", "max", tmp_path / "p.png"),
    ):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
