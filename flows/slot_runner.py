"""Trials on GPU slots: one worker process per slot, started with only its GPUs visible, restarted after a CUDA error."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any

from prefect.futures import PrefectFuture
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner

from hyperflow.components.devices import Slot, SlotBook
from hyperflow.components.interrupt import init_trial_worker, terminate_workers
from hyperflow.components.study import TrialError

__all__ = ["NoFreeSlot", "SlotTaskRunner", "end_pool_workers"]


class NoFreeSlot(RuntimeError):
    """Every slot holds a trial: submit no more than `free_slots` at once."""


def _needs_restart(fut: PrefectFuture[Any]) -> bool:
    """Whether the slot's worker must start afresh: its trial hit a CUDA error, or the task crashed."""
    try:
        result = fut.result()
    except TrialError as exc:  # a trial that failed on its own merits, an out-of-memory one among them
        return bool(exc.result.device_error)
    except BaseException:  # a crashed or broken worker: start a new one rather than trust it
        return True
    return bool(getattr(result, "device_error", False))


class SlotTaskRunner(TaskRunner[PrefectFuture[Any]]):
    """A Prefect task runner with one single-process pool per slot (`components.devices.Slot`).

    Each slot's worker process is started with the slot's `CUDA_VISIBLE_DEVICES` (through
    `init_trial_worker`, before CUDA can be initialised there), so a trial trains on `cuda:0` of
    its own worker and no GPU holds more trials than it has slots. `submit` places the task on a
    free slot (`SlotBook`: the least-loaded GPU first) and frees it when the task ends, however it
    ends. After a trial that ran out of GPU memory or hit another CUDA error (or whose worker
    crashed), that slot's worker is replaced before its next trial: a CUDA context that saw an
    error may be unusable, and a fresh process also returns all of its memory.
    """

    def __init__(self, slots: Sequence[Slot], *, stop_event: Any = None, threads: int | None = None) -> None:
        super().__init__()
        if not slots:
            raise ValueError("a SlotTaskRunner needs at least one slot")
        self.slots = list(slots)
        self.stop_event = stop_event
        self.threads = threads
        self.book = SlotBook(self.slots)
        self.pools: dict[int, ProcessPoolTaskRunner] = {}
        self.restarts: dict[int, int] = dict.fromkeys((s.index for s in self.slots), 0)
        self._stale: set[int] = set()
        self._lock = threading.Lock()
        self._submitted = 0

    def duplicate(self) -> SlotTaskRunner:
        return type(self)(self.slots, stop_event=self.stop_event, threads=self.threads)

    @property
    def free_slots(self) -> int:
        return self.book.free_count

    def _pool(self, slot: Slot) -> ProcessPoolTaskRunner:
        pool = ProcessPoolTaskRunner(
            max_workers=1,
            initializer=init_trial_worker,
            initargs=(self.stop_event, self.threads, slot.env),
        )
        pool.__enter__()
        return pool

    def _close(self, pool: ProcessPoolTaskRunner, *, kill: bool) -> None:
        if kill:
            end_pool_workers(pool)
        pool.__exit__(None, None, None)

    def submit(
        self,
        task: Any,
        parameters: dict[str, Any],
        wait_for: Iterable[PrefectFuture[Any]] | None = None,
        dependencies: dict[str, Any] | None = None,
    ) -> PrefectFuture[Any]:
        """Run `task` on a free slot's worker; raises NoFreeSlot when every slot holds a trial."""
        if not self._started:
            raise RuntimeError("The task runner must be started before submitting work.")
        with self._lock:
            key = self._submitted
            self._submitted += 1
        slot = self.book.take(key)
        if slot is None:
            raise NoFreeSlot(f"all {len(self.slots)} slots hold a trial")
        try:
            with self._lock:
                restart = slot.index in self._stale
                self._stale.discard(slot.index)
            if restart:
                self._close(self.pools.pop(slot.index), kill=True)
                self.restarts[slot.index] += 1
            if slot.index not in self.pools:
                self.pools[slot.index] = self._pool(slot)
            fut = self.pools[slot.index].submit(task, parameters, wait_for, dependencies)
        except BaseException:
            self.book.free(key)
            raise

        def done(fut: PrefectFuture[Any]) -> None:
            if _needs_restart(fut):
                with self._lock:
                    self._stale.add(slot.index)
            self.book.free(key)

        fut.add_done_callback(done)
        return fut

    def terminate(self) -> None:
        """End every slot's worker now, without waiting for what it runs (a stop request)."""
        for pool in self.pools.values():
            end_pool_workers(pool)

    def __enter__(self) -> SlotTaskRunner:
        super().__enter__()
        return self

    def __exit__(self, *args: Any) -> None:
        pools, self.pools = self.pools, {}
        for pool in pools.values():
            self._close(pool, kill=False)
        super().__exit__(*args)


def end_pool_workers(pool: ProcessPoolTaskRunner) -> None:
    """End a pool's worker now, and let this process exit without flushing the pool's message queue.

    Prefect's workers send their logs and events to this process through a multiprocessing queue
    whose write lock spans processes: a worker ended while writing holds it for good. The queue's
    feeder thread here (started when the pool is closed, to send the forwarder its shutdown) then
    never gets the lock, and multiprocessing joins that thread at exit: the command would hang
    after its runs were ended (seen under load, after a SIGTERM). What the queue still holds is
    the ended worker's logs and events; the trial's own records go through MLflow, not there.
    """
    terminate_workers(getattr(pool, "_executor", None))
    queue = getattr(pool, "_subprocess_message_queue", None)  # Prefect's own; absent in other versions
    if queue is not None:
        queue.cancel_join_thread()
