"""Fault injection for tests: kill this process, fail a write, or raise a CUDA error at a named point.

`HYPERFLOW_FAULT=<point>[:<n>]` kills the process with SIGKILL the n-th time (default: the first)
it reaches `fault_point(<point>)`, so a test can put a kill -9 at an exact instant instead of
hoping that a timer lands there;
`<point>:<n>:<SIGNAL>` (e.g. `TERM`, `INT`) sends that signal instead of SIGKILL, and
`<point>:<n>:<SIGNAL>:<k>` sends it k times in a row (a user who presses Ctrl-C twice). A point of `ERROR_POINTS` raises the OSError a full disk would,
from the n-th time on (a full disk stays full). The `cuda-*` points raise instead what CUDA raises
the n-th time (an out-of-memory error, a CUDA RuntimeError), so a machine without a GPU can test
what follows one. Unset, a point costs one dictionary lookup.
"""

from __future__ import annotations

import errno
import os
import signal

__all__ = ["ERROR_POINTS", "FAULT_ENV", "POINTS", "fault_point"]

FAULT_ENV = "HYPERFLOW_FAULT"

# The points the code passes, and where they are.
POINTS = {
    "study-created": "the study run exists; its params and config.yaml are not written yet",
    "trial-created": "a trial run exists (params in its creation tag); its params are not logged yet",
    "between-trials": "a trial was recorded; the next one is not planned yet",
    "model-export": "the best model is saved to a temporary folder; nothing is logged yet",
    "epoch-logged": "a trial's epoch metrics were handed to its logger (counts epochs of all trials)",
    "cuda-oom": "a trial is built and about to train: raises torch.cuda.OutOfMemoryError",
    "cuda-error": "a trial is built and about to train: raises CUDA's RuntimeError (an illegal memory access)",
}

# Points that raise rather than kill, and what they raise (CUDA's own messages).
_RAISES: dict[str, tuple[str, str]] = {
    "cuda-oom": ("oom", "CUDA out of memory. Tried to allocate 2.00 GiB (injected by HYPERFLOW_FAULT)"),
    "cuda-error": (
        "runtime",
        "CUDA error: an illegal memory access was encountered (injected by HYPERFLOW_FAULT)",
    ),
}

# The points where a write fails with OSError(ENOSPC) instead (each process counts its own passes).
ERROR_POINTS = {
    "artifact-write": "a trial's weights are about to be uploaded to its run's artifacts",
}

_seen: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Die here (SIGKILL, as `kill -9` would) if `HYPERFLOW_FAULT` names this point and count;
    for a point of `ERROR_POINTS`, raise OSError(ENOSPC) from that count on; for a `cuda-*` point,
    raise its CUDA error at that count."""
    wanted = os.environ.get(FAULT_ENV)
    if not wanted:
        return
    point, _, rest = wanted.partition(":")
    if point != name:
        return
    count, _, signal_spec = rest.partition(":")
    signame, _, times = signal_spec.partition(":")
    _seen[name] = _seen.get(name, 0) + 1
    nth = int(count) if count else 1
    if name in ERROR_POINTS:
        if _seen[name] >= nth:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f"(fault point {name})")
        return
    if _seen[name] != nth:
        return
    if name in _RAISES:
        import torch

        kind, message = _RAISES[name]
        raise torch.cuda.OutOfMemoryError(message) if kind == "oom" else RuntimeError(message)
    for _ in range(int(times) if times else 1):
        # Each signal's handler runs before the next is sent (Python checks for them between the
        # calls), as it would for a user's second key press.
        os.kill(os.getpid(), getattr(signal, f"SIG{signame}") if signame else signal.SIGKILL)
