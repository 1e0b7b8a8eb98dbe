"""Search strategies behind one ask/tell interface: grid, random, Bayesian (skopt) and genetic."""

from __future__ import annotations

from typing import TYPE_CHECKING

from components.search._base import Observation, Strategy
from components.search._bayes import BayesStrategy
from components.search._genetic import GeneticStrategy
from components.search._grid import GridStrategy
from components.search._random import RandomStrategy
from components.search._space import Dimension, SearchSpace

if TYPE_CHECKING:
    from components.config import ExperimentConfig

__all__ = [
    "BayesStrategy",
    "Dimension",
    "GeneticStrategy",
    "GridStrategy",
    "Observation",
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
    defaults = {**cfg.model.model_dump(), **cfg.model.args}
    initial = []
    for i, point in enumerate(search.initial_points):
        try:
            initial.append(space.complete(point, defaults))
        except KeyError as exc:
            raise ValueError(
                f"search.initial_points.{i}: no value for {exc.args[0]!r}; give it in the point "
                "or as a fixed model value"
            ) from exc
    mode, seed = search.direction, cfg.seed
    if search.strategy == "grid":
        return GridStrategy(
            space,
            mode=mode,
            seed=seed,
            initial_points=initial,
            points_per_dimension=search.grid.points_per_dimension,
        )
    if search.strategy == "random":
        return RandomStrategy(space, mode=mode, seed=seed, initial_points=initial)
    if search.strategy == "bayes":
        bayes = search.bayes
        return BayesStrategy(
            space,
            mode=mode,
            seed=seed,
            initial_points=initial,
            surrogate=bayes.surrogate,
            acquisition=bayes.acquisition,
            n_initial_points=bayes.n_initial_points,
            acq_optimizer=bayes.acq_optimizer,
        )
    if search.strategy == "genetic":
        genetic = search.genetic
        return GeneticStrategy(
            space,
            mode=mode,
            seed=seed,
            initial_points=initial,
            population_size=genetic.population_size,
            crossover_rate=genetic.crossover_rate,
            mutation_rate=genetic.mutation_rate,
            elite=genetic.elite,
            tournament_size=genetic.tournament_size,
        )
    raise ValueError(f"search.strategy: unknown strategy {search.strategy!r}")
