"""Several objectives: dominance and the front, NSGA-II, ParEGO, select, and the parameter budget."""

from __future__ import annotations

import itertools
import math
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import ROOT, small_config
from mlflow.tracking import MlflowClient

from hyperflow.components.budget import BudgetError, param_counter
from hyperflow.components.config import ConfigError, validate_config
from hyperflow.components.fingerprint import flatten
from hyperflow.components.model import param_count
from hyperflow.components.names import (
    TAG_CHAMPION_TRIAL,
    TAG_MULTI_OBJECTIVE,
    TAG_PARENT,
    TAG_PARETO,
    TAG_TRIAL,
)
from hyperflow.components.pareto import (
    crowding_distance,
    dominates,
    hypervolume,
    knee_index,
    non_dominated_sort,
    pareto_front,
    to_losses,
)
from hyperflow.components.search import (
    Dimension,
    GeneticStrategy,
    ParEGOStrategy,
    RandomStrategy,
    SearchSpace,
    make_strategy,
)
from hyperflow.components.search._base import derive_seed
from hyperflow.components.search._genetic import Member, _nsga2_survivors, latin_hypercube
from hyperflow.components.search._parego import augmented_chebyshev, simplex_lattice
from hyperflow.components.search._space import params_key
from hyperflow.components.trial import TrialSpec

TWO = [{"metric": "val_accuracy"}, {"metric": "param_count"}]

# --------------------------------------------------------------------------------------------
# Dominance, the front, sorting, crowding, knee, hypervolume


def test_dominance_is_no_worse_everywhere_and_better_somewhere() -> None:
    assert dominates((1, 1), (2, 1)) and dominates((1, 1), (2, 2))
    assert not dominates((1, 1), (1, 1)) and not dominates((1, 3), (2, 2))


def test_the_front_holds_exactly_the_points_nothing_dominates() -> None:
    rng = np.random.default_rng(3)
    points = [tuple(p) for p in rng.integers(0, 6, size=(40, 2)).tolist()]
    front = set(pareto_front(points))
    for i, p in enumerate(points):
        dominated = any(dominates(q, p) for q in points)
        assert (i in front) == (not dominated)


def test_non_dominated_sort_ranks_each_front_by_the_ones_before() -> None:
    rng = np.random.default_rng(4)
    points = [tuple(p) for p in rng.random((30, 3)).tolist()]
    fronts = non_dominated_sort(points)
    assert sorted(itertools.chain(*fronts)) == list(range(30))
    assert fronts[0] == pareto_front(points)
    for k in range(1, len(fronts)):
        left = [i for f in fronts[k:] for i in f]
        assert fronts[k] == [left[j] for j in pareto_front([points[i] for i in left])]
        # each point of front k is dominated by one of front k-1
        assert all(any(dominates(points[a], points[b]) for a in fronts[k - 1]) for b in fronts[k])


def test_crowding_gives_the_ends_infinity_and_the_isolated_point_more() -> None:
    points = [(0.0, 4.0), (1.0, 3.0), (1.1, 2.9), (3.0, 1.0), (4.0, 0.0)]
    d = crowding_distance(points)
    assert math.isinf(d[0]) and math.isinf(d[4])
    assert d[3] > d[1] and d[3] > d[2]


def test_the_knee_is_the_elbow_of_a_front_and_ties_go_to_the_earlier() -> None:
    # accuracy up, parameters up: the elbow at (0.95, 1000) is where more parameters stop paying.
    values = [(0.50, 100), (0.90, 500), (0.95, 1000), (0.96, 50_000), (0.97, 100_000)]
    losses = [to_losses(v, ("max", "min")) for v in values]
    assert knee_index(losses) == 2
    assert knee_index([(0.0, 1.0), (1.0, 0.0)]) == 0


def test_the_knee_of_two_members_or_of_a_straight_front_is_the_best_primary() -> None:
    # Both ends of a two-member front lie on the line: the tie went to the earlier, whatever it was.
    values = [(0.90, 100), (0.95, 1000)]  # (accuracy, param_count): the later is more accurate
    assert knee_index([to_losses(v, ("max", "min")) for v in values]) == 1
    assert knee_index([(1.0, 0.0), (0.0, 1.0)]) == 1
    # three members on a straight line (floating-point noise included): the best primary again
    assert knee_index([(0.3, 0.7), (0.1, 0.9), (0.2, 0.8)]) == 1
    assert knee_index([(0.5, 0.5)]) == 0


def test_hypervolume_two_and_three_objectives_against_counting_unit_cells() -> None:
    assert hypervolume([(1, 3), (2, 2), (3, 1)], (4, 4)) == pytest.approx(6.0)
    assert hypervolume([(5, 5)], (4, 4)) == 0.0
    rng = np.random.default_rng(5)
    points = [tuple(p) for p in rng.integers(0, 5, size=(8, 3)).tolist()]
    ref = (5, 5, 5)
    cells = sum(
        any(all(p[k] <= c[k] for k in range(3)) for p in points)
        for c in itertools.product(range(5), repeat=3)
    )
    assert hypervolume(points, ref) == pytest.approx(cells)


