"""Driving a search strategy by hand in tests: ask and tell one at a time; rebuild one from its history."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from hyperflow.components.search import Strategy


def ask_and_tell(
    strategy: Strategy, n: int, fn: Callable[[Mapping[str, Any]], float]
) -> list[dict[str, Any]]:
    """Ask and tell one at a time, n times; the points asked, in order."""
    asked = []
    for _ in range(n):
        (point,) = strategy.ask()
        asked.append(point)
        strategy.tell(point, fn(point))
    return asked


def replay(factory: Callable[..., Strategy], original: Strategy, **kw: Any) -> Strategy:
    """A fresh strategy (`factory(original.space, **kw)`) told the original's recorded history, in order."""
    fresh = factory(original.space, **kw)
    for obs in original.history:
        if obs.state == "failed":
            fresh.tell_failed(obs.params)
        else:
            assert obs.value is not None
            fresh.tell(
                obs.params,
                obs.value,
                pruned=obs.state == "pruned",
                predicted=obs.predicted,
                epochs=obs.epochs,
                max_epochs=obs.max_epochs,
            )
    return fresh
