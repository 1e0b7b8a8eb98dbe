"""`strategy: bayes` on (primary, param_count): EHVI with the count known, and the ordinal surrogate."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from hyperflow.components.config import ConfigError, validate_config
from hyperflow.components.model import expected_param_count
from hyperflow.components.pareto import hypervolume
from hyperflow.components.search import (
    BayesStrategy,
    Dimension,
    EHVIStrategy,
    ParEGOStrategy,
    RandomStrategy,
    SearchSpace,
    make_strategy,
    uses_ehvi,
)
from hyperflow.components.search._ehvi import log_ehvi, ordered_choices
from hyperflow.components.search._space import params_key

WIDTHS = [4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256]
RATES = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.3]
TWO = [{"metric": "val_accuracy"}, {"metric": "param_count"}]
# Written out of size order on purpose: the surrogate must rank them by count, not by position.
LAYERS = [[64], [4], [256], [16, 8], [32], [8], [128, 64], [16]]


def count(params: dict[str, Any]) -> float:
    return float(expected_param_count(64, list(params["hidden_layers"]), 10))


def accuracy(params: dict[str, Any]) -> float:
    """Smooth in log width and log learning rate, best at a mid-sized net with lr 0.01."""
    w = sum(params["hidden_layers"])
    return 0.97 - 0.5 / math.sqrt(w) - 0.08 * (math.log10(params["learning_rate"]) + 2.0) ** 2


def space() -> SearchSpace:
    return SearchSpace(
        [
            Dimension("hidden_layers", "categorical", choices=[[w] for w in WIDTHS]),
            Dimension("learning_rate", "categorical", choices=RATES),
            Dimension("optimizer", "categorical", choices=["sgd", "adam"]),
        ]
    )


def largest() -> float:
    return max(count({"hidden_layers": [w]}) for w in WIDTHS)


def ehvi(seed: int, **options: Any) -> EHVIStrategy:
    sp = space()
    s = EHVIStrategy(
        sp,
        mode="max",
        seed=seed,
        count=count,
        ref_count=largest(),
        ordinal=ordered_choices(sp, count),
        **options,
    )
    s.objective_modes = ("max", "min")
    return s


def drive(strategy: Any, n: int) -> list[tuple[float, float]]:
    told = []
    for _ in range(n):
        (p,) = strategy.ask(1)
        values = (accuracy(p), count(p))
        strategy.tell(p, values[0], objectives=values)
        told.append(values)
    return told


def normalised_hv(told: list[tuple[float, float]]) -> float:
    ref = largest()
    return hypervolume([(-a, c / ref) for a, c in told], (0.0, 1.0))


# --------------------------------------------------------------------------------------------
# The acquisition


def test_log_ehvi_is_the_expected_hypervolume_improvement_by_monte_carlo() -> None:
    front = [(10.0, -0.5), (30.0, -0.8), (60.0, -0.9), (45.0, -0.7)]  # (count, loss); one dominated
    ref_count, ref_loss = 100.0, 0.0
    counts = np.array([5.0, 20.0, 30.0, 50.0, 99.0, 100.0])
    mean = np.array([-0.4, -0.75, -0.85, -0.95, -1.2, -2.0])
    std = np.array([0.2, 0.1, 0.05, 0.3, 0.01, 0.5])
    got = np.exp(log_ehvi(mean, std, counts, front, ref_loss, ref_count))
    rng = np.random.default_rng(0)
    base = hypervolume([(c, loss) for c, loss in front], (ref_count, ref_loss))
    for i in range(len(counts)):
        ys = mean[i] + std[i] * rng.standard_normal(20_000)
        gains = [hypervolume([*front, (counts[i], y)], (ref_count, ref_loss)) - base for y in ys]
        expected = float(np.mean(gains)) / ref_count
        if expected == 0.0:
            assert got[i] == 0.0  # at the reference count nothing improves
        else:
            assert got[i] == pytest.approx(expected, rel=0.03), i
    # the far tail stays finite on the log scale, where the plain expectation underflows to 0
    tail = log_ehvi(np.array([5.0]), np.array([0.01]), np.array([20.0]), front, ref_loss, ref_count)
    assert np.isfinite(tail).all() and tail[0] < -1000


def test_ordered_choices_rank_architectures_by_count_and_numbers_by_value() -> None:
    sp = SearchSpace(
        [
            Dimension("hidden_layers", "categorical", choices=LAYERS),
            Dimension("learning_rate", "categorical", choices=[0.1, 0.001, 0.01]),
            Dimension("optimizer", "categorical", choices=["sgd", "adam", "adamw"]),
            Dimension("batch_size", "categorical", choices=[64, 32]),  # two choices: one bit anyway
        ]
    )
    order = ordered_choices(sp, count)
    sizes = [count({"hidden_layers": LAYERS[i]}) for i in order["hidden_layers"]]
    assert sizes == sorted(sizes) and len(order["hidden_layers"]) == len(LAYERS)
    assert order["learning_rate"] == [1, 2, 0]
    assert set(order) == {"hidden_layers", "learning_rate"}


def test_an_ordinal_dimension_is_one_ordered_column_that_round_trips() -> None:
    sp = SearchSpace(
        [
            Dimension("hidden_layers", "categorical", choices=LAYERS),
            Dimension("learning_rate", "real", 1e-3, 0.3, log=True),
        ]
    )
    order = ordered_choices(sp, count)
    plain = BayesStrategy(sp, seed=0)
    ranked = BayesStrategy(sp, seed=0, ordinal=order)
    assert plain._tspace.transformed_n_dims == len(LAYERS) + 1  # one-hot
    assert ranked._tspace.transformed_n_dims == 2
    columns = []
    for layers in LAYERS:
        point = {"hidden_layers": layers, "learning_rate": 0.01}
        row = ranked._transform(point)
        columns.append(row[0])
        back = ranked._decode(ranked._tspace.inverse_transform(row[None, :])[0])
        assert back["hidden_layers"] == layers and back["learning_rate"] == pytest.approx(0.01)
    by_count = sorted(range(len(LAYERS)), key=lambda i: count({"hidden_layers": LAYERS[i]}))
    assert [columns[i] for i in by_count] == sorted(columns) and len(set(columns)) == len(LAYERS)
    with pytest.raises(ValueError, match="every choice index once"):
        BayesStrategy(sp, seed=0, ordinal={"hidden_layers": [0, 1, 1, 2, 3, 4, 5, 6]})


# --------------------------------------------------------------------------------------------
# The strategy


def test_ehvi_finds_a_better_front_than_random_search_on_a_smooth_trade_off() -> None:
    # 12 widths x 8 rates x 2 optimisers = 192 points; 24 evaluations, three seeds each.
    ours = [normalised_hv(drive(ehvi(seed), 24)) for seed in range(3)]
    random = []
    for seed in range(3):
        r = RandomStrategy(space(), mode="max", seed=seed)
        r.objective_modes = ("max", "min")
        random.append(normalised_hv(drive(r, 24)))
    every = [
        (accuracy({"hidden_layers": [w], "learning_rate": r}), count({"hidden_layers": [w]}))
        for w in WIDTHS
        for r in RATES
    ]
    assert min(ours) > max(random), (ours, random)
    assert max(ours) <= normalised_hv(every) + 1e-12


def test_the_same_seed_asks_the_same_and_a_rebuilt_strategy_continues_the_sequence() -> None:
    a, b = ehvi(4), ehvi(4)
    told = drive(a, 14)
    assert drive(b, 14) == told
    rebuilt = ehvi(4)
    for o in a.history:
        rebuilt.tell(o.params, o.value, objectives=o.objectives)
    assert rebuilt.ask(2) == a.ask(2)


def test_parallel_asks_are_distinct_and_pending_points_are_believed_not_repeated() -> None:
    s = ehvi(2)
    drive(s, 10)
    batch = s.ask(4)
    assert len({params_key(p) for p in batch}) == 4
    more = s.ask(2)
    assert not {params_key(p) for p in more} & {params_key(p) for p in batch}
    # Two at once are one, then one more with the first pending (what lookahead relies on).
    one, two = ehvi(5), ehvi(5)
    drive(one, 10)
    drive(two, 10)
    assert one.ask(1) + one.ask(1) == two.ask(2)


# --------------------------------------------------------------------------------------------
# Config and make_strategy


def cfg(**bayes: Any) -> Any:
    return validate_config(
        {
            "data": {"source": "digits"},
            "search": {
                "strategy": "bayes",
                "objectives": TWO,
                "bayes": bayes,
                "space": {
                    "hidden_layers": {"choices": [[8], [32], [16, 8]]},
                    "learning_rate": {"choices": RATES},
                },
            },
        }
    )


def test_auto_searches_by_ehvi_given_counts_and_by_parego_without_or_when_asked() -> None:
    counts = (count, 5000.0)
    assert uses_ehvi(cfg())
    assert isinstance(make_strategy(cfg(), param_counts=counts), EHVIStrategy)
    assert isinstance(make_strategy(cfg()), ParEGOStrategy)  # a user's module: no counts
    assert isinstance(make_strategy(cfg(multi_objective="parego"), param_counts=counts), ParEGOStrategy)
    rf = cfg(surrogate="RF")
    assert not uses_ehvi(rf)
    assert isinstance(make_strategy(rf, param_counts=counts), ParEGOStrategy)
    three = validate_config({"search": {"objectives": [*TWO, {"metric": "train_seconds"}]}})
    assert not uses_ehvi(three)


@pytest.mark.parametrize(
    ("search", "model", "fragment"),
    [
        (
            {"strategy": "bayes", "objectives": [{"metric": "val_accuracy"}, {"metric": "val_loss"}]},
            {},
            "second param_count",
        ),
        ({"strategy": "genetic", "objectives": TWO}, {}, "strategy bayes"),
        ({"strategy": "bayes"}, {}, "exactly two"),
        (
            {"strategy": "bayes", "objectives": TWO},
            {"module": "examples.digits_cnn.model:DigitsCNN"},
            "user's model",
        ),
        ({"strategy": "bayes", "objectives": TWO, "bayes": {"surrogate": "RF"}}, {}, "GP with logEI"),
    ],
)
def test_ehvi_where_it_cannot_run_is_refused_by_its_path(
    search: dict[str, Any], model: dict[str, Any], fragment: str
) -> None:
    search = {**search, "bayes": {**search.get("bayes", {}), "multi_objective": "ehvi"}}
    with pytest.raises(ConfigError) as err:
        validate_config({"search": search, "model": model})
    assert any(p == "search.bayes.multi_objective" and fragment in m for p, m in err.value.problems), (
        err.value.problems
    )