# --------------------------------------------------------------------------------------------
# Config: every new key validates and is documented


@pytest.mark.parametrize(
    ("search", "path", "fragment"),
    [
        ({"objectives": [{"metric": "val_accuracy"}]}, "search.objectives", "two or more"),
        (
            {"objectives": [{"metric": "val_loss"}, {"metric": "val_loss"}]},
            "search.objectives.1.metric",
            "already",
        ),
        (
            {"objectives": [{"metric": ""}, {"metric": "param_count"}]},
            "search.objectives.0.metric",
            "at least 1",
        ),
        (
            {"objectives": [{"metric": "val_loss", "mode": "up"}, {"metric": "param_count"}]},
            "search.objectives.0.mode",
            "'max' or 'min'",
        ),
        (
            {"metric": "val_accuracy", "objectives": [{"metric": "val_loss"}, {"metric": "param_count"}]},
            "search.objectives.0.metric",
            "primary",
        ),
        (
            {
                "mode": "min",
                "objectives": [{"metric": "val_accuracy", "mode": "max"}, {"metric": "param_count"}],
            },
            "search.objectives.0.mode",
            "contradicts",
        ),
        ({"select": "knee"}, "search.select", "needs search.objectives"),
        ({"select": "middle", "objectives": TWO}, "search.select", "'primary' or 'knee'"),
        ({"max_param_count": 0}, "search.max_param_count", "greater than or equal to 1"),
        ({"max_param_count": "many"}, "search.max_param_count", "integer"),
    ],
)
def test_a_bad_objective_key_is_named_by_its_path(search: dict[str, Any], path: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate_config({"search": search})
    assert any(p == path and fragment in m for p, m in err.value.problems), err.value.problems


def test_the_first_objective_is_the_primary_and_a_valid_config_round_trips() -> None:
    cfg = validate_config({"search": {"objectives": [{"metric": "val_loss"}, {"metric": "param_count"}]}})
    assert (cfg.search.metric, cfg.search.mode) == ("val_loss", "min")
    assert [o.mode for o in cfg.search.objectives] == ["min", "min"]
    again = validate_config(cfg.model_dump(mode="json"))
    assert again.search == cfg.search
    assert validate_config({}).search.select == "primary"


def test_every_new_key_is_in_the_readme_config_table() -> None:
    keys = ["search.objectives", "search.select", "search.max_param_count", "search.bayes.multi_objective"]
    table = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| `")]
    documented = {key for line in table for key in re.findall(r"`([\w.]+)`", line.split("|")[1])}
    assert set(keys) <= documented, sorted(set(keys) - documented)
    defaults = flatten(validate_config({}))
    assert all(key in defaults for key in keys)


# --------------------------------------------------------------------------------------------
# Parameter counts before training, and the budget


def test_the_mlp_count_before_training_is_the_built_models(digits: Any, tmp_path: Path) -> None:
    from hyperflow.components.training import build_module

    cfg = small_config(
        tmp_path,
        model={"batch_norm": True, "hidden_layers": None},
        search={"space": {"depth": {"low": 1, "high": 3, "type": "int"}, "width": {"choices": [8, 33]}}},
    )
    spec = TrialSpec.from_config(cfg)
    count = param_counter(spec, digits)
    for depth, width in itertools.product((1, 2, 3), (8, 33)):
        params = {"depth": depth, "width": width}
        assert count(params) == param_count(build_module(digits, params, spec))


def test_a_users_module_is_counted_by_building_it_and_a_function_is_refused(tmp_path: Path) -> None:
    import torch

    from hyperflow.components.usercode import registered

    cfg = validate_config(
        {
            "data": {"module": "examples.digits_cnn.data:DigitsDataModule"},
            "model": {"module": "examples.digits_cnn.model:DigitsCNN", "args": {"kernel_size": 3}},
            "search": {"space": {"channels": {"choices": [8, 16]}}},
        }
    )
    from examples.digits_cnn.model import DigitsCNN

    count = param_counter(TrialSpec.from_config(cfg), None)
    state = torch.random.get_rng_state()
    eight, sixteen = count({"channels": 8}), count({"channels": 16})
    assert torch.equal(state, torch.random.get_rng_state())  # building never moves the caller's RNG
    assert eight == param_count(DigitsCNN(channels=8, kernel_size=3)) and sixteen > eight
    # it pickles (a bayes strategy's process takes it along), and counts the same there
    assert pickle.loads(pickle.dumps(count))({"channels": 16}) == sixteen

    def objective(params: dict[str, Any], report: Any) -> float:
        return 0.0

    with registered("budget_fn:objective", objective):
        fn_cfg = small_config(tmp_path, model={"module": "budget_fn:objective"}, search={"metric": "score"})
        with pytest.raises(BudgetError, match=re.escape("search.max_param_count: a training function")):
            param_counter(TrialSpec.from_config(fn_cfg), None)


def test_ehvi_counts_by_formula_and_its_reference_is_the_largest_net_the_budget_allows(digits: Any) -> None:
    from hyperflow.components.budget import param_counts

    def counts(**search: Any) -> Any:
        cfg = validate_config(
            {
                "data": {"source": "digits"},
                "search": {
                    "strategy": "bayes",
                    "objectives": TWO,
                    "space": {"hidden_layers": {"choices": [[8], [64], [128, 64]]}},
                    **search,
                },
            }
        )
        return param_counts(cfg, TrialSpec.from_config(cfg), digits)

    count, largest = counts()
    assert largest == count({"hidden_layers": [128, 64]}) == 64 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10
    assert counts(max_param_count=1000)[1] == 1000
    assert counts(bayes={"multi_objective": "parego"}) is None


@pytest.mark.parametrize(
    ("search", "model", "how"),
    [
        ({"strategy": "bayes"}, {}, "searched by EHVI, the count known before training"),
        ({"strategy": "bayes", "bayes": {"multi_objective": "parego"}}, {}, "searched by ParEGO's"),
        ({"strategy": "bayes"}, {"module": "examples.digits_cnn.model:DigitsCNN"}, "searched by ParEGO's"),
        ({"strategy": "genetic"}, {}, "searched by NSGA-II"),
        ({"strategy": "random"}, {}, "searched by random search, the front recorded"),
    ],
)
def test_validate_says_how_the_objectives_are_searched(
    search: dict[str, Any], model: dict[str, Any], how: str
) -> None:
    from hyperflow.components.describe import describe_config

    cfg = validate_config({"search": {**search, "objectives": TWO, "select": "knee"}, "model": model})
    (line,) = [
        x for x in describe_config(cfg, None).splitlines() if "objectives:" in x and "searched by" in x
    ]
    assert "val_accuracy (max), param_count (min)" in line and how in line and "champion: knee" in line


def test_validate_refuses_a_budget_below_the_smallest_architecture(tmp_path: Path, in_tmp: Path) -> None:
    from typer.testing import CliRunner

    from hyperflow.flows.cli import app

    space = "search.space.hidden_layers={choices: [[16], [64, 32]]}"
    # digits: 64 features, 10 classes: [16] has 65*16 + 17*10 = 1210 parameters
    ok = CliRunner().invoke(
        app,
        ["validate", str(ROOT / "conf/random.yaml"), "--set", space, "--set", "search.max_param_count=1210"],
    )
    assert ok.exit_code == 0, ok.output
    assert "parameters: 1,210 to" in ok.output
    bad = CliRunner().invoke(
        app,
        ["validate", str(ROOT / "conf/random.yaml"), "--set", space, "--set", "search.max_param_count=1209"],
    )
    assert bad.exit_code == 2
    assert "search.max_param_count: 1,209 is below the smallest architecture" in bad.output
    assert "1,210" in bad.output


def test_validate_counts_a_users_module_and_refuses_a_budget_below_its_smallest(in_tmp: Path) -> None:
    from typer.testing import CliRunner

    from examples.digits_cnn.model import DigitsCNN
    from hyperflow.components.budget import budget_problem
    from hyperflow.components.describe import describe_config
    from hyperflow.flows.cli import app

    raw = {
        "data": {"module": "examples.digits_cnn.data:DigitsDataModule"},
        "model": {"module": "examples.digits_cnn.model:DigitsCNN", "args": {"kernel_size": 3}},
        "search": {
            "strategy": "random",
            "space": {
                "channels": {"choices": [8, 4, 16]},
                "learning_rate": {"low": 1.0e-4, "high": 0.03, "log": True},
            },
        },
    }
    smallest, largest = (param_count(DigitsCNN(channels=c, kernel_size=3)) for c in (4, 16))
    ok = validate_config({**raw, "search": {**raw["search"], "max_param_count": smallest}})
    assert budget_problem(ok, None) is None
    (line,) = [x for x in describe_config(ok, None).splitlines() if "parameters:" in x]
    assert f"parameters: {smallest:,} to {largest:,} (channels changes it;" in line
    bad = validate_config({**raw, "search": {**raw["search"], "max_param_count": smallest - 1}})
    problem = budget_problem(bad, None)
    assert problem is not None
    assert problem.startswith(f"search.max_param_count: {smallest - 1:,} is below the smallest architecture")
    assert f"{smallest:,} to {largest:,}" in problem
    # the CLI: refused before anything runs (it passed with exit 0 and ran no trial)
    config = in_tmp / "cnn.yaml"
    config.write_text(yaml.safe_dump(raw))
    out = CliRunner().invoke(
        app, ["validate", str(config), "--set", f"search.max_param_count={smallest - 1}"]
    )
    assert out.exit_code == 2, out.output
    assert "is below the smallest architecture" in out.output


def test_a_param_count_objective_is_refused_for_a_training_function(tmp_path: Path) -> None:
    from hyperflow.components.preflight import PreflightError, preflight
    from hyperflow.components.usercode import registered

    def objective(params: dict[str, Any], report: Any) -> float:
        return 0.0

    with registered("budget_fn:objective", objective):
        cfg = small_config(
            tmp_path,
            model={"module": "budget_fn:objective"},
            search={"objectives": [{"metric": "score"}, {"metric": "param_count"}]},
        )
        with pytest.raises(
            PreflightError, match=re.escape("search.objectives.1.metric: a training function")
        ):
            preflight(cfg, check_tracking=False)
        # other trial metrics are known for a function: train_seconds stays allowed
        cfg = small_config(
            tmp_path,
            model={"module": "budget_fn:objective"},
            search={"objectives": [{"metric": "score"}, {"metric": "train_seconds"}]},
        )
        preflight(cfg, check_tracking=False)
    assert not (tmp_path / "mlflow.db").exists()


def space_of_widths() -> SearchSpace:
    return SearchSpace(
        [
            Dimension("hidden_layers", "categorical", choices=([4], [8], [64], [128])),
            Dimension("learning_rate", "real", 0.01, 0.3, log=True),
        ]
    )


@pytest.mark.parametrize("strategy", ["random", "genetic", "grid", "bayes"])
def test_no_strategy_asks_a_candidate_over_the_budget(strategy: str) -> None:
    from hyperflow.components.config import BayesConfig, GeneticConfig, GridConfig
    from hyperflow.components.search import BayesStrategy, GridStrategy

    space = space_of_widths()
    kinds: dict[str, Any] = {
        "random": lambda: RandomStrategy(space, seed=1),
        "genetic": lambda: GeneticStrategy(
            space, seed=1, **GeneticConfig(population_size=4, elite=1).model_dump()
        ),
        "grid": lambda: GridStrategy(space, seed=1, **GridConfig().model_dump()),
        "bayes": lambda: BayesStrategy(
            space, seed=1, **BayesConfig(n_initial_points=8).model_dump(exclude={"multi_objective"})
        ),
    }
    s = kinds[strategy]()
    s.feasible = lambda p: p["hidden_layers"][0] <= 8
    asked = 0
    for _ in range(9):  # bayes: one surrogate fit, at the 9th ask
        points = s.ask(1)
        if not points:
            break
        (p,) = points
        assert p["hidden_layers"][0] <= 8, p
        asked += 1
        s.tell(p, float(p["learning_rate"]))
    assert asked == (6 if strategy == "grid" else 9)  # the grid: 2 feasible widths x 3 rates
    assert s.infeasible and all("64" in k or "128" in k for k in s.infeasible)


# --------------------------------------------------------------------------------------------
# NSGA-II and ParEGO


def test_nsga2_survivors_are_by_front_then_crowding_with_failures_last() -> None:
    members = [
        Member({"i": 0}, 0.0, (0.0, 4.0)),
        Member({"i": 1}, 1.0, (1.0, 3.0)),
        Member({"i": 2}, 1.1, (1.1, 2.9)),
        Member({"i": 3}, 4.0, (4.0, 0.0)),
        Member({"i": 4}, 2.0, (2.0, 3.5)),  # dominated by 1
        Member({"i": 5}, None, None),  # failed
    ]
    order = [m.params["i"] for m in _nsga2_survivors(members, 6)]
    assert set(order[:4]) == {0, 1, 2, 3} and order[4:] == [4, 5]
    assert order[:2] == [0, 3]  # the ends of the front (infinite crowding) first
    assert [m.params["i"] for m in _nsga2_survivors(members, 3)] == order[:3]


def test_nsga2_generation_zero_is_a_latin_hypercube_covering_every_stratum_and_choice() -> None:
    space = SearchSpace(
        [
            Dimension("x", "real", 0.0, 1.0),
            Dimension("optimizer", "categorical", choices=("sgd", "adam", "adamw", "rmsprop")),
            Dimension("width", "int", 1, 12),
        ]
    )
    design = latin_hypercube(space, 12, seed=5)
    assert sorted(int(p["x"] * 12) for p in design) == list(range(12))  # one point a stratum
    assert sorted(p["width"] for p in design) == list(range(1, 13))
    assert all(sum(p["optimizer"] == c for p in design) == 3 for c in ("sgd", "adam", "adamw", "rmsprop"))
    assert latin_hypercube(space, 12, seed=5) == design and latin_hypercube(space, 12, seed=6) != design
    ga = GeneticStrategy(space, seed=0, population_size=12, elite=1)
    ga.objective_modes = ("max", "min")
    asked = [p for _ in range(12) for p in ga.ask(1)]
    seed = derive_seed("genetic", 0, "design")
    assert asked == latin_hypercube(space, 12, seed)
    plain = GeneticStrategy(space, seed=0, population_size=12, elite=1)  # one objective: as before
    assert [p for _ in range(12) for p in plain.ask(1)] != asked


def test_steady_state_nsga2_takes_a_child_into_the_population_as_soon_as_it_is_told() -> None:
    space = SearchSpace([Dimension("x", "real", 0.0, 1.0), Dimension("y", "real", 0.0, 1.0)])

    def told_gen0(survival: str) -> GeneticStrategy:
        ga = GeneticStrategy(space, seed=2, population_size=4, elite=1, survival=survival)
        ga.objective_modes = ("min", "min")
        for _ in range(4):
            (p,) = ga.ask(1)
            ga.tell(p, 1.0 + p["x"], objectives=(1.0 + p["x"], 1.0 + p["y"]))
        return ga

    child = {"x": 0.5, "y": 0.5}  # (0, 0): dominates every member of generation 0
    steady, generational = told_gen0("steady"), told_gen0("generational")
    for ga in (steady, generational):
        assert ga.generation == 1
        ga.tell(child, 0.0, objectives=(0.0, 0.0))
    assert steady.population[0][0] == child and len(steady.population) == 4
    assert child not in [p for p, _ in generational.population]  # waits for 3 more children
    for ga in (steady, generational):
        for _ in range(3):
            (p,) = ga.ask(1)
            ga.tell(p, 1.0 + p["x"], objectives=(1.0 + p["x"], 1.0 + p["y"]))
        assert ga.generation == 2 and ga.population[0][0] == child


def test_numeric_choices_mutate_to_a_neighbour_and_other_choices_to_any() -> None:
    rates = (0.3, 0.001, 0.01, 0.1, 0.003)  # not written in order
    space = SearchSpace(
        [
            Dimension("learning_rate", "categorical", choices=rates),
            Dimension("optimizer", "categorical", choices=("sgd", "adam", "adamw", "rmsprop")),
        ]
    )
    ordered = sorted(rates)
    for ordinal in (True, False):
        options = {} if ordinal else {"ordinal_choices": False}  # ordinal is the default
        ga = GeneticStrategy(space, seed=0, mutation_rate=1.0, **options)
        ga.objective_modes = ("max", "min")
        rng = np.random.default_rng(0)
        steps, jumps = set(), set()
        for start in rates:
            for _ in range(40):
                child = ga._mutate({"learning_rate": start, "optimizer": "sgd"}, rng)
                steps.add(abs(ordered.index(child["learning_rate"]) - ordered.index(start)))
                jumps.add(child["optimizer"])
        assert steps == ({1} if ordinal else {1, 2, 3, 4})
        assert jumps == {"adam", "adamw", "rmsprop"}  # never a neighbour-only walk for words


def test_nsga2_never_asks_a_point_twice_and_covers_a_small_space() -> None:
    space = SearchSpace(
        [
            Dimension("hidden_layers", "categorical", choices=([4], [8], [16], [32])),
            Dimension("learning_rate", "categorical", choices=(0.001, 0.01, 0.1)),
            Dimension("optimizer", "categorical", choices=("sgd", "adam")),
        ]
    )
    for kind in ("genetic", "random"):
        s = (
            GeneticStrategy(space, seed=4, population_size=6, elite=1)
            if kind == "genetic"
            else RandomStrategy(space, seed=4)
        )
        s.objective_modes = ("max", "min")
        keys = []
        while not s.exhausted:
            batch = s.ask(2)
            for p in batch:
                values = (p["learning_rate"] * 10, p["hidden_layers"][0])
                s.tell(p, values[0], objectives=values)
                keys.append(params_key(p))
        assert len(keys) == len(set(keys)) == 24, kind


def zdt1(p: dict[str, Any]) -> tuple[float, float]:
    """ZDT1 (Zitzler, Deb and Thiele 2000) on five variables: a convex front at g = 1."""
    x = [p[f"x{i}"] for i in range(5)]
    g = 1 + 9 * sum(x[1:]) / 4
    return x[0], g * (1 - math.sqrt(x[0] / g))


def test_nsga2_beats_random_on_zdt1_in_40_evaluations() -> None:
    space = SearchSpace([Dimension(f"x{i}", "real", 0.0, 1.0) for i in range(5)])

    def hv(strategy: Any) -> float:
        strategy.objective_modes = ("min", "min")
        points = []
        for _ in range(40):
            (p,) = strategy.ask(1)
            f = zdt1(p)
            strategy.tell(p, f[0], objectives=f)
            points.append(f)
        return hypervolume(points, (1.1, 11.0))

    def median(make: Any) -> float:
        return float(np.median([hv(make(seed)) for seed in range(5)]))

    nsga2 = median(lambda seed: GeneticStrategy(space, mode="min", seed=seed, population_size=8, elite=1))
    random = median(lambda seed: RandomStrategy(space, mode="min", seed=seed))
    before = median(
        lambda seed: GeneticStrategy(
            space,
            mode="min",
            seed=seed,
            population_size=8,
            elite=1,
            survival="generational",
            initial_design="random",
        )
    )
    assert nsga2 > before > random


def synthetic_two(p: dict[str, Any]) -> tuple[float, float]:
    """A trade-off on [0, 1]^2: accuracy rises with x, the count with x too; y only adds noise-like cost."""
    x, y = p["x"], p["y"]
    return 1.0 - (1.0 - x) ** 2 - 0.3 * y, 100.0 * x + 50.0 * y


def run_two(strategy: Any, n: int) -> list[tuple[dict[str, Any], tuple[float, float]]]:
    told = []
    for _ in range(n):
        (p,) = strategy.ask(1)
        values = synthetic_two(p)
        strategy.tell(p, values[0], objectives=values)
        told.append((p, values))
    return told


def two_objective(kind: str, seed: int) -> Any:
    cfg = validate_config(
        {
            "seed": seed,
            "search": {
                "strategy": kind,
                "objectives": TWO,
                "space": {"x": {"low": 0.0, "high": 1.0}, "y": {"low": 0.0, "high": 1.0}},
                "genetic": {"population_size": 8, "elite": 1},
                "bayes": {"n_initial_points": 4, "acq_optimizer": "sampling"},
            },
            "model": {"module": "examples.digits_cnn.model:DigitsCNN"},
        }
    )
    return make_strategy(cfg)


def test_nsga2_sorts_its_population_by_the_objectives_and_is_rebuilt_by_telling() -> None:
    ga = two_objective("genetic", 0)
    assert isinstance(ga, GeneticStrategy) and ga.nsga2
    told = run_two(ga, 24)
    assert ga.generation == 3
    losses = [to_losses(v, ("max", "min")) for _, v in told]
    parents = [to_losses(synthetic_two(p), ("max", "min")) for p, _ in ga.population]
    # the first survivors are the front of everything told (elitist: nothing on the front is lost)
    front = {tuple(losses[i]) for i in pareto_front(losses)}
    head = [p for p in parents if p in front]
    assert parents[: len(head)] == head and len(head) == min(len(front), 8)
    again = two_objective("genetic", 0)
    for p, v in told:
        again.tell(p, v[0], objectives=v)
    assert again.ask(3) == ga.ask(3)


def test_parego_fits_one_scalarisation_per_suggestion_over_every_told_trial() -> None:
    pe = two_objective("bayes", 0)
    assert isinstance(pe, ParEGOStrategy)
    told = run_two(pe, 6)  # four initial points, then two from the surrogate
    losses = np.array([to_losses(v, ("max", "min")) for _, v in told])
    low, high = losses.min(axis=0), losses.max(axis=0)
    scaled = (losses - low) / (high - low)
    assert pe.scaled_losses() == pytest.approx(scaled)
    for position in (6, 7):
        w = pe.weights(position)
        inner = pe.surrogate_strategy(position, [])
        # every told trial, scalarised with this one suggestion's weights (not each with its own)
        assert [o.params for o in inner.history] == [p for p, _ in told]
        expected = [float(v) for v in augmented_chebyshev(scaled, w)]
        assert [o.value for o in inner.history] == pytest.approx(expected)
    assert not np.array_equal(pe.weights(6), pe.weights(7))
    again = two_objective("bayes", 0)
    for p, v in told:
        again.tell(p, v[0], objectives=v)
    assert again.ask(1) == pe.ask(1)


def test_parego_weights_visit_the_whole_simplex_lattice_in_every_cycle() -> None:
    lattice = simplex_lattice(2, 10)
    assert len(lattice) == 11 and all(w.sum() == pytest.approx(1.0) and (w >= 0).all() for w in lattice)
    assert len(simplex_lattice(3, 4)) == 15
    pe = two_objective("bayes", 3)
    for cycle in range(3):
        seen = sorted(tuple(pe.weights(11 * cycle + i)) for i in range(11))
        assert seen == sorted(tuple(w) for w in lattice)
    assert [tuple(pe.weights(i)) for i in range(11)] != [tuple(pe.weights(11 + i)) for i in range(11)]
    # the augmented Chebyshev value: the largest weighted loss plus 0.05 of their sum
    assert augmented_chebyshev(np.array([[0.5, 1.0]]), np.array([0.3, 0.7]))[0] == pytest.approx(
        0.7 + 0.05 * (0.15 + 0.7)
    )


def test_parego_tells_a_missing_objective_as_a_failure_and_keeps_pending_points_pending() -> None:
    pe = two_objective("bayes", 1)
    told = run_two(pe, 4)
    (p,) = pe.ask(1)
    pe.tell(p, 0.5, objectives=[0.5, float("nan")])  # an objective missing
    batch = pe.ask(2)
    inner = pe.surrogate_strategy(pe.n_told + 2, batch)
    assert inner.history[-1].state == "failed" and inner.history[-1].params == p
    assert [o.params for o in inner.history[:4]] == [q for q, _ in told]
    assert {params_key(q) for q in inner.pending} == {params_key(q) for q in batch}


# --------------------------------------------------------------------------------------------
# Studies on real training: the front, the champion, the budget, resume


def run_study(cfg: Any, data: Any) -> Any:
    from hyperflow.components.lifecycle import finish_study, open_study
    from hyperflow.components.study import execute_trial

    study = open_study(cfg, data)
    while not study.done:
        for plan in study.plan():
            study.record(plan, execute_trial(data, plan, study.spec))
    return study, finish_study(study, data)


def trial_runs(client: MlflowClient, study_run_id: str) -> list[Any]:
    run = client.get_run(study_run_id)
    runs = client.search_runs([run.info.experiment_id], f"tags.`{TAG_PARENT}` = '{study_run_id}'")
    return sorted(runs, key=lambda r: int(r.data.tags[TAG_TRIAL]))


@pytest.mark.slow
@pytest.mark.parametrize("select", ["primary", "knee"])
def test_a_two_objective_study_records_its_front_and_registers_what_select_names(
    tmp_path: Path, digits: Any, select: str
) -> None:
    cfg = small_config(
        tmp_path,
        model={"max_epochs": 2},
        search={
            "n_trials": 6,
            "objectives": TWO,
            "select": select,
            "space": {
                "learning_rate": {"low": 0.02, "high": 0.3, "log": True},
                "hidden_layers": {"choices": [[4], [8], [16], [32]]},
            },
        },
    )
    study, result = run_study(cfg, digits)
    client = MlflowClient(cfg.tracking.uri)
    runs = trial_runs(client, study.study_run_id)
    finished = [r for r in runs if r.data.tags["hyperflow.state"] == "completed"]
    assert len(finished) == 6
    values = {
        int(r.data.tags[TAG_TRIAL]): (r.data.metrics["val_accuracy"], r.data.metrics["param_count"])
        for r in finished
    }
    on_front = {int(r.data.tags[TAG_TRIAL]) for r in finished if r.data.tags.get(TAG_PARETO) == "true"}
    assert on_front and len(on_front) == client.get_run(study.study_run_id).data.metrics["pareto_size"]
    losses = {n: to_losses(v, ("max", "min")) for n, v in values.items()}
    for n in on_front:  # no trial on the recorded front is dominated by another finished trial
        assert not any(dominates(losses[m], losses[n]) for m in values if m != n)
    for n in set(values) - on_front:  # and every trial off it is
        assert any(dominates(losses[m], losses[n]) for m in values)
    front = sorted(on_front)
    expected = (
        max(front, key=lambda n: (values[n][0], -n))
        if select == "primary"
        else front[knee_index([losses[n] for n in front])]
    )
    study_run = client.get_run(study.study_run_id)
    assert study_run.data.tags[TAG_CHAMPION_TRIAL] == str(expected) == str(result.champion_trial)
    assert study_run.data.tags[TAG_MULTI_OBJECTIVE] == "random"  # small_config's strategy
    assert result.champion_objectives == {
        "val_accuracy": values[expected][0],
        "param_count": values[expected][1],
    }
    assert result.champion_params == next(r.params for r in study.records if r.number == expected)
    assert study_run.data.metrics["best_val_accuracy"] == max(v[0] for v in values.values())
    version = client.get_model_version(cfg.name, result.model_version)
    assert version.run_id == study.study_run_id
    arts = {a.path for a in client.list_artifacts(study.study_run_id, "plots")}
    assert "plots/pareto_front.png" in arts


def test_the_cli_summary_names_the_champion_when_select_registers_another_front_member(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from hyperflow.components.study import StudyResult
    from hyperflow.flows.cli import _print_summary

    result = StudyResult(
        study_run_id="abc",
        experiment_id="1",
        tracking_uri="sqlite:///mlflow.db",
        metric="val_accuracy",
        mode="max",
        status="FINISHED",
        best_params={"hidden_layers": [256]},
        best_value=0.98,
        best_trial=7,
        champion_trial=3,
        champion_params={"hidden_layers": [16]},
        champion_objectives={"val_accuracy": 0.95, "param_count": 1210.0},
        test_metrics={"test_accuracy": 0.94},
    )
    _print_summary(result)
    printed = capsys.readouterr().out
    assert "best       trial 7: val_accuracy = 0.98\nparams     hidden_layers=[256]\n" in printed
    assert (
        "champion   trial 3 (the front's knee): val_accuracy = 0.95, param_count = 1210\n"
        "params     hidden_layers=[16]\ntest       test_accuracy = 0.94"
    ) in printed
    result.champion_trial, result.champion_params = 7, result.best_params  # select: primary
    _print_summary(result)
    assert "champion" not in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["random", "bayes"])
def test_a_budget_trains_none_of_the_ruled_out_choices_and_still_finishes_n_trials(
    tmp_path: Path, digits: Any, strategy: str
) -> None:
    from hyperflow.components.search import EHVIStrategy
    from hyperflow.components.search._lookahead import StrategyProcess

    # [4]: 65*4 + 5*10 = 310 parameters, [8] 610; [64], [128], [256] are over 1000.
    search: dict[str, Any] = {
        "strategy": strategy,
        "n_trials": 4,
        "max_param_count": 1000,
        "space": {
            "learning_rate": {"low": 0.02, "high": 0.3, "log": True},
            "hidden_layers": {"choices": [[4], [8], [64], [128], [256]]},
        },
    }
    if strategy == "bayes":  # two objectives: EHVI
        search.update(objectives=TWO, bayes={"n_initial_points": 2})
    cfg = small_config(
        tmp_path,
        model={"max_epochs": 1},
        search=search,
        tracking={"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "register_model": False},
    )
    study, result = run_study(cfg, digits)
    client = MlflowClient(cfg.tracking.uri)
    runs = trial_runs(client, study.study_run_id)
    assert len(runs) == 4 and result.n_completed == 4
    assert {r.data.params["hidden_layers"] for r in runs} <= {"[4]", "[8]"}
    infeasible = client.get_run(study.study_run_id).data.metrics["n_candidates_infeasible"]
    assert infeasible == len(study.strategy.infeasible) > 0
    if strategy == "bayes":
        # The lookahead pickles a bayes strategy into a process of its own, the budget's check and
        # EHVI's counter with it (closures did not pickle: the study failed before its first trial).
        assert isinstance(study.strategy, EHVIStrategy)
        assert study.lookahead is not None and isinstance(study.lookahead.strategy, StrategyProcess)
        assert client.get_run(study.study_run_id).data.tags[TAG_MULTI_OBJECTIVE] == "ehvi"


@pytest.mark.parametrize("lookahead", [True, False])
def test_a_study_that_runs_out_of_candidates_within_the_budget_says_so(
    tmp_path: Path, digits: Any, lookahead: bool
) -> None:
    # Past validate (a user's module counted at too few points, a space changed): every candidate
    # over the budget ended the study with "0 completed, 0 pruned, 0 failed" and no reason.
    cfg = small_config(
        tmp_path,
        model={"max_epochs": 1},
        search={
            "n_trials": 3,
            "lookahead": lookahead,
            "max_param_count": 100,
            "space": {
                "learning_rate": {"low": 0.02, "high": 0.3, "log": True},
                "hidden_layers": {"choices": [[4], [8]]},  # 310 and 610 parameters
            },
        },
        tracking={"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "register_model": False},
    )
    study, result = run_study(cfg, digits)
    assert result.status == "FAILED" and result.n_completed == result.n_failed == 0
    assert result.stop_reason is not None
    assert result.stop_reason.startswith("no candidate left within search.max_param_count (100)")
    assert "0 of 3 trials finished" in result.stop_reason
    assert (
        MlflowClient(cfg.tracking.uri).get_run(study.study_run_id).data.metrics["n_candidates_infeasible"] > 0
    )


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["genetic", "bayes"])
def test_resume_rebuilds_the_front(tmp_path: Path, digits: Any, strategy: str) -> None:
    from hyperflow.components.lifecycle import open_study
    from hyperflow.components.resume import resume_study
    from hyperflow.components.search import EHVIStrategy
    from hyperflow.components.study import execute_trial

    cfg = small_config(
        tmp_path,
        model={"max_epochs": 1},
        search={
            "strategy": strategy,
            "n_trials": 4,
            "objectives": TWO,
            "lookahead": False,  # the strategy is told at once, so its state can be compared
            "genetic": {"population_size": 2, "elite": 1},
            "bayes": {"n_initial_points": 2},
            "space": {
                "learning_rate": {"low": 0.02, "high": 0.3, "log": True},
                "hidden_layers": {"choices": [[4], [8], [16], [32]]},
            },
        },
        tracking={"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "register_model": False},
    )
    study = open_study(cfg, digits)
    # bayes on (val_accuracy, param_count) with the built-in model: EHVI, the count known
    assert isinstance(study.strategy, EHVIStrategy) == (strategy == "bayes")
    for _ in range(3):
        (plan,) = study.plan(limit=1)
        study.record(plan, execute_trial(digits, plan, study.spec))
    front = [(r.number, r.objectives) for r in study.front]
    population = getattr(study.strategy, "population", None)
    nxt = study.strategy.ask(1)
    study.abort("interrupted")
    resumed = resume_study(cfg, digits, study.study_run_id)
    assert [(r.number, r.objectives) for r in resumed.front] == front
    assert getattr(resumed.strategy, "population", None) == population
    assert type(resumed.strategy) is type(study.strategy)
    assert resumed.strategy.ask(1) == nxt
    resumed.abort("interrupted")


def test_an_objective_the_built_in_model_never_logs_is_refused_before_any_run(tmp_path: Path) -> None:
    from hyperflow.components.preflight import PreflightError, preflight

    cfg = small_config(tmp_path, search={"objectives": [{"metric": "val_accuracy"}, {"metric": "val_rmse"}]})
    with pytest.raises(
        PreflightError, match=re.escape("search.objectives.1.metric: 'val_rmse' is not logged")
    ):
        preflight(cfg, check_tracking=False)
    assert not (tmp_path / "mlflow.db").exists()
