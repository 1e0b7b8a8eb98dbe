"""Weight histograms, the optimisation history, learning curves, importance and parallel coordinates."""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hyperflow.components.interrupt import die_with_parent, terminate_workers
from hyperflow.components.names import COMPLETED, FAILED, PRUNED, WEIGHT_NEAR_ZERO
from hyperflow.components.scratch import scratch_dir

if TYPE_CHECKING:
    from hyperflow.components.search import SearchSpace

__all__ = [
    "CurveRecord",
    "PlotQueue",
    "draw_importance",
    "draw_learning_curves",
    "draw_optimization_history",
    "draw_parallel_coordinates",
    "draw_pareto_front",
    "draw_weight_histograms",
    "weight_histograms",
]


def weight_histograms(tensors: Mapping[str, Any], bins: int = 30) -> dict[str, dict[str, Any]]:
    """Per parameter tensor: shape, bin edges, counts, mean, std and the fraction near zero (histograms.json)."""
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
            "near_zero": float(np.mean(np.abs(flat) < WEIGHT_NEAR_ZERO)) if flat.size else 0.0,
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
    styles = {COMPLETED: ("o", "#4477aa"), PRUNED: ("x", "#ee6677"), FAILED: ("s", "#bbbbbb")}
    for state, (marker, colour) in styles.items():
        pts = [(t.number, t.value) for t in trials if t.state == state and t.value is not None]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.scatter(xs, ys, marker=marker, color=colour, label=state, zorder=3)
    best: list[tuple[int, float]] = []
    current: float | None = None
    for t in sorted(trials, key=lambda t: t.number):
        if t.state == COMPLETED and t.value is not None:
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
    return _save_single_axes(fig, ax, path)


def _save_single_axes(fig: Any, ax: Any, path: Path | str) -> Path:
    """A one-axes figure's common finish: its legend (when anything is labelled), a light grid, the file."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    path = Path(path)
    fig.savefig(path)
    return path


def draw_pareto_front(
    points: Sequence[tuple[int, Sequence[float]]],
    front: Sequence[int],
    names: Sequence[str],
    modes: Sequence[str],
    path: Path | str,
    champion: int | None = None,
) -> Path:
    """Completed trials by their first two objectives, the front (trial numbers `front`) joined by
    a line and the champion ringed; `points` are (trial number, objective values)."""
    fig = _figure(7, 5)
    ax = fig.add_subplot(1, 1, 1)
    on_front = set(front)
    rest = [v for n, v in points if n not in on_front]
    if rest:
        ax.scatter([v[0] for v in rest], [v[1] for v in rest], color="#bbbbbb", label="dominated", zorder=2)
    members = sorted((v[0], v[1], n) for n, v in points if n in on_front)
    if members:
        xs, ys, _numbers = zip(*members, strict=True)
        ax.plot(xs, ys, color="#4477aa", alpha=0.5)
        ax.scatter(xs, ys, color="#4477aa", label=f"Pareto front ({len(members)})", zorder=3)
        for x, y, n in members:
            ax.annotate(str(n), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    for n, v in points:
        if n == champion:
            ax.scatter(
                [v[0]],
                [v[1]],
                s=160,
                facecolors="none",
                edgecolors="#ee6677",
                linewidths=2,
                label=f"champion (trial {n})",
                zorder=4,
            )
    if names[1] == "param_count":
        ax.set_yscale("log")
    ax.set_xlabel(f"{names[0]} ({modes[0]})")
    ax.set_ylabel(f"{names[1]} ({modes[1]})")
    ax.set_title("Pareto front" + (f" (first two of {len(names)} objectives)" if len(names) > 2 else ""))
    return _save_single_axes(fig, ax, path)


def draw_learning_curves(trials: Sequence[CurveRecord], metric: str, path: Path | str) -> Path:
    """Every trial's validation curve; pruned trials dashed in their own colour, apart from completed."""
    fig = _figure(9, 4)
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2, sharey=None)
    for t in trials:
        if not t.curve:
            continue
        epochs = range(len(t.curve))
        if t.state == PRUNED:
            right.plot(epochs, t.curve, "--", color="#ee6677", alpha=0.7, lw=1)
            right.plot(len(t.curve) - 1, t.curve[-1], "x", color="#ee6677")
        elif t.state == COMPLETED:
            left.plot(epochs, t.curve, color="#4477aa", alpha=0.6, lw=1)
    left.set_title(f"completed ({sum(t.state == COMPLETED for t in trials)})", fontsize=9)
    right.set_title(f"pruned ({sum(t.state == PRUNED for t in trials)})", fontsize=9)
    for ax in (left, right):
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    fig.suptitle(f"learning curves: {metric}")
    path = Path(path)
    fig.savefig(path)
    return path


