"""Configs that were accepted but could not do what they say, and what `validate`, `lr-find` and a
study's summary printed about them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import make_study, small_config

from hyperflow.components.config import ConfigError, validate_config
from hyperflow.components.describe import describe_config

BASE: dict[str, Any] = {
    "name": "hunt",
    "data": {"source": "iris"},
    "model": {"hidden_layers": [8], "max_epochs": 3, "optimizer": "adam", "learning_rate": 0.01},
    "search": {
        "strategy": "random",
        "n_trials": 3,
        "space": {"learning_rate": {"low": 1.0e-3, "high": 0.1, "log": True}},
    },
    "early_stopping": {"kind": "none"},
    "tracking": {"register_model": False},
}


def hunt(**sections: Any) -> dict[str, Any]:
    """BASE with each section's keys updated (search.space replaced when given)."""
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in BASE.items()}
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    return raw


def problems(raw: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        validate_config(raw)
    return info.value.problems


# --------------------------------------------------------------------------------------------
# 1. a warm-up as long as the training


@pytest.mark.parametrize(
    ("model", "space", "path"),
    [
        ({"warmup_epochs": 3, "lr_schedule": "step"}, None, "model.warmup_epochs"),
        ({"warmup_epochs": 5, "lr_schedule": "cosine"}, None, "model.warmup_epochs"),
        ({"warmup_epochs": 3}, None, "model.warmup_epochs"),  # lr_schedule none: it only ever rises
        (
            {"lr_schedule": "cosine"},
            {"warmup_epochs": {"low": 0, "high": 3}},
            "search.space.warmup_epochs",
        ),
        ({"lr_schedule": "step"}, {"warmup_epochs": {"choices": [0, 4]}}, "search.space.warmup_epochs"),
        (
            {"warmup_epochs": 2, "lr_schedule": "step"},
            {"max_epochs": {"low": 2, "high": 10}},
            "search.space.max_epochs",
        ),
        (
            {"warmup_epochs": 3, "lr_schedule": "cosine"},
            {"max_epochs": {"choices": [10, 3]}},
            "search.space.max_epochs",
        ),
        (
            {"lr_schedule": "cosine"},
            {"warmup_epochs": {"low": 0, "high": 5}, "max_epochs": {"low": 5, "high": 10}},
            "search.space.warmup_epochs",
        ),
    ],
)
def test_a_warmup_not_below_the_shortest_training_is_refused_by_its_path(
    model: dict[str, Any], space: dict[str, Any] | None, path: str
) -> None:
    raw = hunt(model=model, search={"space": space} if space is not None else {})
    found = [(p, m) for p, m in problems(raw) if "warm up for all its epochs" in m]
    assert [p for p, _ in found] == [path], found
    assert "must be below" in found[0][1] and "lr_schedule would never apply" in found[0][1]


@pytest.mark.parametrize(
    ("model", "space"),
    [
        ({"warmup_epochs": 2, "lr_schedule": "step"}, None),
        ({"warmup_epochs": 0, "max_epochs": 1, "lr_schedule": "cosine"}, None),
        (
            {"lr_schedule": "cosine"},
            {"warmup_epochs": {"low": 0, "high": 4}, "max_epochs": {"low": 5, "high": 9}},
        ),
        ({"warmup_epochs": 2, "lr_schedule": "step"}, {"max_epochs": {"choices": [3, 10]}}),
    ],
)
def test_a_warmup_shorter_than_every_training_is_accepted(
    model: dict[str, Any], space: dict[str, Any] | None
) -> None:
    validate_config(hunt(model=model, search={"space": space} if space is not None else {}))


def test_a_long_warmup_is_named_once_also_beside_a_field_problem() -> None:
    # A field problem sends validation through the raw dict's checks as well.
    raw = hunt(model={"warmup_epochs": 3, "lr_schedule": "step", "dropout": 2.0})
    paths = [p for p, _ in problems(raw)]
    assert paths.count("model.warmup_epochs") == 1 and "model.dropout" in paths


# --------------------------------------------------------------------------------------------
# 2. a stop rule that can never stop a trial


@pytest.mark.parametrize(
    ("early_stopping", "space", "warned"),
    [
        (
            {"kind": "curve_fit", "min_epochs": 5},
            None,
            "early_stopping.min_epochs (5) is not below model.max_epochs (3)",
        ),
        ({"kind": "median", "min_epochs": 3}, None, "median can never stop a trial"),
        (
            {"kind": "median", "min_epochs": 5},
            {"max_epochs": {"low": 2, "high": 5}},
            "the largest value of search.space.max_epochs (5)",
        ),
        ({"kind": "median", "min_epochs": 2}, None, None),
        ({"kind": "curve_fit", "min_epochs": 5}, {"max_epochs": {"choices": [2, 6]}}, None),
        ({"kind": "none", "min_epochs": 5}, None, None),
    ],
)
def test_validate_warns_where_median_or_curve_fit_can_never_stop_a_trial(
    early_stopping: dict[str, Any], space: dict[str, Any] | None, warned: str | None
) -> None:
    raw = hunt(early_stopping=early_stopping, search={"space": space} if space is not None else {})
    text = describe_config(validate_config(raw), None)
    if warned is None:
        assert "can never stop a trial" not in text
    else:
        assert warned in text and "can never stop a trial" in text


# --------------------------------------------------------------------------------------------
# 3. one problem, one line


@pytest.mark.parametrize(
    ("space", "path", "shown"),
    [
        (
            {"max_epochs": {"low": 0, "high": 3}},
            "search.space.max_epochs.low",
            "0 is not a valid model.max_epochs",
        ),
        (
            {"learning_rate": {"low": 0, "high": 0.1}},
            "search.space.learning_rate.low",
            "0.0 is not a valid model.learning_rate",
        ),
    ],
)
def test_an_invalid_bound_is_reported_once(space: dict[str, Any], path: str, shown: str) -> None:
    found = [(p, m) for p, m in problems(hunt(search={"space": space})) if p == path]
    assert len(found) == 1 and found[0][1].startswith(shown), found


# --------------------------------------------------------------------------------------------
# 4. distinct points as the strategies count them


def points_lines(strategy: str, space: dict[str, Any], n_trials: int = 3) -> list[str]:
    cfg = validate_config(hunt(search={"strategy": strategy, "space": space, "n_trials": n_trials}))
    lines = describe_config(cfg, None).splitlines()
    (i,) = [i for i, line in enumerate(lines) if line.startswith(("distinct points:", "grid points:"))]
    return lines[i : i + 2]


@pytest.mark.parametrize("strategy", ["random", "bayes", "genetic"])
def test_distinct_points_count_every_int_of_a_range(strategy: str) -> None:
    assert points_lines(strategy, {"batch_size": {"low": 16, "high": 64}})[0] == "distinct points: 49"
    both = {"batch_size": {"low": 16, "high": 64, "log": True}, "optimizer": {"choices": ["adam", "sgd"]}}
    assert points_lines(strategy, both)[0] == "distinct points: 98"
    assert points_lines(strategy, {"learning_rate": {"low": 1e-3, "high": 0.1}})[0] == (
        "distinct points: unbounded (real dimensions)"
    )


def test_a_finite_space_smaller_than_n_trials_is_warned_of() -> None:
    one = points_lines("random", {"learning_rate": {"low": 0.01, "high": 0.01}})
    assert one == [
        "distinct points: 1",
        "  the search ends after 1 trial, when every point has been tried, before search.n_trials (3)",
    ]
    two = points_lines("bayes", {"optimizer": {"choices": ["adam", "sgd"]}}, n_trials=5)
    assert two[1].startswith("  the search ends after 2 trials")
    enough = points_lines("genetic", {"optimizer": {"choices": ["adam", "sgd"]}}, n_trials=2)
    assert "ends after" not in enough[1]


def test_the_grid_still_counts_its_grid() -> None:
    lines = points_lines("grid", {"batch_size": {"low": 16, "high": 64}}, n_trials=5)
    assert lines == [
        "grid points: 3 (points_per_dimension 3)",
        "  the grid ends after 3 trials, before search.n_trials (5)",
    ]


# --------------------------------------------------------------------------------------------
# 5. a study whose space runs out says so


def run_out(study: Any) -> None:
    from hyperflow.components.trial import TrialResult

    for _ in range(10):
        plans = study.plan()
        if not plans:
            break
        for plan in plans:
            result = TrialResult(
                params=plan.params,
                seed=plan.seed,
                state="completed",
                value=0.5,
                curve=[0.5],
                epochs_trained=1,
            )
            study.record(plan, result)


@pytest.mark.parametrize(
    ("strategy", "space", "reason"),
    [
        (
            "random",
            {"learning_rate": {"low": 0.01, "high": 0.01}},
            "the space is exhausted: 1 distinct point tried, 1 of 3 trials finished",
        ),
        (
            "genetic",
            {"learning_rate": {"choices": [0.01, 0.1]}},
            "the space is exhausted: 2 distinct points tried, 2 of 3 trials finished",
        ),
    ],
)
@pytest.mark.parametrize("lookahead", [True, False])
def test_a_study_whose_space_runs_out_gives_the_reason(
    tmp_path: Path, sqlite_store: str, strategy: str, space: dict[str, Any], reason: str, lookahead: bool
) -> None:
    cfg = small_config(
        tmp_path,
        search={"strategy": strategy, "n_trials": 3, "space": space, "lookahead": lookahead},
        tracking={"uri": sqlite_store},
    )
    study = make_study(cfg)
    try:
        run_out(study)
        assert study.done and study.check_stop() == reason and study.stop_reason == reason
    finally:
        study.close()


def test_a_study_that_spends_its_budget_gives_no_reason(tmp_path: Path, sqlite_store: str) -> None:
    cfg = small_config(
        tmp_path,
        search={"n_trials": 2, "space": {"learning_rate": {"choices": [0.01, 0.1]}}},
        tracking={"uri": sqlite_store},
    )
    study = make_study(cfg)
    try:
        run_out(study)
        assert study.check_stop() == "budget" and study.stop_reason is None
    finally:
        study.close()


# --------------------------------------------------------------------------------------------
# 6. costs are minimised


@pytest.mark.parametrize("metric", ["param_count", "train_seconds", "epochs_trained"])
def test_a_trial_metric_objective_defaults_to_min(metric: str) -> None:
    cfg = validate_config(hunt(search={"objectives": [{"metric": "val_accuracy"}, {"metric": metric}]}))
    assert [o.mode for o in cfg.search.objectives] == ["max", "min"]
    assert f"{metric} (min)" in describe_config(cfg, None)
    given = validate_config(
        hunt(search={"objectives": [{"metric": "val_accuracy"}, {"metric": metric, "mode": "max"}]})
    )
    assert given.search.objectives[1].mode == "max", "a mode given is kept"


# --------------------------------------------------------------------------------------------
# 7. lr-find's bounds of a learning rate given as choices


def found_rate(cfg: Any, suggestion: float) -> Any:
    from hyperflow.components.lr_find import FoundRate, RangeTestResult, configured_bounds, narrow

    result = RangeTestResult(suggestion, [1e-6, 1.0], [1.0, 2.0], 1e-6, 1.0, 2)
    return FoundRate(result, narrow(suggestion, configured_bounds(cfg)), "sqlite://", "0", "run")


def test_lr_find_bounds_choices_by_their_smallest_and_largest() -> None:
    from hyperflow.flows.cli import _lr_find_range

    cfg = validate_config(hunt(search={"space": {"learning_rate": {"choices": [0.1, 0.001]}}}))
    narrowed, where = _lr_find_range(cfg, found_rate(cfg, 0.01))
    assert where == "search.space.learning_rate" and narrowed.bounds == (0.001, 0.1)
    assert (narrowed.low, narrowed.high) == pytest.approx((0.001, 0.03))
    high, _ = _lr_find_range(cfg, found_rate(cfg, 0.5))
    assert high.high == 0.1 and high.note is not None and "above the bounds' high 0.1" in high.note


def test_lr_find_keeps_a_range_and_the_swept_rates() -> None:
    from hyperflow.flows.cli import _lr_find_range

    ranged = validate_config(BASE)
    found = found_rate(ranged, 0.01)
    assert _lr_find_range(ranged, found) == (found.narrowed, "search.space.learning_rate")
    bare = validate_config(hunt(search={"space": {"batch_size": {"choices": [16, 32]}}}))
    found = found_rate(bare, 0.01)
    assert _lr_find_range(bare, found) == (found.narrowed, "the swept rates")
    assert found.narrowed.bounds == (1e-6, 1.0)
