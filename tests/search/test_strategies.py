"""One suite over every search strategy: bounds, types, seeds, parallel asks, failures, resuming."""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest
from strategy_driving import ask_and_tell, replay

from hyperflow.components.config import ExperimentConfig
from hyperflow.components.search import (
    BayesStrategy,
    Dimension,
    GeneticStrategy,
    GridStrategy,
    RandomStrategy,
    SearchSpace,
    Strategy,
    make_strategy,
)
from hyperflow.components.search._base import derive_seed
from hyperflow.components.search._space import params_key
from hyperflow.components.search.objectives import ackley, branin, hartmann6, levy, rosenbrock

HIDDEN = ([64], [128, 64])


def mixed_space() -> SearchSpace:
    """Every kind of dimension, list-valued choices and a single-valued dimension included."""
    return SearchSpace(
        [
            Dimension("learning_rate", "real", 1e-4, 0.5, log=True),
            Dimension("momentum", "real", 0.0, 0.99),
            Dimension("max_epochs", "int", 10, 60),
            Dimension("batch_size", "int", 16, 256, log=True),
            Dimension("hidden_layers", "categorical", choices=HIDDEN),
            Dimension("optimizer", "categorical", choices=("sgd", "adam", "adamw")),
            Dimension("l1", "real", 0.0, 0.0),
        ]
    )


def loss(params: Mapping[str, Any]) -> float:
    """A smooth stand-in for a validation loss over `mixed_space`."""
    return (
        (math.log10(params["learning_rate"]) + 2.0) ** 2
        + (params["momentum"] - 0.9) ** 2
        + abs(params["max_epochs"] - 30) / 50
        + 0.1 * len(params["hidden_layers"])
        + 0.2 * ("sgd", "adam", "adamw").index(params["optimizer"])
    )


Factory = Callable[..., Strategy]

STRATEGIES = [
    pytest.param(lambda space, **kw: GridStrategy(space, points_per_dimension=3, **kw), id="grid"),
    pytest.param(lambda space, **kw: RandomStrategy(space, **kw), id="random"),
    pytest.param(lambda space, **kw: BayesStrategy(space, n_initial_points=3, **kw), id="bayes"),
    pytest.param(lambda space, **kw: GeneticStrategy(space, population_size=4, elite=1, **kw), id="genetic"),
]


def run(strategy: Strategy, n: int, fn: Callable[[Mapping[str, Any]], float] = loss) -> list[dict]:
    """Ask and tell one at a time, n times (this suite's loss unless told otherwise); the points asked."""
    return ask_and_tell(strategy, n, fn)


def optimiser_values(strategy: Strategy) -> list[float]:
    """The numbers the strategy's optimiser holds (what a NaN would poison)."""
    if isinstance(strategy, BayesStrategy):
        return [float(y) for y in strategy.surrogate_data()[1]]
    if isinstance(strategy, GeneticStrategy):
        return [fitness for _, fitness in strategy.population]
    return []


# ------------------------------------------------------------------------------------ the suite


@pytest.mark.parametrize("factory", STRATEGIES)
def test_suggestions_lie_in_the_space_with_python_types(factory: Factory) -> None:
    space = mixed_space()
    strategy = factory(space, mode="min", seed=1)
    for point in run(strategy, 10) + strategy.ask(3):
        assert space.contains(point), point
        assert type(point["learning_rate"]) is float and type(point["momentum"]) is float
        assert type(point["max_epochs"]) is int and type(point["batch_size"]) is int
        assert type(point["hidden_layers"]) is list and point["hidden_layers"] in HIDDEN
        assert point["optimizer"] in ("sgd", "adam", "adamw")
        assert point["l1"] == 0.0


@pytest.mark.parametrize("factory", STRATEGIES)
def test_same_seed_gives_the_same_sequence(factory: Factory) -> None:
    first = run(factory(mixed_space(), mode="min", seed=7), 7)
    again = run(factory(mixed_space(), mode="min", seed=7), 7)
    assert first == again
    if factory(mixed_space()).name != "grid":
        other = run(factory(mixed_space(), mode="min", seed=8), 7)
        assert other != first


