"""Lookahead: a strategy's next suggestions prepared on a background thread while trials train.

The suggestion for trial k is a function of the study seed, k and the results of the trials
numbered below k - depth (depth = n_parallel), told in trial-number order, with trials
k - depth .. k - 1 pending: whatever order trials finish in and however fast the machine is,
the same seed gives the same study. Trial k - depth's result may arrive before trial k is
asked; it is held back until then. A suggestion whose inputs have all arrived is computed at
once and waited for if it is not ready; one whose inputs are still training is not asked for
(`Lookahead.take` returns None and the search loop waits for a result): nothing falls back to
a random point.

What this costs against asking after each result: with one trial at a time, trial k is chosen
without the result of trial k - 1 (the last one the strategy learns from is k - 2); the benefit is
that the search loop never waits for a surrogate fit shorter than a trial.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from hyperflow.components.search._base import Strategy

__all__ = ["Lookahead", "Outcome", "StrategyProcess"]


def _serve_strategy(conn: Any, strategy: Strategy) -> None:  # pragma: no cover - runs in the child
    import os
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # interruption is the search loop's business
    # The surrogate's fits take what the trials leave of the cores.
    with contextlib.suppress(OSError):
        os.nice(5)
    conn.send((True, "ready"))  # imported and unpickled: the caller may switch to this process
    while True:
        try:
            method, args, kwargs = conn.recv()
        except EOFError:  # the search loop is gone
            method = "close"
        if method == "close":
            # Nothing to save, and a spawned interpreter's normal exit tears down scikit-learn's
            # and SciPy's modules (~1 s the search loop would wait for in `close`).
            os._exit(0)
        try:
            attr = getattr(strategy, method)
            conn.send((True, attr(*args, **kwargs) if callable(attr) else attr))
        except Exception as exc:
            conn.send((False, exc))


@contextlib.contextmanager
def _main_script_hidden() -> Iterator[None]:
    """Spawn without running the user's `__main__` again in the child.

    A spawned child imports the parent's `__main__` (a user's script calling `hyperflow.search`)
    unless it has no `__file__` / `__spec__`; the strategy needs nothing from it, and a script
    without an `if __name__ == "__main__":` guard would otherwise start a second search in it.
    """
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved: dict[str, Any] = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        main.__dict__.update(saved)


class StrategyProcess:
    """A strategy in a process of its own, called like the strategy (ask, tell, ... and `exhausted`).

    bench/overhead.py measured the GP's tell + ask on a thread of the search loop's process slowing
    the trial training beside it by more than the fit's own time (both hold the GIL); in a process
    it only shares the cores. The strategy is pickled into the child, a spawned interpreter.

    The child takes ~2 s to start (an interpreter importing skopt and scikit-learn), and the first
    trial would wait for it: until it is ready, calls are served by the strategy here and
    recorded, and at the switch the child replays them from the same initial state, so it is in
    the state this one is in (a strategy is a deterministic function of the calls it was given).
    """

    def __init__(self, strategy: Strategy, *, wait_for_switch: bool = False) -> None:
        """`wait_for_switch`: serve every call here until `switch()` is called (tests choose the point)."""
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        with _main_script_hidden():  # a user's script is not run again in the child
            self._process = ctx.Process(
                target=_serve_strategy, args=(child, strategy), name="hyperflow-strategy", daemon=True
            )
            self._process.start()  # pickles the strategy as it is now: the replay's starting point
        child.close()
        self.space = strategy.space
        self._local: Strategy | None = strategy  # serves calls until the child is ready
        self._log: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self._wait_for_switch = wait_for_switch

    @property
    def switched(self) -> bool:
        """Whether calls now go to the child."""
        return self._local is None

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self._local is not None:
            if self._wait_for_switch or not self._conn.poll():  # the child is still starting
                attr = getattr(self._local, method)
                if not callable(attr):
                    return attr
                value = attr(*args, **kwargs)
                self._log.append((method, args, kwargs))
                return value
            self.switch()
        self._conn.send((method, args, kwargs))
        return self._answer()

    def _answer(self) -> Any:
        ok, value = self._conn.recv()
        if not ok:
            raise value
        return value

    def switch(self) -> None:
        """Send every later call to the child, once it is ready and has replayed the calls so far."""
        if self._local is None:
            return
        self._answer()  # "ready"
        for method, args, kwargs in self._log:
            self._conn.send((method, args, kwargs))
            self._answer()
        self._local, self._log = None, []

    def ask(self, n: int = 1) -> list[dict[str, Any]]:
        return self._call("ask", n)

    def tell(self, params: Mapping[str, Any], value: float, **told: Any) -> None:
        """`Strategy.tell`, its keywords passed on as given."""
        self._call("tell", dict(params), value, **told)

    def tell_failed(self, params: Mapping[str, Any]) -> None:
        self._call("tell_failed", dict(params))

    def pend(self, params: Mapping[str, Any]) -> None:
        self._call("pend", dict(params))

    def release(self, params: Mapping[str, Any]) -> None:
        self._call("release", dict(params))

    def requeue(self, params: Mapping[str, Any]) -> None:
        self._call("requeue", dict(params))

    @property
    def exhausted(self) -> bool:
        return bool(self._call("exhausted"))

    @property
    def infeasible(self) -> set[str]:
        return set(self._call("infeasible"))

    @property
    def n_told(self) -> int:
        return int(self._call("n_told"))

    def close(self) -> None:
        if self._local is not None:  # still starting (a short study): nothing there to wait for
            self._process.kill()
        with contextlib.suppress(Exception):
            self._conn.send(("close", (), {}))
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._conn.close()


@dataclass(frozen=True)
class Outcome:
    """A finished trial as the strategy is told it: a value (None: failed), and whether it was pruned.

    `skipped`: the trial has no result and never will (it was interrupted): it is not told, and
    its point is asked again.
    """

    params: dict[str, Any]
    value: float | None
    pruned: bool = False
    skipped: bool = False
    objectives: tuple[float, ...] | None = None  # `search.objectives`' values, when all are known
    predicted: float | None = None  # the stop rule's predicted final value (bayes's `pruned` policy)
    epochs: int | None = None  # epochs trained
    max_epochs: int | None = None  # epochs it would have trained, unstopped

    def tell_to(self, strategy: Strategy | StrategyProcess) -> None:
        """Tell `strategy` this result: `tell_failed` without a value, else `tell` with all it knows."""
        if self.value is None:
            strategy.tell_failed(self.params)
        else:
            strategy.tell(
                self.params,
                self.value,
                pruned=self.pruned,
                objectives=self.objectives,
                predicted=self.predicted,
                epochs=self.epochs,
                max_epochs=self.max_epochs,
            )


class Lookahead:
    """Prepares suggestions for trials `start`, `start + 1`, ... on one background thread.

    The strategy belongs to that thread once `start()` is called: read it through `with
    lookahead.lock:` only. `replay` gives the trials a resumed study already asked (number ->
    params); their outcomes come in through `tell` like any other, so the rebuilt strategy
    passes through the same states as the original.
    """

    def __init__(
        self,
        strategy: Strategy | StrategyProcess,
        depth: int,
        *,
        start: int = 0,
        replay: Mapping[int, Mapping[str, Any]] | None = None,
        limit: int | None = None,
    ) -> None:
        if depth < 1:
            raise ValueError(f"depth must be at least 1, not {depth}")
        self.strategy = strategy
        self.depth = depth
        self.lock = threading.Condition()
        self._replay = {int(k): dict(v) for k, v in (replay or {}).items()}
        self._asked: dict[int, dict[str, Any] | None] = {}  # number -> params (None: exhausted)
        self._outcomes: dict[int, Outcome] = {}
        self._told = 0  # every number below this one is told (or skipped)
        self._next = 0  # the next number to ask (replayed below `start`)
        self._start = start
        self._taken = start  # the next number the loop will take
        self._limit = limit  # ask nothing at or beyond this number
        self._requeued: list[dict[str, Any]] = []
        self._error: BaseException | None = None
        self._closed = False
        self._thread: threading.Thread | None = None
        self.waits: list[float] = []  # seconds `take` waited, per suggestion (bench/overhead.py)

    # ------------------------------------------------------------------ the search loop's side

    def start(self) -> Lookahead:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="hyperflow-lookahead", daemon=True)
            self._thread.start()
        return self

    def tell(self, number: int, outcome: Outcome) -> None:
        """A trial's result (in any order); told to the strategy when its turn comes."""
        with self.lock:
            self._outcomes[number] = outcome
            self.lock.notify_all()

    def requeue(self, params: Mapping[str, Any]) -> None:
        """Ask this point again before anything new (`Strategy.requeue`, on the strategy's thread)."""
        with self.lock:
            self._requeued.append(dict(params))
            self.lock.notify_all()

    def set_limit(self, limit: int | None) -> None:
        """Ask nothing at or beyond trial `limit` (the study's budget)."""
        with self.lock:
            self._limit = limit
            self.lock.notify_all()

    def exhausted_at(self, number: int) -> bool:
        """Whether the strategy has nothing for trial `number` (the next to take; waits for it while
        it is computed; False while it depends on a trial still training)."""
        with self.lock:
            while True:
                if self._error is not None:
                    raise self._error
                if number in self._asked:
                    return self._asked[number] is None
                beyond = self._limit is not None and number >= self._limit
                if not self._computable(number) or self._thread is None or beyond:
                    return False
                self.lock.wait()

    def take(self, number: int) -> tuple[bool, dict[str, Any] | None]:
        """The suggestion for trial `number` (the next one in order).

        Returns (True, params) when it could be had, waiting while it is computed; (True, None)
        when the strategy is exhausted; (False, None) when it depends on a trial still training.
        """
        import time

        if number != self._taken:
            raise ValueError(f"trial {self._taken} is the next to take, not {number}")
        started = time.perf_counter()
        with self.lock:
            while True:
                if self._error is not None:
                    raise self._error
                if number in self._asked:
                    params = self._asked.pop(number)
                    self._taken += 1
                    self.waits.append(time.perf_counter() - started)
                    self.lock.notify_all()
                    return True, params
                if not self._computable(number):
                    return False, None
                self.lock.wait()

    def stop(self) -> None:
        """Stop preparing suggestions; the strategy is the caller's again once this returns."""
        with self.lock:
            self._closed = True
            self.lock.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=60)

    def close(self) -> None:
        """`stop`, then end the strategy's process (if it has one)."""
        self.stop()
        if isinstance(self.strategy, StrategyProcess):
            self.strategy.close()

    @property
    def suggestions(self) -> dict[int, dict[str, Any] | None]:
        """Suggestions computed and not yet taken (for tests)."""
        with self.lock:
            return dict(self._asked)

    # ------------------------------------------------------------------ the thread's side

    def _computable(self, number: int) -> bool:
        """Whether every result suggestion `number` depends on has arrived (lock held)."""
        return all(j in self._outcomes for j in range(self._told, number - self.depth))

    def _work(self) -> None:
        try:
            with self.lock:
                while not self._closed:
                    if not self._step():
                        self.lock.wait()
        except BaseException as exc:  # re-raised in the search loop by `take`
            with self.lock:
                self._error = exc
                self.lock.notify_all()

    def _step(self) -> bool:
        """Tell or ask one thing if its turn has come (lock held); False when there is nothing to do."""
        k = self._next
        if self._requeued and k >= self._start:
            self.strategy.requeue(self._requeued.pop(0))
            return True
        # Trials below k - depth are told before k is asked, and no later trial is.
        if self._told < k - self.depth and self._told in self._outcomes:
            # Popped once told: until then `take` still sees the result as arrived.
            self._tell(self._outcomes[self._told])
            del self._outcomes[self._told]
            self._told += 1
            return True
        if self._told < max(k - self.depth, 0):
            return False  # waiting for a result
        if k < self._start:
            params = self._replay.get(k)
            if params is not None:
                self.strategy.pend(params)
            else:  # a number the resumed study has no trial for: nothing was asked
                self._outcomes.setdefault(k, Outcome({}, None, skipped=True))
            self._next += 1
            return True
        if (self._limit is not None and k >= self._limit) or k >= self._taken + self.depth:
            return False  # far enough ahead
        self.lock.release()  # the loop may take, tell and check while the strategy thinks
        try:
            asked = self.strategy.ask(1)
        finally:
            self.lock.acquire()
        self._asked[k] = asked[0] if asked else None
        self._next += 1
        self.lock.notify_all()
        return True

    def _tell(self, outcome: Outcome) -> None:
        if outcome.skipped:
            if outcome.params:
                self.strategy.release(outcome.params)
            return
        self.lock.release()
        try:
            outcome.tell_to(self.strategy)
        finally:
            self.lock.acquire()
