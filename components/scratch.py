"""Scratch folders named by the process that made them, and the sweep of those a killed process left."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

__all__ = ["scratch_dir", "scratch_path", "sweep_scratch"]

# hyperflow-<kind>-<pid>-<random>: the pid says whether the folder's owner still lives.
_NAME = re.compile(r"^hyperflow-[a-z-]+?-(\d+)-[^/]+$")


def scratch_dir(kind: str) -> tempfile.TemporaryDirectory[str]:
    """A temporary folder (a context manager, like `tempfile.TemporaryDirectory`) that
    `sweep_scratch` can remove should this process be killed before it cleans up."""
    return tempfile.TemporaryDirectory(prefix=f"hyperflow-{kind}-{os.getpid()}-")


def scratch_path(kind: str) -> Path:
    """A new scratch folder that its maker hands on (e.g. to a writer thread that removes it once
    uploaded); `sweep_scratch` removes it should this process be killed first."""
    return Path(tempfile.mkdtemp(prefix=f"hyperflow-{kind}-{os.getpid()}-"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def sweep_scratch(root: str | Path | None = None) -> list[Path]:
    """Remove the scratch folders under `root` (the temp folder) whose process is gone; returns them.

    A kill -9 during a model export left a `hyperflow-model-*` folder of the model's size behind
    each time. A folder of a live process (another search, this one) is kept.
    """
    base = Path(root) if root is not None else Path(tempfile.gettempdir())
    removed: list[Path] = []
    try:
        entries = list(base.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _NAME.match(entry.name)
        if match is None or not entry.is_dir() or entry.is_symlink():
            continue
        if int(match.group(1)) == os.getpid() or _alive(int(match.group(1))):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed
