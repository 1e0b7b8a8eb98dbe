"""Where trials train: the accelerator a config resolves to, GPU slots, and which trial holds which slot.

A *slot* is a place for one trial: with `runner.gpus_per_trial: 1/k` every GPU has k slots, with a
whole number n every slot is n GPUs of their own. Each slot gets its own worker process, started
with `CUDA_VISIBLE_DEVICES` naming only the slot's GPUs, because CUDA's device list is fixed once a
process has initialised CUDA. Nothing here initialises CUDA: the search loop's process only counts
GPUs, so its workers are free to choose theirs.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

# The config's checks of `runner.gpus_per_trial` live with the other config checks (no torch there).
from hyperflow.components.config_checks import gpus_per_trial_problem, parse_gpus_per_trial

if TYPE_CHECKING:
    from hyperflow.components.config import RunnerConfig

__all__ = [
    "ACCELERATORS",
    "CUDA_ENV",
    "GPU_RESOURCE",
    "PRECISIONS",
    "Slot",
    "SlotBook",
    "device_problems",
    "gpu_count",
    "gpu_slots",
    "gpus_per_trial_problem",
    "is_device_error",
    "lightning_precision",
    "parse_gpus_per_trial",
    "place",
    "resolve_accelerator",
    "seed_torch",
    "torch_device",
    "trial_slots",
    "visible_devices",
]

Accelerator = Literal["auto", "cpu", "gpu"]
Resolved = Literal["cpu", "gpu"]
ACCELERATORS: tuple[str, ...] = ("auto", "cpu", "gpu")
PRECISIONS: tuple[str, ...] = ("32", "16-mixed", "bf16-mixed")
CUDA_ENV = "CUDA_VISIBLE_DEVICES"
# The Dask worker resource a GPU trial asks for (`runner.gpus_per_trial` of it).
GPU_RESOURCE = "GPU"


def gpu_count() -> int:
    """The GPUs torch sees in this process (0 without CUDA). Creates no CUDA context."""
    import torch

    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def resolve_accelerator(accelerator: str, n_gpus: int) -> Resolved:
    """`auto` is a GPU when there is one; `cpu` and `gpu` are themselves (checked by `device_problems`)."""
    if accelerator == "auto":
        return "gpu" if n_gpus > 0 else "cpu"
    return "gpu" if accelerator == "gpu" else "cpu"


def trials_per_gpu(gpus_per_trial: float) -> int:
    """k for `gpus_per_trial` = 1/k; 1 for a whole number of GPUs."""
    return round(1 / gpus_per_trial) if gpus_per_trial < 1 else 1


def device_problems(
    *, accelerator: str, gpus_per_trial: float, precision: str, n_gpus: int, remote: bool = False
) -> list[tuple[str, str]]:
    """What this machine cannot do of the runner's device keys, by dotted path (empty: all fine).

    Args:
        accelerator: `runner.accelerator`.
        gpus_per_trial: `runner.gpus_per_trial` (already 1/k or whole: the config checks that).
        precision: `runner.precision`.
        n_gpus: the GPUs this machine has (`gpu_count()`).
        remote: trials train on a remote Dask cluster (`runner.address`): its workers' GPUs are
            not this machine's, so only what holds everywhere is checked.
    """
    problems: list[tuple[str, str]] = []
    if remote:
        if precision == "16-mixed" and accelerator == "cpu":
            problems.append(("runner.precision", _NO_FP16_ON_CPU))
        return problems
    if accelerator == "gpu" and n_gpus == 0:
        problems.append(
            (
                "runner.accelerator",
                "gpu, but torch sees no GPU on this machine (torch.cuda.is_available() is False; "
                "a CPU build of torch, no driver, or CUDA_VISIBLE_DEVICES hides them); use auto or cpu",
            )
        )
    resolved = resolve_accelerator(accelerator, n_gpus)
    if resolved == "gpu" and n_gpus > 0 and gpus_per_trial > n_gpus:
        problems.append(
            (
                "runner.gpus_per_trial",
                f"{gpus_per_trial:g} GPUs per trial, but this machine has {n_gpus}",
            )
        )
    if precision == "16-mixed" and resolved == "cpu":
        problems.append(("runner.precision", _NO_FP16_ON_CPU))
    return problems


_NO_FP16_ON_CPU = (
    "16-mixed needs a GPU (on the CPU Lightning would silently train in bf16-mixed instead); "
    "use bf16-mixed or 32 on the CPU"
)


def lightning_precision(precision: str) -> Literal["32-true", "16-mixed", "bf16-mixed"]:
    """`runner.precision` as Lightning's Trainer takes it (`32` is `32-true`)."""
    if precision == "16-mixed":
        return "16-mixed"
    if precision == "bf16-mixed":
        return "bf16-mixed"
    return "32-true"


def seed_torch(seed: int) -> None:
    """`torch.manual_seed(seed)`, without its deferred seeds for accelerators the machine lacks.

    With no accelerator initialised, `torch.manual_seed` queues a seed for CUDA, XPU and MTIA,
    each with a formatted stack trace of the caller (linecache stats every file of the stack, and
    each stat gives up the GIL): 0.5-31 ms, 13 ms on average, on a trial's thread in a 12-trial
    `hyperflow run` beside the MLflow writer and Prefect's threads, where the CPU generator, the
    only one a machine without an accelerator has, takes a microsecond. With an accelerator,
    torch's own call.
    """
    import torch

    if torch.accelerator.is_available():
        torch.manual_seed(seed)
    else:
        torch.default_generator.manual_seed(seed)


