"""Trials on GPUs: `train_trial` throughput with 1, 2 and 4 trials per device, against the same on the CPU.

Two models: the default digits MLP ([128, 64], batch 64, 10 epochs) and a larger one ([1024, 1024],
batch 256, 2 epochs) on a synthetic classification set (20,000 rows x 256 features, 10 classes). For each device (the
CPU, and the first GPU when torch sees one) and k = 1, 2, 4 trials at once, k worker processes are
started the way GPU slots start them (`init_trial_worker` with the slot's `CUDA_VISIBLE_DEVICES`,
one torch thread each) and train `rounds * k` trials; the figure is trials finished per minute of
wall time, after every worker has trained one warm-up trial (its start-up and CUDA context are
not counted). GPU utilisation is sampled with NVML (`nvidia-smi`'s source) while they run.

Every ratio is against a baseline measured in the same command: `vs CPU k=1` against one trial at
a time on the CPU; `GPU/CPU` against the CPU row of the same model and k.

    python bench/gpu.py [--quick] [--epochs N] [--rounds N]
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
from _common import banner, parser, print_table, verdict

from hyperflow.components.devices import CUDA_ENV, gpu_count
from hyperflow.components.interrupt import init_trial_worker

# model name -> (config overrides, data, epochs a trial): "digits" is the built-in set, "synthetic"
# an .npz written here. The large model trains few epochs: its CPU rows must fit the 5 minutes too.
MODELS: dict[str, tuple[dict[str, Any], str, int]] = {
    "default MLP [128, 64] on digits": ({"hidden_layers": [128, 64], "batch_size": 64}, "digits", 10),
    "MLP [1024, 1024] on 20k x 256": ({"hidden_layers": [1024, 1024], "batch_size": 256}, "synthetic", 2),
}

_worker: dict[str, Any] = {}


def _synthetic(folder: Path, rows: int) -> Path:
    """A 10-class set: a random linear teacher over 256 Gaussian features, plus label noise."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, 256)).astype(np.float32)
    y = (x @ rng.standard_normal((256, 10))).argmax(axis=1)
    flip = rng.random(rows) < 0.1
    y[flip] = rng.integers(0, 10, flip.sum())
    path = folder / "synthetic.npz"
    np.savez(path, X=x, y=y.astype(np.int64))
    return path


def _config(model: dict[str, Any], source: str, path: Path | None, accelerator: str, epochs: int) -> Any:
    from hyperflow.components.config import validate_config

    data: dict[str, Any] = (
        {"source": "digits"} if source == "digits" else {"source": "file", "path": str(path)}
    )
    return validate_config(
        {
            "data": data,
            "model": {**model, "max_epochs": epochs, "learning_rate": 0.01},
            "runner": {"accelerator": accelerator},
        }
    )


def _setup(cfg: Any, env: dict[str, str]) -> None:
    """A worker process: the slot's environment and one thread (init_trial_worker), then the data."""
    init_trial_worker(None, 1, env)
    from hyperflow.components.data import load_dataset
    from hyperflow.components.trial import TrialSpec

    _worker["data"] = load_dataset(cfg.data, cfg.seed)
    _worker["spec"] = TrialSpec.from_config(cfg, num_threads=1)


def _trial(seed: int) -> tuple[float, str, float | None]:
    from hyperflow.components.training import train_trial

    started = time.perf_counter()
    result = train_trial(_worker["data"], {}, _worker["spec"], seed=seed)
    return time.perf_counter() - started, result.state, result.value


class _Utilisation:
    """GPU 0's utilisation (%), sampled every 100 ms with NVML while the block runs."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> _Utilisation:
        try:
            import pynvml  # nvidia-ml-py, installed with torch's CUDA wheels

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:
            return self  # no NVML: utilisation unknown, the column says "-"

        def sample() -> None:
            while not self._stop.wait(0.1):
                self.samples.append(float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu))

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.samples) if self.samples else None


def measure(cfg: Any, k: int, rounds: int, gpu: bool) -> tuple[float, float | None, list[str]]:
    """Trials per minute of k worker processes on one device, its mean utilisation, the trials' states."""
    env = {CUDA_ENV: "0"} if gpu else {CUDA_ENV: ""}
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(k, mp_context=ctx, initializer=_setup, initargs=(cfg, env)) as pool:
        # Warm-up: every worker imports torch, loads the data and (on a GPU) makes its CUDA context.
        warm = [pool.submit(_trial, 10_000 + i) for i in range(k)]
        wait(warm)
        n = rounds * k
        with _Utilisation() as util:
            started = time.perf_counter()
            results = [f.result() for f in [pool.submit(_trial, s) for s in range(n)]]
            seconds = time.perf_counter() - started
    return n / seconds * 60, util.mean if gpu else None, [state for _, state, _ in results]


def main() -> int:
    p = parser(__doc__)
    p.add_argument(
        "--epochs", type=int, default=None, help="epochs per trial (default: the model's; --quick 2)"
    )
    p.add_argument("--rounds", type=int, default=None, help="trials per worker (default 2, --quick 1)")
    args = p.parse_args()
    epochs = args.epochs or (2 if args.quick else None)
    rounds = args.rounds or (1 if args.quick else 2)
    ks = (1, 2) if args.quick else (1, 2, 4)
    models = dict(list(MODELS.items())[:1]) if args.quick else MODELS
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    banner("Trials on GPUs", args.quick)
    n_gpus = gpu_count()
    devices = ["cpu", "gpu"] if n_gpus else ["cpu"]
    gpu_name = _gpu_name() if n_gpus else None
    print(
        f"GPU: {gpu_name or 'none (torch sees no GPU): the CPU rows only'}; "
        f"{rounds} trials per worker after a warm-up trial"
    )
    print()
    folder = Path(tempfile.mkdtemp(prefix="hyperflow-bench-gpu-"))
    all_ok = True
    started = time.perf_counter()
    try:
        path = _synthetic(folder, 20_000)
        rows = []
        for name, (model, source, model_epochs) in models.items():
            per: dict[tuple[str, int], float] = {}
            for device in devices:
                cfg = _config(model, source, path, device, epochs or model_epochs)
                for k in ks:
                    rate, util, states = measure(cfg, k, rounds, device == "gpu")
                    all_ok &= all(s == "completed" for s in states)
                    per[device, k] = rate
                    print(f"  {name}, {device}, {k} at once: {rate:.1f} trials/min", flush=True)
                    rows.append(
                        [
                            name,
                            device.upper(),
                            k,
                            rate,
                            rate / per["cpu", 1],
                            None if device == "cpu" else rate / per["cpu", k],
                            util,
                        ]
                    )
        print_table(
            "train_trial throughput (trials per minute of wall time)",
            ["model", "device", "trials at once", "trials/min", "vs CPU k=1", "GPU/CPU", "GPU util %"],
            rows,
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    seconds = time.perf_counter() - started
    print()
    print(f"total {seconds:.0f} s")
    what = "every trial completed" + ("" if n_gpus else "; no GPU here, so the GPU rows are still to come")
    verdict(all_ok and (args.quick or seconds < 300), what)
    return 0


def _gpu_name() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", "0"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


if __name__ == "__main__":
    raise SystemExit(main())
