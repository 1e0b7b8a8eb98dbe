"""Search strategies behind one ask/tell interface: grid, random, Bayesian (skopt) and genetic."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hyperflow.components.search._base import Observation, Strategy
from hyperflow.components.search._bayes import BayesStrategy
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
    "GeneticStrategy",
    "GridStrategy",
    "Observation",
    "ParEGOStrategy",
    "RandomStrategy",
    "SearchSpace",
    "Strategy",
    "make_strategy",
]


def make_strategy(cfg: ExperimentConfig, space: SearchSpace | None = None) -> Strategy:
    """The strategy `cfg.search` describes, seeded by `cfg.seed`.

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
        strategy = _make(search, space, common)
        strategy.objective_modes = tuple(o.mode for o in search.objectives if o.mode is not None)
        return strategy
    return _make(search, space, common)


def _make(search: SearchConfig, space: SearchSpace, common: dict[str, Any]) -> Strategy:
    # Each strategy's own section has the names of its constructor's keyword arguments.
    if search.strategy == "bayes" and search.objectives:
        return ParEGOStrategy(space, **common, bayes=search.bayes.model_dump())
    if search.strategy == "grid":
        return GridStrategy(space, **common, **search.grid.model_dump())
    if search.strategy == "random":
        return RandomStrategy(space, **common)
    if search.strategy == "bayes":
        return BayesStrategy(space, **common, **search.bayes.model_dump())
    if search.strategy == "genetic":
        return GeneticStrategy(space, **common, **search.genetic.model_dump())
    raise ValueError(f"search.strategy: unknown strategy {search.strategy!r}")
