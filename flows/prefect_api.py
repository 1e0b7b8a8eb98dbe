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

__all__ = [
    "CommandServer",
    "ServerStartError",
    "command_server",
    "configured_api_problem",
    "ephemeral_api_url",
    "flow_run_settings",
    "start_ephemeral_server",
    "wait_for_command_server",
]


def configured_api_problem(timeout: float = 5.0) -> str | None:
    """Why the Prefect API the settings name (PREFECT_API_URL, the profile) cannot be reached;
    None when it answers (any HTTP answer: Prefect Cloud's may need credentials) or none is named."""
    from prefect.settings import PREFECT_API_URL

    from hyperflow.components.tracking import health_answer, redact_uri

    url = PREFECT_API_URL.value()
    answer = health_answer(url, timeout) if url else 200
    if isinstance(answer, int):
        return None  # it answered
    return (
        f"cannot reach the Prefect server at {redact_uri(url)} (PREFECT_API_URL): {answer}; start "
        "it, or unset PREFECT_API_URL to run on a temporary server of the command's own"
    )


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


def _die_with(parent: int, gone_code: int = 1, sig: int = signal.SIGKILL) -> Any:
    """A `preexec_fn` (or a child's first call): the child gets `sig` (SIGKILL) when `parent` dies,
    even by kill -9 (Linux); it leaves with `gone_code` if the parent is already gone."""

    def preexec() -> None:
        if sys.platform.startswith("linux"):
            pr_set_pdeathsig = 1
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, sig)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(gone_code)

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
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return None  # before importing Prefect's server (2 s): the command's own server, or a user's
    from filelock import FileLock
    from prefect.server.api import server as server_module

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


class ServerStartError(RuntimeError):
    """The command's Prefect server did not start (the message says how it ended)."""


class CommandServer:
    """Prefect's API for one command: the server Prefect's ephemeral mode would start, started at the
    beginning of the command instead of at the first flow run, so that its start (a second
    interpreter importing Prefect's server, ~4 s on an idle core here) overlaps the command's own
    imports and data loading rather than following them.

    `start` binds a loopback socket and starts the child (`hyperflow.flows.prefect_server`) at
    once, before this process imports Prefect: the child decides with the settings this command
    would resolve whether an API is configured (then it serves nothing and `url()` is None) and
    otherwise serves Prefect's own server app on that socket, on the same database as Prefect's
    ephemeral mode. Nothing outlives the command: `stop` ends the child, and on Linux it dies
    with the command even on SIGKILL (PR_SET_PDEATHSIG, armed by the child itself).

    Prefect's `SubprocessASGIServer` is not used because it starts only when a flow first asks
    for a client, after this process has imported Prefect.
    """

    def __init__(self, startup_timeout: float | None = None) -> None:
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._report: int | None = None
        self._decision: str | None = None
        self._port: int | None = None
        self._ready = False

    def start(self) -> CommandServer:
        """Start the child; returns at once (idempotent)."""
        if self.process is not None:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)  # early clients wait in the backlog until the server accepts
        self._port = sock.getsockname()[1]
        read, write = os.pipe()
        cmd = [sys.executable, "-m", "hyperflow.flows.prefect_server"]
        cmd += [str(os.getpid()), str(sock.fileno()), str(write)]
        try:
            self.process = subprocess.Popen(
                cmd,
                pass_fds=(sock.fileno(), write),
                stdin=subprocess.DEVNULL,
                # Its own session: a Ctrl-C at the terminal is this command's to handle (it still
                # reports to the server while it ends its runs); the server stops when told.
                start_new_session=True,
            )
        finally:
            sock.close()
            os.close(write)
        self._report = read
        atexit.register(self.stop)
        return self

    def url(self) -> str | None:
        """The API URL this command uses (the server may still be starting), or None when an API is
        configured (PREFECT_API_URL in the environment or the Prefect profile) or ephemeral mode is off.

        Raises:
            ServerStartError: the child ended before it decided.
        """
        if self.process is None:
            return None
        if self._decision is None:
            assert self._report is not None
            with os.fdopen(self._report) as report:
                self._decision = report.readline().strip()
            self._report = None
            if self._decision not in ("configured", "serving"):
                code = self.process.wait()
                raise ServerStartError(f"Prefect's server did not start: it exited with code {code}")
        return f"http://127.0.0.1:{self._port}/api" if self._decision == "serving" else None

    def wait_ready(self) -> None:
        """Wait until the server answers its health check.

        Raises:
            ServerStartError: it exited, or did not answer within the start-up timeout
                (PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS).
        """
        url = self.url()
        if url is None or self._ready:
            return
        from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

        timeout = self.startup_timeout or float(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
        deadline = time.monotonic() + timeout
        assert self.process is not None
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise ServerStartError(f"Prefect's server did not start: it exited with code {code}")
            with (
                contextlib.suppress(urllib.error.URLError, OSError),
                urllib.request.urlopen(f"{url}/health", timeout=max(deadline - time.monotonic(), 0.1)) as r,
            ):
                if r.status == 200:
                    self._ready = True
                    return
            time.sleep(0.05)
        raise ServerStartError(
            f"Prefect's server did not answer within {timeout:g} s (PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS)"
        )

    def stop(self) -> None:
        """End the child and wait for it (idempotent)."""
        if self._report is not None:
            os.close(self._report)
            self._report = None
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


_ACTIVE: CommandServer | None = None


def wait_for_command_server() -> bool:
    """Before a flow runs: wait until the command's server (if any) answers; whether there is one."""
    if _ACTIVE is not None:
        _ACTIVE.wait_ready()
        return True
    return False


@contextlib.contextmanager
def flow_run_settings(own_server: bool) -> Iterator[None]:
    """Prefect's settings for a flow run; on a server of this process's own, no flow-run heartbeats.

    Heartbeats let a server notice a flow run whose process died; a server that dies with this
    process (the command's, or the ephemeral one `start_ephemeral_server` starts) never needs
    them, and Prefect joins its heartbeat thread at the flow's end, which sleeps in 1-s steps: up
    to a second added to every command. A user's server (PREFECT_API_URL) keeps them.
    """
    if not own_server:
        yield
        return
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


def _point_prefect_at(url: str | None) -> None:
    """Make `url` (None: unset) this process's PREFECT_API_URL, for every thread and child process.

    Prefect's threads (its events and log workers, its process pool's message forwarder) read the
    process-wide settings made when Prefect was imported, not a `temporary_settings` context: left
    unset there, one of them starts an ephemeral server of its own.
    """
    if url is None:
        os.environ.pop("PREFECT_API_URL", None)
    else:
        os.environ["PREFECT_API_URL"] = url
    if "prefect.context" in sys.modules:
        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()


def _drain_prefect_workers() -> None:
    """Send what Prefect's background workers still hold (logs, events) before its server goes."""
    if "prefect" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):
            worker.drain_all(timeout=10)


@contextlib.contextmanager
def command_server(server: CommandServer | None) -> Iterator[str | None]:
    """Point this process (and the workers it starts) at `server` while the block runs; stop it after.

    Entered before this process imports Prefect when it can be (the CLI does): the URL is known
    as soon as the child has decided, before the server answers; `wait_for_command_server` waits
    for that just before the flow runs.
    """
    global _ACTIVE
    if server is None:
        yield None
        return
    try:
        url = server.url()
        if url is None:
            yield None
            return
        previous = os.environ.get("PREFECT_API_URL")
        _point_prefect_at(url)
        _ACTIVE = server
        try:
            yield url
        finally:
            _ACTIVE = None
            _drain_prefect_workers()
            _point_prefect_at(previous)
    finally:
        server.stop()
