"""Real servers for tests: started as processes on free loopback ports, stopped by their PID."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

BIN = Path(sys.executable).parent
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def poll(
    what: str,
    check: Callable[[], T],
    deadline_s: float,
    proc: subprocess.Popen[bytes] | None = None,
    detail: Callable[[], str] | None = None,
) -> T:
    """Call `check` until it returns something truthy, and return that: the tests' one way to wait.

    Exceptions of `check` count as not yet (the last one is reported). Waiting ends with an
    AssertionError when `proc` exits first or the deadline passes; `detail()` adds to its message
    (e.g. a server's log).
    """
    deadline = time.monotonic() + deadline_s
    last: BaseException | None = None
    while True:
        try:
            value = check()
        except Exception as exc:
            last, value = exc, None  # type: ignore[assignment]
        if value:
            return value
        extra = f":\n{detail()}" if detail is not None else ""
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process exited with {proc.returncode} while waiting for {what}{extra}")
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {deadline_s:.0f} s waiting for {what} (last error: {last!r}){extra}"
            )
        time.sleep(0.25)


def wait_http(url: str, proc: subprocess.Popen[bytes], deadline_s: float, log: Path | None = None) -> None:
    """Poll `url` until it answers 200, the process dies, or the deadline passes."""

    def answers() -> bool:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)

    def tail() -> str:
        return log.read_text()[-3000:] if log and log.exists() else ""

    poll(f"{url} to answer", answers, deadline_s, proc, detail=tail)


def stop_pid(pid: int, timeout: float = 15) -> None:
    """Stop a server that another process started (its own process group) by its PID."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            os.killpg(pid, 0)  # raises ProcessLookupError once the group is gone
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child: reap it
                    break
            time.sleep(0.1)
        else:
            os.killpg(pid, signal.SIGKILL)


def stop(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """Stop a server and its children by the process group of its PID."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


def base_env(**extra: str) -> dict[str, str]:
    from hyperflow import RUNTIME_DEFAULTS

    env = {**RUNTIME_DEFAULTS, **os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.update(extra)
    return env


@dataclass
class Server:
    """A server's address and home; `proc` only in the process that started it."""

    url: str
    proc: subprocess.Popen[bytes] | None
    home: Path
    started_pid: int | None = None

    @property
    def pid(self) -> int:
        if self.proc is not None:
            return self.proc.pid
        assert self.started_pid is not None
        return self.started_pid


def start_prefect_server(home: Path) -> Server:
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = home / "server.log"
    env = base_env(PREFECT_HOME=str(home))
    env.pop("PREFECT_API_URL", None)
    command = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"]
    return _serve(command, env, home, log, f"http://127.0.0.1:{port}/api", 180)


def _serve(
    command: list[str], env: dict[str, str], home: Path, log: Path, url: str, deadline_s: float
) -> Server:
    """Start a server in its own process group, logging to `log`, and wait for `url`/health."""
    proc = subprocess.Popen(
        command, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True, cwd=home
    )
    try:
        wait_http(f"{url}/health", proc, deadline_s, log)
    except BaseException:
        stop(proc)
        raise
    return Server(url, proc, home)


def start_mlflow_server(home: Path, backend: str | None = None, port: int | None = None) -> Server:
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = home / f"mlflow-{port}.log"
    backend = backend or f"sqlite:///{home / 'mlflow.db'}"
    command = [
        str(BIN / "mlflow"),
        "server",
        "--backend-store-uri",
        backend,
        "--artifacts-destination",
        str(home / "artifacts"),
        "--serve-artifacts",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    return _serve(command, base_env(), home, log, f"http://127.0.0.1:{port}", 120)


class Terminal:
    """A command on a pseudo-terminal that is its controlling terminal, as in a shell's window.

    Its output is read as it comes (a terminal nobody reads would block the command once full).
    `hang_up()` closes the terminal as a closed window or a dropped SSH session does: the kernel
    sends the command SIGHUP, and its writes to the terminal fail from then on.
    """

    def __init__(self, cmd: list[str], **popen: Any) -> None:
        import fcntl
        import termios
        import threading

        self.master, slave = os.openpty()

        def take_the_terminal() -> None:  # in the child, after setsid: the pty becomes its terminal
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        try:
            self.proc = subprocess.Popen(
                cmd,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                start_new_session=True,
                preexec_fn=take_the_terminal,
                **popen,
            )
        finally:
            os.close(slave)
        self.output = bytearray()
        self._closing = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        import select

        while not self._closing.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if not ready:
                continue
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: nothing holds the terminal open any more
                return
            if not chunk:
                return
            self.output += chunk

    def hang_up(self) -> None:
        if self._closing.is_set():
            return
        self._closing.set()
        self._reader.join()
        os.close(self.master)

    def text(self) -> str:
        return self.output.decode(errors="replace")
