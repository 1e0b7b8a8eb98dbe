"""Random search, and the position-seeded sampling of new points the other strategies share."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from hyperflow.components.search._base import Strategy
from hyperflow.components.search._space import SearchSpace

__all__ = ["RandomStrategy", "finite_size", "sample_new", "space_exhausted"]

# Redraws before a finite space is searched exhaustively for a point not yet tried; in a continuous
# space a repeat is practically impossible, so this only matters for small discrete spaces.
_REDRAWS = 64
# Largest finite space that is enumerated to find what is left once redraws keep repeating.
_ENUMERATE_LIMIT = 20_000


def finite_size(space: SearchSpace) -> int | None:
    """How many distinct points the space has; None where a real dimension makes it continuous."""
    size = 1
    for d in space:
        if d.kind == "categorical":
            size *= len(d.choices)
        elif d.kind == "int":
            size *= int(d.high) - int(d.low) + 1
        elif d.high > d.low:
            return None
    return size


def _all_points(space: SearchSpace) -> Iterator[dict[str, Any]]:
    axes = []
    for d in space:
        if d.kind == "categorical":
            axes.append(list(d.choices))
        elif d.kind == "int":
            axes.append(list(range(int(d.low), int(d.high) + 1)))
        else:
            axes.append([float(d.low)])
    for values in itertools.product(*axes):
        yield dict(zip(space.names, values, strict=True))


def _remaining(
    space: SearchSpace, is_free: Callable[[Mapping[str, Any]], bool]
) -> list[dict[str, Any]] | None:
    """Every point of a small finite space that is still free, or None where that is too costly."""
    size = finite_size(space)
    if size is None or size > _ENUMERATE_LIMIT:
        return None
    return [p for p in _all_points(space) if is_free(p)]


def sample_new(
    space: SearchSpace,
    rng: np.random.Generator,
    is_free: Callable[[Mapping[str, Any]], bool],
) -> dict[str, Any] | None:
    """A random point for which `is_free` holds; None when a small finite space has none left.

    Redraws a bounded number of times, then picks uniformly among what is left of a small finite
    space, so that such a space is covered fully instead of looping on repeats.
    """
    for _ in range(_REDRAWS):
        point = space.sample(rng)
        if is_free(point):
            return point
    left = _remaining(space, is_free)
    if not left:
        return None
    return left[int(rng.integers(len(left)))]


def space_exhausted(strategy: Strategy) -> bool:
    """True when a finite space has no point left that is neither told nor pending."""
    size = finite_size(strategy.space)
    if size is None:
        return False
    # Cheap test first: fewer keys than points means something is certainly left.
    # (Not with a parameter budget: a point not yet checked may be over it.)
    if strategy.feasible is None and len(strategy._seen | strategy._pending.keys()) < size:
        return False
    return (
        not any(strategy._is_new(p) for p in strategy._initial)
        and _remaining(strategy.space, strategy._is_new) == []
    )


class RandomStrategy(Strategy):
    """Uniform (log-uniform where `log`) sampling of the space.

    The suggestion at position p (trials told plus pending when it is asked) is drawn from a
    generator seeded by (seed, p), so a strategy rebuilt from a recorded history continues the
    sequence instead of starting again at trial 0. Points already told or pending are redrawn; a
    small finite space is covered completely and then `exhausted`.
    """

    name = "random"

    @property
    def exhausted(self) -> bool:
        return space_exhausted(self)

    def _suggest(self, n: int) -> list[dict[str, Any]]:
        return self._collect(
            n, lambda position, is_free: sample_new(self.space, self._rng("sample", position), is_free)
        )
