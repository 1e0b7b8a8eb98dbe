"""Which Prefect API a flow run talks to: the ephemeral server our command starts for it (in the
background at the command's start, or before the flow runs), and the address trial workers get."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["CommandServer", "command_server", "ephemeral_api_url", "start_ephemeral_server"]


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


# The server's process, before it runs uvicorn: on Linux it asks for SIGKILL when the thread that
# started it ends, so that even a SIGKILL of the command leaves no server behind (that thread lives
# as long as the command); if the command is already gone, it does not start at all. Set in the
# child itself (not with `preexec_fn`, which can deadlock a process that has threads).
_LAUNCHER = """
import os, sys
if sys.platform.startswith("linux"):
    import ctypes, signal
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != int(sys.argv[1]):
        sys.exit(0)
import runpy
sys.argv = ["uvicorn", *sys.argv[2:]]
runpy.run_module("uvicorn", run_name="__main__", alter_sys=True)
"""


class CommandServer:
    """Prefect's API for one command: the server Prefect's ephemeral mode would start, started at
    the beginning of the command in the background instead of at the first flow run, so that its
    start (~6-10 s here: a second interpreter importing Prefect's server) overlaps the command's
    own imports and data loading rather than following them.

    It is Prefect's own ephemeral server (`uvicorn prefect.server.api.server:create_app` with the
    environment Prefect's `SubprocessASGIServer` gives it, on the same database), on a loopback
    socket this process binds and hands over (no port race). Nothing outlives the command: `stop`
    ends it (also at exit), and on Linux it dies with the command even on SIGKILL. With
    PREFECT_API_URL configured (environment or Prefect profile), or ephemeral mode disabled, it
    starts nothing and `url()` is None.

    Prefect's `SubprocessASGIServer` is not used because it imports Prefect's whole server in this
    process (1.7 s) and starts it only when the first flow run asks for a client.
    """

    def __init__(self, startup_timeout: float | None = None) -> None:
        self.startup_timeout = startup_timeout
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._url: str | None = None
        self._error: str | None = None
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> CommandServer:
        """Start the server in the background; returns at once."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="hyperflow-prefect-server", daemon=True)
            self._thread.start()
            atexit.register(self.stop)
        return self

    def url(self) -> str | None:
        """The API URL once the server answers (None: a configured server is used instead).

        Raises:
            RuntimeError: the server did not start (its exit code and the last lines it printed).
        """
        if self._thread is None:
            return None
        self._ready.wait()
        if self._error is not None:
            raise RuntimeError(self._error)
        return self._url

    def stop(self) -> None:
        """End the server and wait for it (idempotent)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=15)

    # ------------------------------------------------------------------ the server's thread

    def _serve(self) -> None:
        try:
            self._url = self._launch()
        except Exception as exc:
            self._error = f"Prefect's server did not start: {exc}"
        finally:
            self._ready.set()
        self._stop.wait()
        self._terminate()

    def _launch(self) -> str | None:
        from prefect.settings import (
            PREFECT_API_URL,
            PREFECT_SERVER_EPHEMERAL_ENABLED,
        )

        if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
            return None
        from filelock import FileLock
        from prefect.settings import PREFECT_HOME

        home = Path(PREFECT_HOME.value()).expanduser()
        home.mkdir(parents=True, exist_ok=True)
        # As `start_ephemeral_server`: one start (database creation, migrations) at a time per home.
        with FileLock(str(home / "hyperflow-server-start.lock")):
            return self._launch_locked()

    def _launch_locked(self) -> str | None:
        from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

        timeout = self.startup_timeout or float(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        # What Prefect's SubprocessASGIServer sets: no UI, ephemeral services, the final app.
        env = {
            **os.environ,
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
        }
        env.pop("PREFECT_API_URL", None)
        cmd = [sys.executable, "-c", _LAUNCHER, str(os.getpid())]
        cmd += ["--factory", "prefect.server.api.server:create_app"]
        cmd += ["--fd", str(sock.fileno()), "--log-level", "error", "--lifespan", "on"]
        try:
            self.process = subprocess.Popen(
                cmd,
                env=env,
                pass_fds=(sock.fileno(),),
                stdin=subprocess.DEVNULL,
                # Its own session: a Ctrl-C at the terminal is this command's to handle (it still
                # reports to the server while it ends its runs); the server stops when told.
                start_new_session=True,
            )
        finally:
            sock.close()
        url = f"http://127.0.0.1:{port}/api"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._stop.is_set():
                return None
            code = self.process.poll()
            if code is not None:
                raise RuntimeError(f"it exited with code {code}")
            with (
                contextlib.suppress(urllib.error.URLError, OSError),
                urllib.request.urlopen(f"{url}/health", timeout=2) as response,  # a loopback server
            ):
                if response.status == 200:
                    return url
            self._stop.wait(0.05)
        raise RuntimeError(
            f"it did not answer within {timeout:g} s (PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS)"
        )

    def _terminate(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def command_server(server: CommandServer | None) -> Iterator[str | None]:
    """Point this process (and the workers it starts) at `server` while the block runs; stop it after."""
    if server is None:
        yield None
        return
    try:
        url = server.url()
        if url is None:
            yield None
            return
        from prefect.settings import PREFECT_API_URL, temporary_settings

        previous = os.environ.get("PREFECT_API_URL")
        os.environ["PREFECT_API_URL"] = url  # worker processes and Dask workers inherit it
        try:
            with temporary_settings(updates={PREFECT_API_URL: url}):
                yield url
        finally:
            if previous is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = previous
    finally:
        server.stop()