@pytest.mark.parametrize("factory", STRATEGIES)
def test_parallel_asks_are_distinct(factory: Factory) -> None:
    strategy = factory(mixed_space(), mode="min", seed=0)
    run(strategy, 4)  # past bayes' initial design and genetic's generation 0
    told = {params_key(o.params) for o in strategy.history}
    batch = strategy.ask(4)
    assert len(batch) == 4
    more = strategy.ask(2)  # with four pending (constant liar for bayes)
    keys = [params_key(p) for p in batch + more]
    assert len(more) == 2 and len(set(keys)) == 6 and not set(keys) & told
    assert sorted(keys) == sorted(params_key(p) for p in strategy.pending)
    for point in batch + more:
        strategy.tell(point, loss(point))
    assert len(run(strategy, 1)) == 1


@pytest.mark.parametrize("factory", STRATEGIES)
def test_initial_points_come_first_and_are_told_like_any_trial(factory: Factory) -> None:
    space = mixed_space()
    rng = np.random.default_rng(3)
    initial = [space.sample(rng), space.sample(rng)]
    strategy = factory(space, mode="min", seed=0, initial_points=initial)
    first = strategy.ask(3)
    assert first[:2] == initial and first[2] not in initial
    for point in first:
        strategy.tell(point, loss(point))
    assert [o.params for o in strategy.history] == first
    assert all(p not in initial for p in run(strategy, 3))


@pytest.mark.parametrize("factory", STRATEGIES)
def test_failures_never_reach_the_optimiser_and_the_search_goes_on(factory: Factory) -> None:
    strategy = factory(mixed_space(), mode="min", seed=2)
    failing = strategy.ask(2)
    strategy.tell_failed(failing[0])  # before any value exists
    strategy.tell(failing[1], float("nan"))
    run(strategy, 3)
    for bad in (float("inf"), float("-inf")):
        (point,) = strategy.ask()
        strategy.tell(point, bad)
    run(strategy, 3)
    states = [o.state for o in strategy.history]
    assert states.count("failed") == 4 and states.count("completed") == 6
    values = optimiser_values(strategy)
    assert all(math.isfinite(v) for v in values)
    if isinstance(strategy, BayesStrategy):
        assert len(values) == 10  # every failure told, as the worst loss seen
        assert max(values) == max(loss(o.params) for o in strategy.history if o.value is not None)
    best = strategy.best
    assert best is not None and best.state == "completed" and best.value is not None


@pytest.mark.parametrize("mode", ["min", "max"])
@pytest.mark.parametrize("factory", STRATEGIES)
def test_best_ignores_pruned_and_failed_trials(factory: Factory, mode: str) -> None:
    strategy = factory(mixed_space(), mode=mode, seed=0)
    a, b, c, d = strategy.ask(4)
    great = -100.0 if mode == "min" else 100.0
    strategy.tell(a, great, pruned=True)
    strategy.tell_failed(b)
    strategy.tell(c, 1.0)
    strategy.tell(d, 2.0)
    best = strategy.best
    assert best is not None and best.params == (c if mode == "min" else d)
    assert strategy.history[0].state == "pruned"


@pytest.mark.parametrize("n_told", [2, 9])
@pytest.mark.parametrize("factory", STRATEGIES)
def test_a_rebuilt_strategy_suggests_what_the_original_would(factory: Factory, n_told: int) -> None:
    original = factory(mixed_space(), mode="min", seed=5)
    points = original.ask(2)
    original.tell_failed(points[0])
    original.tell(points[1], loss(points[1]), pruned=True)
    run(original, n_told - 2)
    fresh = replay(factory, original, mode="min", seed=5)
    assert fresh.ask(2) == original.ask(2)
    if isinstance(original, GeneticStrategy):
        assert isinstance(fresh, GeneticStrategy) and fresh.population == original.population


# ------------------------------------------------------------------------------------ grid