def torch_device(accelerator: str) -> Any:
    """The torch device a trial trains on: the first GPU its worker sees, or the CPU."""
    import torch

    return torch.device("cuda", 0) if accelerator == "gpu" else torch.device("cpu")


def is_device_error(exc: BaseException) -> bool:
    """An out-of-memory or other CUDA error: the trial fails, and its worker is restarted after it.

    CUDA reports most errors as a RuntimeError whose message names it (`CUDA error: ...`,
    `CUBLAS_STATUS_...`, `cuDNN error: ...`); a context that saw one is unusable for later trials.
    """
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    accelerator_error = getattr(torch, "AcceleratorError", None)
    if accelerator_error is not None and isinstance(exc, accelerator_error):
        return True
    if isinstance(exc, RuntimeError):
        text = str(exc)
        return any(
            mark in text for mark in ("CUDA error", "CUDA out of memory", "CUBLAS_STATUS", "cuDNN error")
        )
    return False


# ------------------------------------------------------------------------------------------ slots


@dataclass(frozen=True)
class Slot:
    """A place for one trial: its index and the GPUs (by index on the machine) its worker sees."""

    index: int
    devices: tuple[int | str, ...]

    @property
    def env(self) -> dict[str, str]:
        """The environment the slot's worker process is started with."""
        return {CUDA_ENV: ",".join(str(d) for d in self.devices)}


def gpu_slots(gpus_per_trial: float, devices: Sequence[int | str]) -> list[Slot]:
    """The slots of these GPUs: k per GPU for 1/k, one per n GPUs for a whole n (leftovers unused).

    Slots of one fraction go round the GPUs (slot 0 on the first GPU, slot 1 on the second, ...), so
    that the first trials spread over the machine.
    """
    if gpus_per_trial < 1:
        k = trials_per_gpu(gpus_per_trial)
        return [Slot(i, (devices[i % len(devices)],)) for i in range(k * len(devices))]
    n = int(gpus_per_trial)
    groups = [tuple(devices[i : i + n]) for i in range(0, len(devices) - n + 1, n)]
    return [Slot(i, group) for i, group in enumerate(groups)]


def place(slots: Sequence[Slot], occupied: Collection[int]) -> Slot | None:
    """The slot for the next trial: a free one on the least-loaded GPUs (lowest index on a tie).

    A pure function of the slots and the indices of those taken; None when every slot is taken.
    """
    load: dict[int | str, int] = {}
    for slot in slots:
        if slot.index in occupied:
            for device in slot.devices:
                load[device] = load.get(device, 0) + 1
    free = [s for s in slots if s.index not in occupied]
    if not free:
        return None
    return min(free, key=lambda s: (max((load.get(d, 0) for d in s.devices), default=0), s.index))


class SlotBook:
    """Which trial holds which slot: `take` when a trial is submitted, `free` when it ends.

    A trial ends however it ends (completed, pruned, failed, interrupted, its worker crashed): the
    caller frees its slot in every case. Thread-safe: futures' callbacks free slots from other threads.
    """

    def __init__(self, slots: Sequence[Slot]) -> None:
        self.slots = list(slots)
        self._held: dict[Any, Slot] = {}
        self._lock = threading.Lock()

    def take(self, key: Any) -> Slot | None:
        """A slot for the trial `key` (None when all are taken)."""
        with self._lock:
            if key in self._held:
                return self._held[key]
            slot = place(self.slots, {s.index for s in self._held.values()})
            if slot is not None:
                self._held[key] = slot
            return slot

    def free(self, key: Any) -> Slot | None:
        """Give the trial's slot back (None when it held none)."""
        with self._lock:
            return self._held.pop(key, None)

    @property
    def free_count(self) -> int:
        with self._lock:
            return len(self.slots) - len(self._held)

    def load(self) -> Mapping[int | str, int]:
        """Trials on each GPU now."""
        with self._lock:
            counts = dict.fromkeys((d for s in self.slots for d in s.devices), 0)
            for slot in self._held.values():
                for device in slot.devices:
                    counts[device] += 1
            return counts


def trial_slots(runner: RunnerConfig, n_gpus: int | None = None) -> list[Slot] | None:
    """The GPU slots of a study's local trials, or None when its trials train on the CPU.

    Args:
        runner: the config's `runner` section (checked by `device_problems` first).
        n_gpus: the GPUs to place trials on, `0..n_gpus-1` (default: those this machine has).
    """
    n = gpu_count() if n_gpus is None else n_gpus
    if resolve_accelerator(runner.accelerator, n) != "gpu":
        return None
    return gpu_slots(runner.gpus_per_trial, visible_devices(n)) or None


def visible_devices(n_gpus: int) -> list[int | str]:
    """The names of this process's GPUs as a worker's `CUDA_VISIBLE_DEVICES` must give them.

    torch numbers the GPUs it sees from 0; when this process was itself started with
    `CUDA_VISIBLE_DEVICES=2,3`, its GPU 0 is the machine's 2, and a worker must be given `2`.
    """
    listed = [d.strip() for d in os.environ.get(CUDA_ENV, "").split(",") if d.strip()]
    if CUDA_ENV in os.environ and len(listed) >= n_gpus:
        return [int(d) if d.isdigit() else d for d in listed[:n_gpus]]
    return list(range(n_gpus))
