"""`strategy: bayes` with several objectives: ParEGO's scalarisation (Knowles 2006) over the Bayes strategy.

Each told trial is scalarised once, with its own weight vector drawn from (seed, its place in the
told sequence), by the augmented Chebyshev function over losses scaled to [0, 1] by the ranges told
so far; the wrapped `BayesStrategy` is told that one value. So the surrogate sees every direction of
the front over the study, and the strategy stays a deterministic function of the told sequence
(resume rebuilds it by telling it again). It wraps the Bayes strategy through its public ask/tell,
whatever surrogate and acquisition that uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Unpack

import numpy as np

from hyperflow.components.search._base import Strategy, StrategyOptions, derive_seed
from hyperflow.components.search._bayes import BayesStrategy
from hyperflow.components.search._space import SearchSpace, params_key

__all__ = ["ParEGOStrategy", "augmented_chebyshev"]

# ParEGO's augmentation: a small weighted sum keeps weakly dominated points from tying.
RHO = 0.05


def augmented_chebyshev(scaled: np.ndarray, weights: np.ndarray, rho: float = RHO) -> float:
    """max_k(w_k f_k) + rho * sum_k(w_k f_k) over scaled losses `f` (lower is better)."""
    weighted = weights * scaled
    return float(np.max(weighted) + rho * np.sum(weighted))


class ParEGOStrategy(Strategy):
    """Several objectives searched by a Bayes strategy told augmented-Chebyshev scalarisations.

    `bayes` holds the `search.bayes` settings of the wrapped strategy. The objectives' modes are
    `objective_modes` (set by `make_strategy`); a trial with an objective missing is told to the
    wrapped strategy as a failure (it substitutes the worst value), never as a made-up value.
    """

    name = "parego"

    def __init__(
        self, space: SearchSpace, *, bayes: dict[str, Any], **options: Unpack[StrategyOptions]
    ) -> None:
        super().__init__(space, **options)
        # The wrapped strategy minimises the scalarised loss; the initial points are served here.
        self.inner = BayesStrategy(space, mode="min", seed=self.seed, **bayes)
        self.inner.feasible = lambda point: self._is_feasible(point, params_key(point))
        self._losses: list[np.ndarray] = []

    def weights(self, position: int) -> np.ndarray:
        """The weight vector of the `position`-th told trial: uniform on the simplex (Dirichlet(1))."""
        rng = np.random.default_rng(derive_seed(self.name, self.seed, "weights", position))
        return rng.dirichlet(np.ones(len(self.objective_modes)))

    def scalarise(self, losses: tuple[float, ...], position: int) -> float:
        """The augmented Chebyshev value of `losses`, scaled by the ranges told so far (it included)."""
        told = np.array([*self._losses, np.asarray(losses)])
        low, high = told.min(axis=0), told.max(axis=0)
        span = np.where(high > low, high - low, 1.0)
        return augmented_chebyshev((np.asarray(losses) - low) / span, self.weights(position))

    def _suggest(self, n: int) -> list[dict[str, Any]]:
        out = []
        for point in self.inner.ask(n):
            if self._is_new(point):
                out.append(point)
            else:  # e.g. an initial point served here: the wrapped strategy must not keep it pending
                self.inner._forget_pending(point)
        return out

    def _observe_objectives(self, params: dict[str, Any], losses: tuple[float, ...]) -> None:
        position = len(self._losses)
        value = self.scalarise(losses, position)
        self._losses.append(np.asarray(losses, dtype=float))
        pruned = self.history[-1].state == "pruned" if self.history else False
        self.inner.tell(params, value, pruned=pruned)

    def _observe(self, params: dict[str, Any], loss: float) -> None:
        self.inner.tell_failed(params)  # an objective is missing: no value is made up

    def _observe_failed(self, params: dict[str, Any]) -> None:
        self.inner.tell_failed(params)

    def release(self, params: Mapping[str, Any]) -> None:
        super().release(params)
        self.inner._forget_pending(self.space.coerce(params))