def test_grid_enumerates_the_cartesian_product_then_is_exhausted() -> None:
    space = SearchSpace(
        [
            Dimension("learning_rate", "real", 1e-3, 1e-1, log=True),
            Dimension("max_epochs", "int", 1, 2),
            Dimension("hidden_layers", "categorical", choices=HIDDEN),
        ]
    )
    strategy = GridStrategy(space, points_per_dimension=3)
    axes = [[1e-3, 1e-2, 1e-1], [1, 2], list(HIDDEN)]
    expected = [dict(zip(space.names, v, strict=True)) for v in itertools.product(*axes)]
    asked = []
    while not strategy.exhausted:
        batch = strategy.ask(5)
        asked += batch
        for point in batch:
            strategy.tell(point, 0.0)
    assert len(batch) == len(expected) % 5  # the last ask came up short
    assert [p["max_epochs"] for p in asked] == [p["max_epochs"] for p in expected]
    assert [p["hidden_layers"] for p in asked] == [p["hidden_layers"] for p in expected]
    assert np.allclose([p["learning_rate"] for p in asked], [p["learning_rate"] for p in expected])
    assert strategy.ask(3) == []


def test_grid_skips_initial_points_on_the_grid_and_resumes_where_it_stopped() -> None:
    space = SearchSpace([Dimension("a", "int", 0, 2), Dimension("b", "categorical", choices=("x", "y"))])
    on_grid = {"a": 1, "b": "y"}
    strategy = GridStrategy(space, initial_points=[on_grid])
    asked = [p for _ in range(3) for p in strategy.ask()]
    for point in asked:
        strategy.tell(point, 1.0)
    assert asked == [on_grid, {"a": 0, "b": "x"}, {"a": 0, "b": "y"}]
    fresh = replay(GridStrategy, strategy)
    rest = fresh.ask(10)
    assert rest == [{"a": 1, "b": "x"}, {"a": 2, "b": "x"}, {"a": 2, "b": "y"}] and fresh.exhausted


def test_grid_gives_a_released_point_back() -> None:
    space = SearchSpace([Dimension("a", "int", 0, 1)])
    strategy = GridStrategy(space)
    first, _ = strategy.ask(2)
    assert strategy.exhausted
    strategy.release(first)
    assert not strategy.exhausted and strategy.ask(2) == [first]


# ------------------------------------------------------------------------------------ random


def test_random_covers_a_tiny_finite_space_then_is_exhausted() -> None:
    space = SearchSpace([Dimension("a", "int", 0, 2), Dimension("b", "categorical", choices=("x", "y"))])
    strategy = RandomStrategy(space, seed=0)
    asked = strategy.ask(4) + strategy.ask(4)
    assert len(asked) == 6 and len({params_key(p) for p in asked}) == 6
    assert strategy.exhausted and strategy.ask() == []


# ------------------------------------------------------------------------------------ bayes


def test_bayes_constant_liar_leaves_the_optimiser_untouched() -> None:
    strategy = BayesStrategy(mixed_space(), mode="min", seed=0, n_initial_points=3, acquisition="gp_hedge")
    run(strategy, 3)
    assert strategy.optimizer is not None
    told_x = [list(x) for x in strategy.optimizer.Xi]
    parallel = [p for _ in range(3) for p in strategy.ask()]
    assert len({params_key(p) for p in parallel}) == 3
    assert [list(x) for x in strategy.optimizer.Xi] == told_x


def test_bayes_parallel_asks_mirror_skopt_constant_liar() -> None:
    strategy = BayesStrategy(mixed_space(), mode="min", seed=0, n_initial_points=3, acquisition="gp_hedge")
    run(strategy, 4)
    opt = strategy.optimizer
    assert opt is not None
    own_rng = opt.rng

    class SameSeed:  # skopt seeds its liar copy with rng.randint(...): hand it ours
        def randint(self, *args: Any) -> int:
            return derive_seed("bayes", 0, "liar", strategy.n_told, 0)

    opt.rng = SameSeed()
    reference = [strategy._decode(x) for x in opt.ask(n_points=3, strategy="cl_min")]
    opt.rng = own_rng
    assert strategy.ask(3) == reference
    assert len({params_key(p) for p in reference}) == 3


def test_bayes_gbrt_fails_clearly_at_construction() -> None:
    with pytest.raises(ValueError, match=r"search\.bayes\.surrogate.*GP, RF or ET"):
        BayesStrategy(mixed_space(), surrogate="GBRT")


