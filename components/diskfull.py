"""A full disk, recognised wherever it surfaces (an OSError, SQLite through MLflow), said in one line."""

from __future__ import annotations

import errno

__all__ = ["DiskFull", "disk_full_cause"]

_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
# How SQLite (through SQLAlchemy and MLflow) and a server's error reply say it.
_TEXTS = ("No space left on device", "database or disk is full", "Disk quota exceeded")


class DiskFull(OSError):
    """No space left where the study writes: the study ends (FAILED), to be resumed once there is room.

    Nothing a further trial would write can be kept, so the search stops at the first one.
    """

    def __init__(self, message: str) -> None:
        super().__init__(errno.ENOSPC, message)

    def __reduce__(self) -> tuple[type[DiskFull], tuple[str]]:
        return (DiskFull, (str(self.strerror),))

    def __str__(self) -> str:
        return str(self.strerror)


def disk_full_cause(exc: BaseException | None) -> BaseException | None:
    """The full-disk error behind `exc` (itself, or in its chain of causes), else None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _ERRNOS:
            return exc
        if any(text in str(exc) for text in _TEXTS):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None
