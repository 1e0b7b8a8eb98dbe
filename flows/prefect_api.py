"""Which Prefect API a flow run talks to, and the ephemeral server our command starts for it."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

__all__ = ["ephemeral_api_url", "start_ephemeral_server"]


def ephemeral_api_url() -> str | None:
    """The API of the ephemeral Prefect server this flow runs on, or None with a configured server.

    Worker processes that do not know it would each start an ephemeral server of their own (seconds
    of database migrations), and their task runs would be invisible to the flow's.
    """
    from prefect.client.base import ServerType
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value() or FlowRunContext.get() is None:
        return None
    client = get_client(sync_client=True)
    if client.server_type != ServerType.EPHEMERAL:
        return None
    return str(client.api_url).rstrip("/")


def _die_with(parent: int) -> Any:
    """A `preexec_fn`: the child gets SIGKILL when this process dies, even by kill -9 (Linux)."""

    def preexec() -> None:
        if sys.platform.startswith("linux"):
            pr_set_pdeathsig = 1
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return preexec


class _PopenWithParentDeath:
    """`subprocess` as Prefect's server module sees it while it starts the server: Popen arms the
    parent-death signal; everything else is the real module."""

    def __init__(self, parent: int) -> None:
        self._parent = parent

    def Popen(self, *args: Any, **kwargs: Any) -> subprocess.Popen[Any]:
        kwargs.setdefault("preexec_fn", _die_with(self._parent))
        return subprocess.Popen(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)


def start_ephemeral_server() -> str | None:
    """Start Prefect's ephemeral server (no PREFECT_API_URL) before the flow runs; its API URL.

    Two things Prefect's own lazy start does not: the start (which creates and migrates the
    SQLite database in PREFECT_HOME) holds a file lock there, so searches started at the same
    moment on one PREFECT_HOME do not race to migrate it; and the server process dies with this
    one, even after a kill -9 (PR_SET_PDEATHSIG), instead of outliving it. Called from the main
    thread: Linux sends the signal when the thread that started the child ends.
    """
    from filelock import FileLock
    from prefect.server.api import server as server_module
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return None
    server = server_module.SubprocessASGIServer()  # the one Prefect's clients use in this process
    if server.running:
        return server.api_url
    home = Path(PREFECT_HOME.value()).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    real = server_module.subprocess
    # Off the main thread (a caller's worker thread may end before this process) no death signal.
    armed = threading.current_thread() is threading.main_thread()
    with FileLock(str(home / "hyperflow-server-start.lock")):
        if armed:
            server_module.subprocess = _PopenWithParentDeath(os.getpid())  # type: ignore[assignment]
        try:
            server.start()
        finally:
            server_module.subprocess = real
    return server.api_url
