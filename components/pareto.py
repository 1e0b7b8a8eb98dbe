"""Pareto dominance over several objectives: the front, non-dominated sorting, crowding, knee, hypervolume.

Every function takes losses (lower is better in each objective); `to_losses` turns values with
their modes into losses. Written here rather than taken from pymoo: the handful of functions a
study needs are short, and pymoo would bring nine packages (autograd, cma, alive-progress, ...).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from hyperflow.components.names import Mode

__all__ = [
    "crowding_distance",
    "dominates",
    "hypervolume",
    "knee_index",
    "non_dominated_sort",
    "pareto_front",
    "to_losses",
]

Point = Sequence[float]


def to_losses(values: Sequence[float], modes: Sequence[Mode]) -> tuple[float, ...]:
    """Objective values as losses: a maximised objective changes sign."""
    return tuple(-float(v) if m == "max" else float(v) for v, m in zip(values, modes, strict=True))


def dominates(a: Point, b: Point) -> bool:
    """True when `a` is no worse than `b` in every objective and better in at least one."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


def pareto_front(points: Sequence[Point]) -> list[int]:
    """Indices of the points no other point dominates, in input order (equal points all stay)."""
    return [i for i, p in enumerate(points) if not any(dominates(q, p) for q in points)]


def non_dominated_sort(points: Sequence[Point]) -> list[list[int]]:
    """Fronts of indices, best first (Deb et al. 2002's fast non-dominated sort)."""
    n = len(points)
    dominated_by: list[list[int]] = [[] for _ in range(n)]
    count = [0] * n
    for i in range(n):
        for j in range(i + 1, n):
            if dominates(points[i], points[j]):
                dominated_by[i].append(j)
                count[j] += 1
            elif dominates(points[j], points[i]):
                dominated_by[j].append(i)
                count[i] += 1
    fronts: list[list[int]] = []
    current = [i for i in range(n) if count[i] == 0]
    while current:
        fronts.append(current)
        nxt = []
        for i in current:
            for j in dominated_by[i]:
                count[j] -= 1
                if count[j] == 0:
                    nxt.append(j)
        current = sorted(nxt)
    return fronts


def crowding_distance(points: Sequence[Point]) -> list[float]:
    """Each point's crowding distance within its front (the ends of every objective: infinite)."""
    n = len(points)
    if n <= 2:
        return [math.inf] * n
    distance = [0.0] * n
    for k in range(len(points[0])):
        order = sorted(range(n), key=lambda i: (points[i][k], i))
        low, high = points[order[0]][k], points[order[-1]][k]
        distance[order[0]] = distance[order[-1]] = math.inf
        if high == low:
            continue
        for a, i, b in zip(order, order[1:], order[2:], strict=False):
            distance[i] += (points[b][k] - points[a][k]) / (high - low)
    return distance


def knee_index(points: Sequence[Point]) -> int:
    """The knee of a front: the point farthest below the line through its two extremes.

    Objectives are scaled to [0, 1] over the front first. With two objectives this is the point of
    greatest distance from the line joining the ends (Das 1999); with more, the point closest to the
    ideal point in the scaled space. Ties go to the point best in the first objective (the primary),
    then to the earlier point: so a front of two members, whose ends both lie on the line, has the
    one best on the primary as its knee (as has a front whose inner points all lie above the line).
    """
    if not points:
        raise ValueError("an empty front has no knee")
    m = len(points[0])
    lows = [min(p[k] for p in points) for k in range(m)]
    highs = [max(p[k] for p in points) for k in range(m)]
    scaled = [
        [(p[k] - lows[k]) / (highs[k] - lows[k]) if highs[k] > lows[k] else 0.0 for k in range(m)]
        for p in points
    ]
    if m == 2:
        # The line from (0, 1) to (1, 0) is x + y = 1: below it, the farther the better.
        score = [1.0 - (x + y) for x, y in scaled]
    else:
        score = [-math.sqrt(sum(v * v for v in s)) for s in scaled]
    # Rounded: points on the line (a straight front) tie, whatever the floating-point noise.
    return max(range(len(points)), key=lambda i: (round(score[i], 12), -points[i][0], -i))


def hypervolume(points: Sequence[Point], reference: Point) -> float:
    """The volume dominated by `points` and bounded by `reference` (losses; larger is better).

    Points not strictly better than the reference in every objective add nothing. Exact: a sweep
    for two objectives, slicing along the last objective for more (fine for the fronts of a study).
    """
    inside = [
        tuple(float(v) for v in p) for p in points if all(v < r for v, r in zip(p, reference, strict=True))
    ]
    if not inside:
        return 0.0
    ref = tuple(float(r) for r in reference)
    if len(ref) == 1:
        return ref[0] - min(p[0] for p in inside)
    if len(ref) == 2:
        volume, best_y = 0.0, ref[1]
        for x, y in sorted(inside):
            if y < best_y:
                volume += (ref[0] - x) * (best_y - y)
                best_y = y
        return volume
    # Slice along the last objective: between consecutive levels, the points at or below a level
    # dominate a (m-1)-dimensional volume.
    levels = [*sorted({p[-1] for p in inside}), ref[-1]]
    volume = 0.0
    for low, high in itertools.pairwise(levels):
        below = [p[:-1] for p in inside if p[-1] <= low]
        volume += hypervolume(below, ref[:-1]) * (high - low)
    return volume
