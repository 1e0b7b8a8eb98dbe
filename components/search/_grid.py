"""Grid search: the cartesian product of per-dimension grids, each point exactly once."""

from __future__ import annotations

import math
from typing import Any, Unpack

from hyperflow.components.search._base import Strategy, StrategyOptions
from hyperflow.components.search._space import SearchSpace

__all__ = ["GridStrategy"]


class GridStrategy(Strategy):
    """Every point of the grid once, in `itertools.product` order (the last dimension fastest).

    Real and wide int dimensions get `points_per_dimension` values (log-spaced where `log`),
    narrower int dimensions all their values, categoricals all their choices. Points already told
    or pending are skipped, so initial points that lie on the grid are not repeated and a strategy
    rebuilt from a recorded history resumes at the first point not yet tried. Points are computed
    from their index, never materialised, so a large grid costs nothing until it is asked.
    """

    name = "grid"

    def __init__(
        self, space: SearchSpace, *, points_per_dimension: int = 3, **options: Unpack[StrategyOptions]
    ) -> None:
        if points_per_dimension < 1:
            raise ValueError(
                f"search.grid.points_per_dimension must be at least 1, not {points_per_dimension}"
            )
        super().__init__(space, **options)
        self.points_per_dimension = points_per_dimension
        self.axes: list[list[Any]] = [d.grid(points_per_dimension) for d in space]
        self.size = math.prod(len(axis) for axis in self.axes)
        # Every grid index below the cursor is told or pending; such a point only becomes askable
        # again through `release`, which hands it back as an initial point.
        self._cursor = 0

    def point(self, index: int) -> dict[str, Any]:
        """The grid point at `index` in product order."""
        values: list[Any] = []
        for axis in reversed(self.axes):
            index, digit = divmod(index, len(axis))
            values.append(axis[digit])
        return dict(zip(self.space.names, reversed(values), strict=True))

    @property
    def exhausted(self) -> bool:
        """True once every grid point (and every initial point) has been asked."""
        self._skip_taken()
        return self._cursor >= self.size and not any(self._is_new(p) for p in self._initial)

    def _skip_taken(self) -> None:
        while self._cursor < self.size and not self._is_new(self.point(self._cursor)):
            self._cursor += 1

    def _suggest(self, n: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while len(out) < n:
            self._skip_taken()
            if self._cursor >= self.size:
                break
            out.append(self.point(self._cursor))
            self._cursor += 1
        return out
