"""Weight histograms, the optimisation history and learning curves, drawn off the training path."""

from __future__ import annotations

import math
import multiprocessing
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CurveRecord",
    "PlotQueue",
    "draw_learning_curves",
    "draw_optimization_history",
    "draw_weight_histograms",
    "weight_histograms",
]


def weight_histograms(tensors: Mapping[str, Any], bins: int = 30) -> dict[str, dict[str, Any]]:
    """Per parameter tensor: shape, bin edges, counts, mean and std (what histograms.json holds)."""
    out: dict[str, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        values = np.asarray(tensor.detach().cpu() if hasattr(tensor, "detach") else tensor, dtype=np.float64)
        flat = values.ravel()
        flat = flat[np.isfinite(flat)]
        if flat.size == 0:
            counts, edges = np.zeros(bins, dtype=np.int64), np.linspace(0.0, 1.0, bins + 1)
        else:
            counts, edges = np.histogram(flat, bins=bins)
        out[name] = {
            "shape": list(values.shape),
            "bin_edges": [float(e) for e in edges],
            "counts": [int(c) for c in counts],
            "mean": float(flat.mean()) if flat.size else 0.0,
            "std": float(flat.std()) if flat.size else 0.0,
        }
    return out


def _figure(width: float, height: float) -> Any:
    # The object-oriented API with the Agg canvas: no pyplot state, safe off the main thread.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=90)


def draw_weight_histograms(hist: Mapping[str, Mapping[str, Any]], path: Path | str) -> Path:
    """One small panel per parameter tensor."""
    names = list(hist)
    cols = min(3, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    fig = _figure(3.2 * cols, 2.3 * rows)
    for i, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, i + 1)
        h = hist[name]
        ax.stairs(h["counts"], h["bin_edges"], fill=True, color="#4477aa")
        ax.set_title(f"{name} {tuple(h['shape'])}\nmean {h['mean']:.3g}  std {h['std']:.3g}", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.subplots_adjust(hspace=0.8, wspace=0.35, left=0.07, right=0.98, top=0.9, bottom=0.08)
    path = Path(path)
    fig.savefig(path)
    return path


@dataclass(frozen=True)
class CurveRecord:
    """One finished trial, as the study plots need it."""

    number: int
    state: str
    value: float | None
    curve: Sequence[float]


def draw_optimization_history(
    trials: Sequence[CurveRecord], metric: str, mode: str, path: Path | str
) -> Path:
    """Each trial's value by trial number (pruned and failed apart), and the running best."""
    fig = _figure(7, 4)
    ax = fig.add_subplot(1, 1, 1)
    styles = {"completed": ("o", "#4477aa"), "pruned": ("x", "#ee6677"), "failed": ("s", "#bbbbbb")}
    for state, (marker, colour) in styles.items():
        pts = [(t.number, t.value) for t in trials if t.state == state and t.value is not None]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.scatter(xs, ys, marker=marker, color=colour, label=state, zorder=3)
    best: list[tuple[int, float]] = []
    current: float | None = None
    for t in sorted(trials, key=lambda t: t.number):
        if t.state == "completed" and t.value is not None:
            better = current is None or (t.value > current if mode == "max" else t.value < current)
            current = t.value if better else current
        if current is not None:
            best.append((t.number, current))
    if best:
        xs, ys = zip(*best, strict=True)
        ax.step(xs, ys, where="post", color="#228833", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.set_title(f"optimisation history ({mode} {metric})")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    path = Path(path)
    fig.savefig(path)
    return path


def draw_learning_curves(trials: Sequence[CurveRecord], metric: str, path: Path | str) -> Path:
    """Every trial's validation curve; pruned trials dashed in their own colour, apart from completed."""
    fig = _figure(9, 4)
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2, sharey=None)
    for t in trials:
        if not t.curve:
            continue
        epochs = range(len(t.curve))
        if t.state == "pruned":
            right.plot(epochs, t.curve, "--", color="#ee6677", alpha=0.7, lw=1)
            right.plot(len(t.curve) - 1, t.curve[-1], "x", color="#ee6677")
        elif t.state == "completed":
            left.plot(epochs, t.curve, color="#4477aa", alpha=0.6, lw=1)
    left.set_title(f"completed ({sum(t.state == 'completed' for t in trials)})", fontsize=9)
    right.set_title(f"pruned ({sum(t.state == 'pruned' for t in trials)})", fontsize=9)
    for ax in (left, right):
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    fig.suptitle(f"learning curves: {metric}")
    path = Path(path)
    fig.savefig(path)
    return path


def _draw_histograms_png(hist: dict[str, Any]) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = draw_weight_histograms(hist, Path(tmp) / "histograms.png")
        return path.read_bytes()


def _warm_up() -> None:
    import matplotlib.figure  # noqa: F401 - the import is the work


def _init_plot_worker() -> None:
    import signal

    # Interruption is the search loop's business: it shuts this pool down itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Drawing (~0.2 s of CPU a trial) must not slow trials that use every core: it gets what they leave.
    os.nice(10)
    import matplotlib

    matplotlib.use("Agg")


Uploader = Callable[[str, bytes], None]


class PlotQueue:
    """Draws per-trial histogram PNGs in one background process, so training never waits for them.

    Drawing a figure costs ~0.2-0.5 s here, longer than a small trial's training; a spawned
    process keeps it off the training path (and off the search loop's GIL). The worker only
    draws (it imports matplotlib, not MLflow); the PNG comes back and `upload` logs it, from the
    search loop's thread, when `drain` or `wait` is called.
    """

    def __init__(self, upload: Uploader | None = None) -> None:
        self.upload = upload
        self._pool: ProcessPoolExecutor | None = None
        self._futures: list[tuple[str, Future[bytes]]] = []
        self.errors: list[str] = []

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                1, mp_context=multiprocessing.get_context("spawn"), initializer=_init_plot_worker
            )
        return self._pool

    def start(self) -> None:
        """Start the worker now (its imports overlap the first trial)."""
        self._executor().submit(_warm_up)

    def histograms(self, run_id: str, hist: dict[str, Any]) -> None:
        """Queue `weights/histograms.png` for a trial run, and upload what is already drawn."""
        self._futures.append((run_id, self._executor().submit(_draw_histograms_png, hist)))
        self.drain()

    def drain(self, wait: bool = False, timeout: float | None = None) -> None:
        """Upload every finished plot (all of them, waiting up to `timeout` each, when `wait`)."""
        pending = []
        for run_id, fut in self._futures:
            if not wait and not fut.done():
                pending.append((run_id, fut))
                continue
            try:
                png = fut.result(timeout=timeout)
                if self.upload is not None:
                    self.upload(run_id, png)
            except Exception as exc:  # a plot never fails a study; the error is reported
                self.errors.append(f"weights/histograms.png of run {run_id}: {type(exc).__name__}: {exc}")
        self._futures = pending

    def wait(self, timeout: float | None = None) -> list[str]:
        """Upload every queued plot; return the errors."""
        self.drain(wait=True, timeout=timeout)
        return list(self.errors)

    def close(self, *, cancel: bool = False) -> None:
        """Stop the worker process (at once, dropping queued plots, when `cancel`)."""
        if self._pool is None:
            return
        if cancel:
            procs = list(getattr(self._pool, "_processes", {}).values())
            self._pool.shutdown(wait=False, cancel_futures=True)
            for proc in procs:
                if proc.is_alive():
                    proc.terminate()
            for proc in procs:
                proc.join(timeout=5)
        else:
            self._pool.shutdown(wait=True)
        self._pool = None
        self._futures = []