def draw_importance(importances: Mapping[str, float], metric: str, path: Path | str) -> Path:
    """Each parameter's main-effect share of the metric's variance, largest first, and the rest."""
    ranked = sorted(importances.items(), key=lambda kv: kv[1])
    rest = max(0.0, 1.0 - sum(importances.values()))
    names = ["interactions and rest", *(n for n, _ in ranked)]
    values = [rest, *(v for _, v in ranked)]
    fig = _figure(7, 0.8 + 0.42 * len(names))
    ax = fig.add_subplot(1, 1, 1)
    colours = ["#bbbbbb", *(["#4477aa"] * len(ranked))]
    ax.barh(range(len(names)), values, color=colours)
    for i, v in enumerate(values):
        ax.text(v + 0.01, i, f"{v:.2f}", va="center", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlim(0.0, 1.1)
    ax.set_xlabel(f"share of the variance of {metric} (functional ANOVA main effect)", fontsize=9)
    ax.set_title("which hyperparameters mattered", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def _axis_ticks(dim: Any) -> list[tuple[float, str]]:
    """Tick positions in [0, 1] and labels for one parameter's axis."""
    if dim.kind == "categorical":
        return [(dim.to_unit(c), str(c)) for c in dim.choices]
    return [(u, f"{dim.from_unit(u):.3g}") for u in (0.0, 0.5, 1.0)]


def draw_parallel_coordinates(
    space: SearchSpace,
    trials: Sequence[tuple[Mapping[str, Any], float, str]],
    metric: str,
    mode: str,
    path: Path | str,
    *,
    best_fraction: float = 0.1,
) -> Path:
    """One axis per searched parameter (as sampled: log scale where ``log``) and one for the metric.

    Each trial is a line; the best completed trials (the top `best_fraction`, at least one) are
    drawn on top in colour, pruned trials dotted.

    Args:
        space: The search space (its dimensions give the axes and their ticks).
        trials: (params, value, state) of the trials to draw: completed and pruned.
        metric: The metric's name.
        mode: ``max`` or ``min``.
        path: Where to write the PNG.
        best_fraction: The share of completed trials highlighted.
    """
    dims = list(space)
    rows = [(p, v, st) for p, v, st in trials if space.contains(p) and math.isfinite(v)]
    values = np.array([v for _, v, _ in rows], dtype=float)
    lo, hi = (float(values.min()), float(values.max())) if len(values) else (0.0, 1.0)
    span = hi - lo if hi > lo else 1.0
    fig = _figure(max(6.0, 1.5 * (len(dims) + 1)), 4.5)
    ax = fig.add_subplot(1, 1, 1)
    xs = np.arange(len(dims) + 1)
    completed = sorted(
        (i for i, (_, _, st) in enumerate(rows) if st == COMPLETED),
        key=lambda i: -values[i] if mode == "max" else values[i],
    )
    best = set(completed[: max(1, math.ceil(best_fraction * len(completed)))]) if completed else set()
    for i, (params, value, state) in enumerate(rows):
        if i in best:
            continue
        ys = [d.to_unit(params[d.name]) for d in dims] + [(value - lo) / span]
        ax.plot(xs, ys, ":" if state == PRUNED else "-", color="#bbbbbb", lw=0.8, alpha=0.7)
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    for rank, i in enumerate(sorted(best, key=lambda i: values[i], reverse=mode == "min")):
        params, value, _ = rows[i]
        ys = [d.to_unit(params[d.name]) for d in dims] + [(value - lo) / span]
        colour = cmap(0.25 + 0.75 * rank / max(1, len(best) - 1))
        ax.plot(xs, ys, "-", color=colour, lw=2.2, label=f"{metric} {value:.4g}", zorder=3)
    for x, d in zip(xs, dims, strict=False):
        ax.axvline(x, color="#444444", lw=0.8)
        for u, label in _axis_ticks(d):
            ax.text(x + 0.03, u, label, fontsize=7, va="center")
    ax.axvline(xs[-1], color="#444444", lw=0.8)
    for u in (0.0, 0.5, 1.0):
        ax.text(xs[-1] + 0.03, u, f"{lo + u * span:.4g}", fontsize=7, va="center")
    ax.set_xticks(xs, [*(d.name for d in dims), metric], fontsize=8)
    ax.set_yticks([])
    ax.set_xlim(-0.2, xs[-1] + 0.6)
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(
        f"parallel coordinates: {len(rows)} trials, best {len(best)} completed in colour ({mode} {metric})"
    )
    if best:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.subplots_adjust(left=0.04, right=0.8, top=0.9, bottom=0.1)
    path = Path(path)
    fig.savefig(path)
    return path


def _draw_histograms_png(hist: dict[str, Any]) -> bytes:
    with scratch_dir("plot") as tmp:
        path = draw_weight_histograms(hist, Path(tmp) / "histograms.png")
        return path.read_bytes()


def _warm_up() -> None:
    import matplotlib.figure  # noqa: F401 - the import is the work


def _init_plot_worker() -> None:
    import signal

    # Interruption is the search loop's business: it shuts this pool down itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()  # and a killed search's: this worker goes with it
    # Drawing (~0.2 s of CPU a trial) must not slow trials that use every core: it gets what they leave.
    os.nice(10)
    import matplotlib

    matplotlib.use("Agg")


@contextlib.contextmanager
def _main_script_hidden() -> Iterator[None]:
    """Start spawned processes without running the user's script again in them.

    A spawned child imports the parent's `__main__` (a user's script calling `hyperflow.search`)
    unless it has no `__file__` / `__spec__`; the plot worker needs nothing from it, and a script
    without an `if __name__ == "__main__":` guard would otherwise start a second search in it.
    """
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved: dict[str, Any] = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__spec__ = None  # what multiprocessing reads to find the module; absent would break others
    try:
        yield
    finally:
        main.__dict__.update(saved)


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
        with _main_script_hidden():
            self._executor().submit(_warm_up)

    def histograms(self, run_id: str, hist: dict[str, Any]) -> None:
        """Queue `weight_histograms.png` for a trial run, and upload what is already drawn."""
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
                self.errors.append(f"weight_histograms.png of run {run_id}: {type(exc).__name__}: {exc}")
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
            terminate_workers(self._pool, shutdown=True)
        else:
            self._pool.shutdown(wait=True)
        self._pool = None
        self._futures = []
