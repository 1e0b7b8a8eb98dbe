"""`strategy: bayes` with several objectives: ParEGO's scalarisation (Knowles 2006) over the Bayes strategy.

Each suggestion has its own weight vector, taken in turn from a simplex lattice (a shuffled cycle
by seed). Every told trial's objectives, scaled to [0, 1] by the ranges told so far, are folded by
the augmented Chebyshev function with that one weight vector, a Bayes strategy is told those
values, and it proposes the point. So the surrogate always models one function (the scalarisation
the suggestion is for), and over a study the weights cover every direction of the front. The
strategy stays a deterministic function of the told sequence (resume rebuilds it by telling it
again). It drives the Bayes strategy through ask/tell, whatever surrogate and acquisition that uses.
"""

from __future__ import annotations

import itertools
from typing import Any, Unpack

import numpy as np

from hyperflow.components.names import FAILED, PRUNED
from hyperflow.components.search._base import Strategy, StrategyOptions, derive_seed
from hyperflow.components.search._bayes import BayesStrategy
from hyperflow.components.search._random import space_exhausted
from hyperflow.components.search._space import SearchSpace, params_key

__all__ = ["ParEGOStrategy", "augmented_chebyshev", "simplex_lattice"]

# ParEGO's augmentation: a small weighted sum keeps weakly dominated points from tying.
RHO = 0.05
# Knowles' lattice resolution: s = 10 for two objectives (11 weight vectors), 4 for three (15).
_LATTICE_STEPS = {2: 10, 3: 4}


def augmented_chebyshev(scaled: np.ndarray, weights: np.ndarray, rho: float = RHO) -> np.ndarray:
    """max_k(w_k f_k) + rho * sum_k(w_k f_k) over scaled losses `f` (lower is better), row by row."""
    weighted = np.atleast_2d(scaled) * weights
    return np.max(weighted, axis=1) + rho * np.sum(weighted, axis=1)


def simplex_lattice(m: int, steps: int) -> list[np.ndarray]:
    """Every weight vector of m non-negative multiples of 1/steps that sum to 1."""
    return [
        np.array(k, dtype=float) / steps
        for k in itertools.product(range(steps + 1), repeat=m)
        if sum(k) == steps
    ]


class ParEGOStrategy(Strategy):
    """Several objectives searched by a Bayes strategy told augmented-Chebyshev scalarisations.

    `bayes` holds the `search.bayes` settings of the Bayes strategy built for each suggestion. The
    objectives' modes are `objective_modes` (set by `make_strategy`). A trial with an objective
    missing is told to the Bayes strategy as a failure (it substitutes the worst value), never as
    a made-up value; a pruned trial as pruned.

    Why one weight vector a suggestion, not one a trial: told with each trial's value scalarised by
    that trial's own weights, the surrogate models a mixture of different functions. On the
    two-objective benchmark (README) that scored below random search's median hypervolume; one
    function per suggestion, Knowles' ParEGO, scored above it.
    """

    name = "parego"

    def __init__(
        self, space: SearchSpace, *, bayes: dict[str, Any], **options: Unpack[StrategyOptions]
    ) -> None:
        super().__init__(space, **options)
        self.bayes = dict(bayes)
        # The objectives of the trials told with all of them, as losses, in the told order.
        self._losses: list[np.ndarray] = []

    # ---------------------------------------------------------------- the scalarisation

    def weights(self, position: int) -> np.ndarray:
        """The weight vector of the suggestion at `position` (trials told plus pending when asked).

        The lattice of `simplex_lattice(m, s)` (s = 10 for two objectives, 4 for three, 2 beyond),
        visited once per cycle in an order shuffled by (seed, cycle): every direction is used
        within each cycle of suggestions, in no fixed pattern.
        """
        m = len(self.objective_modes)
        lattice = simplex_lattice(m, _LATTICE_STEPS.get(m, 2))
        cycle, place = divmod(position, len(lattice))
        order = np.random.default_rng(derive_seed(self.name, self.seed, "weights", cycle)).permutation(
            len(lattice)
        )
        return lattice[int(order[place])]

    def scaled_losses(self) -> np.ndarray:
        """The told objectives as losses scaled to [0, 1] by the ranges told so far (n, m)."""
        told = np.asarray(self._losses, dtype=float).reshape(len(self._losses), len(self.objective_modes))
        if not len(told):
            return told
        low, high = told.min(axis=0), told.max(axis=0)
        return (told - low) / np.where(high > low, high - low, 1.0)

    def surrogate_strategy(self, position: int, pending: list[dict[str, Any]]) -> BayesStrategy:
        """A Bayes strategy told the history scalarised with `weights(position)`, `pending` pending."""
        inner = BayesStrategy(self.space, mode="min", seed=self.seed, **self.bayes)
        inner.feasible = lambda point: self._is_feasible(point, params_key(point))
        values = iter(augmented_chebyshev(self.scaled_losses(), self.weights(position)))
        for obs in self.history:
            if obs.state == FAILED or obs.objectives is None:
                inner.tell_failed(obs.params)
            else:
                inner.tell(obs.params, float(next(values)), pruned=obs.state == PRUNED)
        # Believing pending points needs the points in flight; only asking would otherwise mark them.
        inner._pending.update((params_key(p), p) for p in pending)
        return inner

    # ---------------------------------------------------------------- Strategy hooks

    def _suggest(self, n: int) -> list[dict[str, Any]]:
        start = self.n_told + len(self._pending)
        out: list[dict[str, Any]] = []
        for i in range(n):
            got = self.surrogate_strategy(start + i, [*self._pending.values(), *out]).ask(1)
            if not got:  # a finite space with nothing new left
                break
            out.append(got[0])
        return out

    def _observe_objectives(self, params: dict[str, Any], losses: tuple[float, ...]) -> None:
        self._losses.append(np.asarray(losses, dtype=float))

    @property
    def exhausted(self) -> bool:
        return space_exhausted(self)
