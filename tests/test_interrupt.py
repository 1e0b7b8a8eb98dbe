"""Stop requests: signals set the stop event, a second one leaves at once; a pool's workers are ended."""

from __future__ import annotations

import multiprocessing
import signal
import time
from concurrent.futures import ProcessPoolExecutor

import pytest

from hyperflow.components.interrupt import StopSignal, stop_on_signals, terminate_workers


def test_a_signal_sets_the_stop_request_and_a_second_one_raises() -> None:
    stop = StopSignal()
    seen: list[int] = []
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), stop_on_signals(stop, seen.append):
        signal.raise_signal(signal.SIGTERM)
        assert stop.is_set() and stop.signum == signal.SIGTERM and seen == [signal.SIGTERM]
        assert stop.process_event.is_set(), "worker processes see it too"
        signal.raise_signal(signal.SIGINT)  # the user insists
    assert signal.getsignal(signal.SIGTERM) is before, "the previous handler is back"
    stop.reset()
    assert not stop.is_set() and stop.signum is None


def _sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def test_terminate_workers_ends_a_busy_pool_at_once() -> None:
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    busy = pool.submit(_sleep, 600)
    procs = list(pool._processes.values())
    deadline = time.monotonic() + 60
    while not busy.running() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert busy.running()
    terminate_workers(pool, shutdown=True)
    assert procs
    # The pool's manager thread reaps the same children: a poll that loses that race reads "alive"
    # once (multiprocessing's poll returns None on ECHILD), so ask again until a deadline.
    deadline = time.monotonic() + 30
    while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(p.is_alive() for p in procs)
    assert all(p.exitcode is not None for p in procs)
    terminate_workers(None)  # nothing to end: no error