@pytest.mark.parametrize("surrogate", ["RF", "ET"])
def test_bayes_tree_surrogates_run(surrogate: str) -> None:
    strategy = BayesStrategy(mixed_space(), mode="min", seed=0, surrogate=surrogate, n_initial_points=3)
    assert len({params_key(p) for p in run(strategy, 6)}) == 6
    with pytest.raises(ValueError, match=r"search\.bayes\.acq_optimizer"):
        BayesStrategy(mixed_space(), surrogate=surrogate, acq_optimizer="lbfgs")


# ------------------------------------------------------------------------------------ genetic


def test_genetic_keeps_its_elite_and_never_stalls_on_parallel_asks() -> None:
    space = branin().space
    strategy = GeneticStrategy(space, mode="min", seed=0, population_size=4, elite=1)
    gen0 = strategy.ask(4)
    for value, point in enumerate(gen0):
        strategy.tell(point, float(value))
    assert strategy.generation == 1
    children = strategy.ask(12)  # three generations' worth, none told yet
    assert len({params_key(p) for p in children}) == 12
    for point in children[:3]:
        strategy.tell(point, 10.0)
    assert strategy.generation == 2
    assert strategy.population[0] == (gen0[0], -0.0)  # the elite, not re-evaluated


# ------------------------------------------------------------------------------------ make_strategy


@pytest.mark.parametrize("name", ["grid", "random", "bayes", "genetic"])
def test_make_strategy_completes_initial_points_and_follows_the_config(name: str) -> None:
    cfg = ExperimentConfig.model_validate(
        {
            "seed": 3,
            "model": {"momentum": 0.5, "hidden_layers": [128, 64]},
            "search": {
                "strategy": name,
                "metric": "val_loss",
                "initial_points": [{"learning_rate": 0.01}],
                "space": {
                    "learning_rate": {"low": 1e-4, "high": 0.5, "log": True},
                    "momentum": {"low": 0.0, "high": 0.99},
                    "hidden_layers": {"choices": [[64], [128, 64]]},
                },
            },
        }
    )
    strategy = make_strategy(cfg)
    assert strategy.name == name and strategy.mode == "min" and strategy.seed == 3
    assert strategy.ask() == [{"learning_rate": 0.01, "momentum": 0.5, "hidden_layers": [128, 64]}]


# ------------------------------------------------------------------------------------ quality


def best_after(strategy: Strategy, fn: Callable[[Mapping[str, Any]], float], budget: int) -> float:
    run(strategy, budget, fn)
    assert strategy.best is not None and strategy.best.value is not None
    return strategy.best.value


def test_bayes_beats_random_on_branin_in_20_evaluations() -> None:
    # The fast lane's quality check; tests/search/test_bayes.py holds the 40-evaluation one.
    space, fn, optimum = branin()
    bayes = best_after(BayesStrategy(space, mode="min", seed=0), fn, 20)
    random = best_after(RandomStrategy(space, mode="min", seed=0), fn, 20)
    assert bayes - optimum < 0.5
    assert bayes < random


def test_genetic_beats_random_on_branin() -> None:
    space, fn, _ = branin()
    genetic = [best_after(GeneticStrategy(space, mode="min", seed=s), fn, 100) for s in range(5)]
    random = [best_after(RandomStrategy(space, mode="min", seed=s), fn, 100) for s in range(5)]
    assert statistics.median(genetic) < statistics.median(random)


@pytest.mark.parametrize(
    ("objective", "at"),
    [
        (branin, [{"x1": -math.pi, "x2": 12.275}, {"x1": math.pi, "x2": 2.275}]),
        (
            hartmann6,
            [{"x1": 0.20169, "x2": 0.150011, "x3": 0.476874, "x4": 0.275332, "x5": 0.311652, "x6": 0.6573}],
        ),
        (ackley, [{f"x{i}": 0.0 for i in range(1, 6)}]),
        (levy, [{f"x{i}": 1.0 for i in range(1, 6)}]),
        (rosenbrock, [{f"x{i}": 1.0 for i in range(1, 5)}]),
    ],
)
def test_objectives_reach_their_known_optimum(objective: Callable[..., Any], at: list[dict]) -> None:
    space, fn, optimum = objective()
    for point in at:
        assert space.contains(point)
        assert fn(point) == pytest.approx(optimum, abs=1e-4)
    rng = np.random.default_rng(0)
    assert min(fn(space.sample(rng)) for _ in range(200)) > optimum
