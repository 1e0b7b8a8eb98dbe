"""The files of a SQLite database in WAL mode beside the database itself (standard library only).

MLflow's store (`mlflow.db`) and Prefect's database run in WAL mode: recent writes live in
`<db>-wal` (indexed by `<db>-shm`) until SQLite folds them back into the file, which it does when
the last connection closes. Two things follow:

- A process that leaves without closing its connections (the command's `os._exit`, Prefect's
  server stopped by a signal) leaves the latest writes in the log: `fold_log` at exit makes the
  file whole (our MLflow stores, the Prefect server the command starts).
- A database deleted without its log (`rm mlflow.db`) leaves the log behind, and SQLite replays
  it into the next file at that path that is already in WAL mode, as a copy of our store
  template is: the deleted rows come back, or the new file is malformed. `remove_orphan_logs`
  before the copy lands removes them: with no database there they belong to none. (A new, empty
  file, as Prefect makes, is not replayed into.)
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

__all__ = ["fold_log", "remove_orphan_logs"]

_SUFFIXES = ("-wal", "-shm", "-journal")


def remove_orphan_logs(database: Path) -> None:
    """Remove the log files of a database that does not exist (call under the creation's lock)."""
    if database.exists():
        return
    for suffix in _SUFFIXES:
        Path(f"{database}{suffix}").unlink(missing_ok=True)


def fold_log(database: Path, timeout: float = 2.0) -> None:
    """Fold the write-ahead log back into the file and empty it (best effort: a database another
    process is reading is folded as far as it can be within `timeout`)."""
    if not database.exists():
        return
    with contextlib.suppress(sqlite3.Error):
        db = sqlite3.connect(database, timeout=timeout)
        try:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            db.close()
