"""Fault injection for tests: kill this process at a named point when the environment asks for it.

`HYPERFLOW_FAULT=<point>[:<n>]` kills the process with SIGKILL the n-th time (default: the first)
it reaches `fault_point(<point>)`, so a test can put a kill -9 at an exact instant instead of
hoping that a timer lands there. Unset, a point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

__all__ = ["FAULT_ENV", "POINTS", "fault_point"]

FAULT_ENV = "HYPERFLOW_FAULT"

# The points the code passes, and where they are.
POINTS = {
    "study-created": "the study run exists; its params and config.yaml are not written yet",
    "trial-created": "a trial run exists (params in its creation tag); its params are not logged yet",
    "between-trials": "a trial was recorded; the next one is not planned yet",
    "model-export": "the best model is saved to a temporary folder; nothing is logged yet",
}

_seen: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Die here (SIGKILL, as `kill -9` would) if `HYPERFLOW_FAULT` names this point and count."""
    wanted = os.environ.get(FAULT_ENV)
    if not wanted:
        return
    point, _, count = wanted.partition(":")
    if point != name:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] == (int(count) if count else 1):
        os.kill(os.getpid(), signal.SIGKILL)
