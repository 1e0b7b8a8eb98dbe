"""A genetic algorithm over the unit-cube encoding of the space, asked and told (NSGA-II: several objectives).

With several objectives (`search.objectives`) it is NSGA-II (Deb et al. 2002): the population is
the best `population_size` of everything told by non-dominated rank, then crowding distance, kept
up to date after every told child (steady-state, Durillo et al. 2009), with a Latin-hypercube first
generation and ordinal mutation of numeric choices (see `GeneticStrategy`). pymoo's NSGA-II was the
candidate library; its ask/tell hands out and takes back whole generations in its own real-valued
encoding, and it would bring nine packages, so the selection is `components.pareto`
(non-dominated sort and crowding) over this GA's asynchronous breeding.

Why not a library: DEAP has no ask/tell (it owns the evaluation loop); pymoo's ask/tell is
generational over whole populations and heavy for one search strategy; pygad is callback-driven;
nevergrad has no classic GA with elitism and tournament selection; Optuna's NSGAIISampler needs an
Optuna study and has no elite count. A GA over `Dimension.to_unit`/`from_unit` is short, and owning
it lets the population be a deterministic function of the told sequence, which resuming needs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Unpack

import numpy as np
from scipy.stats import qmc

from hyperflow.components.pareto import crowding_distance, non_dominated_sort
from hyperflow.components.search._base import Strategy, StrategyOptions, derive_seed
from hyperflow.components.search._random import sample_new, space_exhausted
from hyperflow.components.search._space import Dimension, SearchSpace

__all__ = ["GeneticStrategy", "Member", "latin_hypercube"]

# Attempts at breeding a child that is new before falling back to a random point.
_BREED_TRIES = 32


@dataclass(frozen=True)
class Member:
    """One evaluated individual: its parameters and loss (None when the trial failed)."""

    params: dict[str, Any]
    loss: float | None
    losses: tuple[float, ...] | None = None  # every objective's loss (NSGA-II)

    def rank_key(self) -> tuple[bool, float]:
        """Sort key, best first: failures after every value (they get the lowest fitness)."""
        return (self.loss is None, 0.0 if self.loss is None else self.loss)


class GeneticStrategy(Strategy):
    """Generational GA with elitism, tournament selection, uniform crossover and mutation.

    Generation 0 is the first `population_size` told trials (initial points, then random samples).
    Each later generation is the `elite` best of the previous one, carried over without being
    re-evaluated, plus the next `population_size - elite` told children. A child is bred from the
    current population: two tournament winners (`tournament_size` drawn without replacement),
    uniform crossover with probability `crossover_rate` (else a copy of the first), then each gene
    mutates with probability `mutation_rate` (a gaussian step of `mutation_scale` in unit space
    for real and int genes, another choice for a categorical). Children repeating a told or
    pending point are bred again.

    Asynchronous by construction: children are bred on demand from the current population with a
    generator seeded by their position (trials told plus pending), and told results join the
    generation being filled in the order they are told. So parallel asks never stall waiting for a
    generation to finish, and the population is a deterministic function of the told sequence.
    Failures rank below every value; a pruned trial's last value counts as its fitness.

    With several objectives (`nsga2`) three things differ, each measured on the two-objective
    benchmark (README, "Two objectives"):

    - `survival="steady"`: after generation 0, every told child competes with the population at
      once (the best `population_size` of both by rank, then crowding), instead of waiting for a
      whole generation of children; `"generational"` waits. In a 40-trial study a generation of 12
      is a quarter of the budget, so waiting leaves parents stale for most of it.
    - `initial_design="latin_hypercube"`: generation 0 (after any initial points) is a Latin
      hypercube over the unit-cube encoding (scipy's, seeded by the study seed), so each dimension's
      range, each categorical's choices included, is covered evenly by even a small population;
      `"random"` draws it uniformly.
    - `ordinal_choices=True`: a categorical whose choices are all numbers (`learning_rate:
      {choices: [0.001, 0.01, 0.1]}`) mutates to a neighbouring value, as a real or int gene takes
      a small step, instead of to any other choice. Other categoricals (`hidden_layers`,
      `optimizer`) still jump to any other choice: the order they are written in need not mean
      anything.
    """

    name = "genetic"

    def __init__(
        self,
        space: SearchSpace,
        *,
        population_size: int = 12,
        crossover_rate: float = 0.8,
        mutation_rate: float = 0.2,
        elite: int = 2,
        tournament_size: int = 3,
        mutation_scale: float = 0.1,
        survival: Literal["steady", "generational"] = "steady",
        initial_design: Literal["latin_hypercube", "random"] = "latin_hypercube",
        ordinal_choices: bool = True,
        **options: Unpack[StrategyOptions],
    ) -> None:
        problems = []
        if population_size < 2:
            problems.append(f"population_size must be at least 2, not {population_size}")
        if not 0 <= elite < population_size:
            problems.append(f"elite must be in [0, population_size), not {elite}")
        if tournament_size < 1:
            problems.append(f"tournament_size must be at least 1, not {tournament_size}")
        for rate_name, rate in (
            ("crossover_rate", crossover_rate),
            ("mutation_rate", mutation_rate),
        ):
            if not 0.0 <= rate <= 1.0:
                problems.append(f"{rate_name} must be in [0, 1], not {rate}")
        if survival not in ("steady", "generational"):
            problems.append(f"survival must be steady or generational, not {survival!r}")
        if initial_design not in ("latin_hypercube", "random"):
            problems.append(f"initial_design must be latin_hypercube or random, not {initial_design!r}")
        if problems:
            raise ValueError("search.genetic: " + "; ".join(problems))
        super().__init__(space, **options)
        self.population_size = population_size
        self.crossover_rate = crossover_rate
        self.mutation_rate = mutation_rate
        self.elite = elite
        self.tournament_size = tournament_size
        self.mutation_scale = mutation_scale
        self.survival = survival
        self.initial_design = initial_design
        self.ordinal_choices = ordinal_choices
        self.generation = 0
        self._parents: list[Member] = []  # the current population, best first
        self._filling: list[Member] = []  # told members of the generation being filled

    # ---------------------------------------------------------------- state

    @property
    def population(self) -> list[tuple[dict[str, Any], float]]:
        """The current population, best first, as (params, fitness); failures get a finite fitness
        below every other one. Empty during generation 0."""
        values = [-m.loss for m in self._parents if m.loss is not None]
        floor = min(values) - 1.0 if values else 0.0
        return [(m.params, floor if m.loss is None else -m.loss) for m in self._parents]

    @property
    def exhausted(self) -> bool:
        return space_exhausted(self)

    def _observe(self, params: dict[str, Any], loss: float) -> None:
        self._add(Member(params, loss))

    def _observe_failed(self, params: dict[str, Any]) -> None:
        self._add(Member(params, None))

    def _observe_objectives(self, params: dict[str, Any], losses: tuple[float, ...]) -> None:
        self._add(Member(params, losses[0], losses))

    @property
    def nsga2(self) -> bool:
        """Whether the population is ranked by several objectives (NSGA-II)."""
        return len(self.objective_modes) > 1

    def _add(self, member: Member) -> None:
        self._filling.append(member)
        if self.nsga2 and self.survival == "steady" and self.generation > 0:
            # Steady-state NSGA-II: the child competes with the population now; `generation` still
            # counts population_size children.
            self._parents = _nsga2_survivors([*self._parents, member], self.population_size)
            if len(self._filling) == self.population_size:
                self._filling = []
                self.generation += 1
            return
        # NSGA-II: population_size children a generation, then the best population_size of parents
        # and children survive (elitist by itself); else `elite` parents carry over.
        quota = (
            self.population_size if self.generation == 0 or self.nsga2 else self.population_size - self.elite
        )
        if len(self._filling) < quota:
            return
        if self.nsga2:
            self._parents = _nsga2_survivors(self._parents + self._filling, self.population_size)
        else:
            carried = self._parents[: self.elite] if self.generation > 0 else []
            self._parents = sorted(carried + self._filling, key=Member.rank_key)
        self._filling = []
        self.generation += 1

    # ---------------------------------------------------------------- breeding

    def _suggest(self, n: int) -> list[dict[str, Any]]:
        def propose(position: int, is_free: Callable[[Mapping[str, Any]], bool]) -> dict[str, Any] | None:
            rng = self._rng("child" if self._parents else "sample", position)
            if self._parents:
                point = self._breed(rng, is_free)
            else:
                point = self._design_point(position)
                point = point if point is not None and is_free(point) else None
            # A taken (or over-budget) design point, or no new child: a random new point instead.
            return point if point is not None else sample_new(self.space, rng, is_free)

        return self._collect(n, propose)

    def _design_point(self, position: int) -> dict[str, Any] | None:
        """Generation 0's point at `position` (NSGA-II's Latin hypercube), or None to draw at random."""
        if not (self.nsga2 and self.initial_design == "latin_hypercube") or position >= self.population_size:
            return None
        return latin_hypercube(self.space, self.population_size, derive_seed(self.name, self.seed, "design"))[
            position
        ]

    def _tournament(self, rng: np.random.Generator) -> Member:
        size = min(self.tournament_size, len(self._parents))
        # The population is sorted best first, so the smallest index drawn wins.
        return self._parents[int(rng.choice(len(self._parents), size=size, replace=False).min())]

    def _breed(
        self, rng: np.random.Generator, is_free: Callable[[Mapping[str, Any]], bool]
    ) -> dict[str, Any] | None:
        for _ in range(_BREED_TRIES):
            first = self._tournament(rng)
            child = dict(first.params)
            if rng.random() < self.crossover_rate:
                second = self._tournament(rng)
                for name in self.space.names:
                    if rng.random() < 0.5:
                        child[name] = second.params[name]
            child = self._mutate(child, rng)
            if is_free(child):
                return child
        return None

    def _mutate(self, params: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        out = dict(params)
        for d in self.space:
            if rng.random() >= self.mutation_rate:
                continue
            if d.kind == "categorical" and self.nsga2 and self.ordinal_choices and _numeric(d):
                out[d.name] = _neighbour(d, out[d.name], rng)
            elif d.kind == "categorical":
                if len(d.choices) > 1:
                    current = d.index_of(out[d.name])
                    others = [i for i in range(len(d.choices)) if i != current]
                    out[d.name] = d.choices[others[int(rng.integers(len(others)))]]
            else:
                u = d.to_unit(out[d.name]) + rng.normal(0.0, self.mutation_scale)
                out[d.name] = d.from_unit(_reflect(u))
        return out


def _nsga2_survivors(members: list[Member], size: int) -> list[Member]:
    """The best `size` members, best first: by non-dominated front, then by crowding distance
    (the less crowded first); members without every objective (failed) come last."""
    scored = [m for m in members if m.losses is not None]
    ranked: list[Member] = []
    for front in non_dominated_sort([m.losses for m in scored]):  # type: ignore[misc]
        crowding = crowding_distance([scored[i].losses for i in front])  # type: ignore[misc]
        order = sorted(range(len(front)), key=lambda k: (-crowding[k], front[k]))
        ranked.extend(scored[front[k]] for k in order)
    rest = sorted((m for m in members if m.losses is None), key=Member.rank_key)
    return (ranked + rest)[:size]


def latin_hypercube(space: SearchSpace, n: int, seed: int) -> list[dict[str, Any]]:
    """n points of a Latin hypercube over the space's unit-cube encoding (scipy's, by seed).

    Each dimension's [0, 1] is cut into n equal strata and every stratum holds one point, so a
    categorical's choices (each a 1/k-wide bin of the encoding) appear as evenly as n allows.
    """
    u = qmc.LatinHypercube(d=len(space), seed=seed).random(n)
    return [{d.name: d.from_unit(float(row[j])) for j, d in enumerate(space)} for row in u]


def _numeric(d: Dimension) -> bool:
    """Whether a categorical's choices are all numbers (so ordered), with more than two of them."""
    return len(d.choices) > 2 and all(
        isinstance(c, int | float | np.number) and not isinstance(c, bool) for c in d.choices
    )


def _neighbour(d: Dimension, value: Any, rng: np.random.Generator) -> Any:
    """The next smaller or larger of a numeric categorical's choices (either way at random; at an
    end, the only one there is)."""
    order = sorted(range(len(d.choices)), key=lambda i: float(d.choices[i]))
    at = order.index(d.index_of(value))  # type: ignore[arg-type]
    step = 1 if rng.random() < 0.5 else -1
    if not 0 <= at + step < len(order):
        step = -step
    return d.choices[order[at + step]]


def _reflect(u: float) -> float:
    """Fold a step past an edge of [0, 1] back inside, so edges are not over-sampled by clipping."""
    u = abs(u) % 2.0
    return 2.0 - u if u > 1.0 else u
