"""Search strategies behind one ask/tell interface: grid, random, Bayesian (skopt) and genetic."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from hyperflow.components.search._base import Observation, Strategy
from hyperflow.components.search._bayes import BayesStrategy
from hyperflow.components.search._ehvi import EHVIStrategy, ordered_choices
from hyperflow.components.search._genetic import GeneticStrategy
from hyperflow.components.search._grid import GridStrategy
from hyperflow.components.search._parego import ParEGOStrategy
from hyperflow.components.search._random import RandomStrategy
from hyperflow.components.search._space import Dimension, SearchSpace

if TYPE_CHECKING:
    from hyperflow.components.config import ExperimentConfig, SearchConfig

__all__ = [
    "BayesStrategy",
    "Dimension",
    "EHVIStrategy",
    "GeneticStrategy",
    "GridStrategy",
    "Observation",
    "ParEGOStrategy",
    "RandomStrategy",
    "SearchSpace",
    "Strategy",
    "make_strategy",
    "multi_objective_method",
    "uses_ehvi",
]

# A point's parameter count before it trains, and the largest count of the space (budget.py).
ParamCounts = tuple[Callable[[Mapping[str, Any]], float], float]


def uses_ehvi(cfg: ExperimentConfig) -> bool:
    """Whether `strategy: bayes` searches its objectives by EHVI with a known count (else ParEGO).

    `search.bayes.multi_objective`: `ehvi`, or `auto` with exactly two objectives, the second
    `param_count`, on the GP with logEI; either way only for the built-in model, whose count is a
    formula (validation refuses `ehvi` for a user's model; a data module needs one). The one rule for `make_strategy`,
    `budget.param_counts` and `hyperflow validate`.
    """
    search = cfg.search
    if search.strategy != "bayes" or not search.objectives or cfg.model.module:
        return False
    mo = search.bayes.multi_objective
    if mo == "auto":
        return (
            len(search.objectives) == 2
            and search.objectives[1].metric == "param_count"
            and search.bayes.surrogate == "GP"
            and search.bayes.acquisition == "logEI"
        )
    return mo == "ehvi"


def multi_objective_method(strategy: Strategy) -> str:
    """How `strategy` searches several objectives: ehvi, parego, nsga2, random or grid."""
    return {"genetic": "nsga2"}.get(strategy.name, strategy.name)


def make_strategy(
    cfg: ExperimentConfig, space: SearchSpace | None = None, *, param_counts: ParamCounts | None = None
) -> Strategy:
    """The strategy `cfg.search` describes, seeded by `cfg.seed`.

    `param_counts` (`budget.param_counts`): how to count a point's parameters without training and
    the space's largest count; with it, `bayes` searches by EHVI where `uses_ehvi` says so.

    Initial points may be partial: the dimensions they leave out take the fixed model values
    (`model.*`, or `model.args` for a user's module).

    Raises:
        ValueError: an initial point cannot be completed, or the strategy's settings cannot run
            (e.g. the GBRT surrogate with this scikit-learn), naming the config key.
    """
    space = space if space is not None else SearchSpace.from_config(cfg)
    search = cfg.search
    defaults = {**cfg.model.point_defaults(), **cfg.model.args}
    initial = []
    for i, point in enumerate(search.initial_points):
        try:
            initial.append(space.complete(point, defaults))
        except KeyError as exc:
            raise ValueError(
                f"search.initial_points.{i}: no value for {exc.args[0]!r}; give it in the point "
                "or as a fixed model value"
            ) from exc
    common: dict[str, Any] = {"mode": search.mode, "seed": cfg.seed, "initial_points": initial}
    if search.objectives:  # several objectives: the strategy is told them all (see Strategy.tell)
        strategy = _make(search, space, common, param_counts if uses_ehvi(cfg) else None)
        strategy.objective_modes = tuple(o.mode for o in search.objectives if o.mode is not None)
        return strategy
    return _make(search, space, common, None)


def _make(
    search: SearchConfig, space: SearchSpace, common: dict[str, Any], ehvi_counts: ParamCounts | None
) -> Strategy:
    # Each strategy's own section has the names of its constructor's keyword arguments, except
    # search.bayes.multi_objective, which picks the class.
    bayes = search.bayes.model_dump(exclude={"multi_objective"})
    if search.strategy == "bayes" and search.objectives:
        if ehvi_counts is not None:
            count, largest = ehvi_counts
            return EHVIStrategy(
                space,
                **common,
                **bayes,
                count=count,
                ref_count=largest,
                ordinal=ordered_choices(space, count),
            )
        return ParEGOStrategy(space, **common, bayes=bayes)
    if search.strategy == "grid":
        return GridStrategy(space, **common, **search.grid.model_dump())
    if search.strategy == "random":
        return RandomStrategy(space, **common)
    if search.strategy == "bayes":
        return BayesStrategy(space, **common, **bayes)
    if search.strategy == "genetic":
        return GeneticStrategy(space, **common, **search.genetic.model_dump())
    raise ValueError(f"search.strategy: unknown strategy {search.strategy!r}")
