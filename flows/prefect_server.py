"""The child process that serves Prefect's ephemeral API for one hyperflow command (`CommandServer`).

Run as `python -m hyperflow.flows.prefect_server PARENT_PID SOCKET_FD REPORT_FD`. It decides, with
the settings the command itself would resolve (environment, profile, prefect.toml), whether an API
is configured; it writes `configured` or `serving` on REPORT_FD, and when serving runs Prefect's own
server app (`prefect.server.api.server:create_app`, with the environment Prefect's
`SubprocessASGIServer` gives it) on the listening socket it was handed. The decision is made here
rather than in the command so that the command need not import Prefect before the child starts.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

__all__ = ["main"]


def main(argv: list[str]) -> int:
    from hyperflow.flows.prefect_api import _die_with  # standard library only: imports no Prefect

    parent, sock_fd, report_fd = (int(a) for a in argv[1:4])
    _die_with(parent, gone_code=0)()  # SIGKILL when the command dies, even by kill -9
    import hyperflow  # noqa: F401 - the runtime defaults (no telemetry), as in the command

    report = os.fdopen(report_fd, "w")
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        report.write("configured\n")
        report.close()
        return 0
    report.write("serving\n")
    report.close()
    # What Prefect's SubprocessASGIServer sets for its server: no UI, ephemeral services, the final app.
    os.environ.update(PREFECT_UI_ENABLED="0", PREFECT__SERVER_EPHEMERAL="1", PREFECT__SERVER_FINAL="1")
    from prefect.context import refresh_global_settings_context

    refresh_global_settings_context()

    import uvicorn
    from filelock import FileLock

    from hyperflow.components.sqlitefiles import fold_log

    home = PREFECT_HOME.value().expanduser()
    home.mkdir(parents=True, exist_ok=True)
    # One start (database creation, migrations) at a time per Prefect home: searches started at the
    # same moment do not race to migrate it. Released once the app has started, or when we die.
    lock = FileLock(str(home / "hyperflow-server-start.lock"), thread_local=False)
    lock.acquire()
    database = _sqlite_database()
    config = uvicorn.Config(
        "prefect.server.api.server:create_app",
        factory=True,
        fd=sock_fd,
        log_level="error",
        lifespan="on",
    )
    server = uvicorn.Server(config)

    def release_when_started() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.02)
        lock.release()

    threading.Thread(target=release_when_started, name="start-lock", daemon=True).start()
    # uvicorn handles SIGTERM (the command's `stop`) with a graceful shutdown, then raises it again
    # with the handler it found: this one lets the log be folded back after that, and a SIGTERM
    # that lands before uvicorn takes the signal over still stops the server.
    signal.signal(signal.SIGTERM, lambda *_: setattr(server, "should_exit", True))
    server.run()
    if database is not None:
        fold_log(database)  # so that prefect.db alone is whole
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # the command waits for this process: no interpreter teardown of Prefect's server


def _sqlite_database() -> Path | None:
    """The file of Prefect's database when it is SQLite (its default, in PREFECT_HOME)."""
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL
    from sqlalchemy.engine import make_url

    url = make_url(PREFECT_API_DATABASE_CONNECTION_URL.value())
    if not url.drivername.startswith("sqlite") or not url.database or url.database == ":memory:":
        return None
    return Path(url.database).expanduser()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
