"""Stop requests that reach training wherever it runs: the caller's threads or worker processes."""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Executor
from typing import Any

__all__ = [
    "StopSignal",
    "current_stop_event",
    "detach_hung_up_terminal",
    "die_with_parent",
    "init_trial_worker",
    "set_current_stop_event",
    "stop_on_signals",
    "stop_signals",
    "terminate_workers",
]

_current: Any = None


class StopSignal:
    """One stop request, visible to threads (an Event) and to spawned worker processes (an mp Event).

    Training checks `is_set()` before every batch, so it must be cheap: both are a lock and a flag.
    """

    def __init__(self) -> None:
        self.thread_event = threading.Event()
        self.process_event = multiprocessing.get_context("spawn").Event()
        self.signum: int | None = None

    def set(self, signum: int | None = None) -> None:
        if signum is not None and self.signum is None:
            self.signum = signum
        self.thread_event.set()
        self.process_event.set()

    def is_set(self) -> bool:
        return self.thread_event.is_set()

    def reset(self) -> None:
        """Clear a past request, so that a new search in the same process can run."""
        self.thread_event.clear()
        self.process_event.clear()
        self.signum = None


def stop_signals() -> list[int]:
    """The signals that ask a search (or `hyperflow ui`) to stop: Ctrl-C, SIGTERM and SIGHUP.

    SIGHUP is what a closed terminal or a dropped SSH session sends; left to its default it would
    end the process at once, leaving runs RUNNING and the last epochs' metrics unwritten. Under
    `nohup` (SIGHUP ignored when we start) it stays ignored: the user asked to outlive the terminal.
    """
    signals: list[int] = [signal.SIGINT, signal.SIGTERM]
    hup = getattr(signal, "SIGHUP", None)
    if hup is not None and signal.getsignal(hup) is not signal.SIG_IGN:
        signals.append(hup)
    return signals


def detach_hung_up_terminal() -> None:
    """Point stdout and stderr at /dev/null where they are a terminal that has hung up.

    After a hangup every write to that terminal fails (EIO), and a failed print would break the
    orderly stop that the SIGHUP asked for. A terminal still open (a `kill -HUP` by hand), a file
    or a pipe is left as it is.
    """
    import stat

    try:
        null_device = os.stat(os.devnull).st_rdev
    except OSError:
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            fd = stream.fileno()
            info = os.fstat(fd)
        except (AttributeError, OSError, ValueError):  # no such stream, or not a real file
            continue
        # A hung-up terminal is still a character device, but no longer a tty (tcgetattr fails).
        if not stat.S_ISCHR(info.st_mode) or info.st_rdev == null_device or os.isatty(fd):
            continue
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)


@contextlib.contextmanager
def stop_on_signals(stop: StopSignal, on_signal: Callable[[int], None] | None = None) -> Iterator[None]:
    """While the block runs, Ctrl-C, SIGTERM and SIGHUP (`stop_signals`) set `stop` (trials end
    within a batch) instead of raising.

    `on_signal(signum)` is called on the first one (e.g. to say so); a second Ctrl-C or SIGTERM
    raises KeyboardInterrupt at once: the user insists (a second SIGHUP is ignored). After a SIGHUP, output to a terminal that has
    hung up goes to /dev/null (`detach_hung_up_terminal`). The previous handlers are back
    afterwards. Off the main thread (where Python allows no handlers) the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    hangup = getattr(signal, "SIGHUP", None)

    def handler(signum: int, frame: Any) -> None:
        if signum == hangup:
            detach_hung_up_terminal()
        if stop.is_set():
            if signum == hangup:
                return  # a hangup can arrive twice (the terminal's, then the shell's): no insisting user
            raise KeyboardInterrupt
        stop.set(signum)
        if on_signal is not None:
            on_signal(signum)

    previous = {sig: signal.signal(sig, handler) for sig in stop_signals()}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def terminate_workers(executor: Executor | None, *, shutdown: bool = False) -> None:
    """End a process pool's worker processes now, without waiting for what they run.

    `ProcessPoolExecutor.shutdown` only waits or cancels what has not started; a worker still
    training (or importing torch) would hold the exit. Its processes are reached through the
    executor's private `_processes`, the one place that does. With `shutdown`, the executor is
    shut down (dropping what is queued) before its workers are ended.
    """
    processes = getattr(executor, "_processes", None)
    procs = list(processes.values()) if isinstance(processes, dict) else []
    if shutdown and executor is not None:
        executor.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    for proc in procs:
        proc.join(timeout=5)


def die_with_parent() -> None:
    """In a spawned worker process: end it as soon as the process that started it is gone.

    A kill -9 of the search skips every clean-up, and a worker (or the plot worker) would train
    on, holding multiprocessing's resource tracker open too. The parent's sentinel (a pipe only
    the parent holds open) becomes readable when the parent dies, however it died; a daemon
    thread waits on it: no polling. Not a spawned process: nothing to watch.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    sentinel = parent.sentinel

    def watch() -> None:
        multiprocessing.connection.wait([sentinel])
        os._exit(1)  # no clean-up: whatever it would write belongs to a search that is gone

    threading.Thread(target=watch, name="hyperflow-parent-watch", daemon=True).start()


def set_current_stop_event(event: Any) -> None:
    """The event that trials started in this process check (see `current_stop_event`)."""
    global _current
    _current = event


def current_stop_event() -> Any:
    """The stop event of this process: set by the search loop, or by a worker's initializer."""
    return _current


def init_trial_worker(
    event: Any,
    threads: int | None,
    env: Mapping[str, str] | None = None,
    *,
    ignore_sigint: bool = True,
) -> None:
    """Set up a trial worker process (a process-pool or Dask worker): env, stop event, threads, Ctrl-C.

    A terminal's Ctrl-C reaches every process of the group; the worker ignores it and stops at
    the next batch when the search loop sets `event`, so runs are ended cleanly, not mid-write.
    Torch and the BLAS libraries get the trial's thread budget. `env` (a GPU slot's
    `CUDA_VISIBLE_DEVICES`) is set first, before anything in the worker can initialise CUDA: CUDA
    reads its device list once per process.
    """
    if env:
        os.environ.update(env)
    if ignore_sigint and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()
    set_current_stop_event(event)
    if threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = str(threads)
        import torch

        torch.set_num_threads(threads)
