"""Weight histograms, the optimisation history, learning curves, importance and parallel coordinates."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hyperflow.components.names import COMPLETED, FAILED, PRUNED, WEIGHT_NEAR_ZERO

if TYPE_CHECKING:
    from hyperflow.components.search import SearchSpace

__all__ = [
    "CurveRecord",
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


# One panel per tensor, in px: what 3.2 x 2.3 in at 90 dpi were with matplotlib.
_PANEL = (288, 207)


def draw_weight_histograms(hist: Mapping[str, Mapping[str, Any]], path: Path | str) -> Path:
    """One small panel per parameter tensor (`weight_histograms.png` of every trial).

    Drawn with Pillow rather than matplotlib: matplotlib took 0.3 s of CPU for the default
    model's six panels, more than its trial's training; these shapes and labels take ~15 ms.
    """
    from PIL import Image, ImageDraw, ImageFont

    names = list(hist)
    cols = min(3, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    width, height = _PANEL
    image = Image.new("RGB", (width * cols, height * rows), "white")
    draw = ImageDraw.Draw(image)
    title, small = ImageFont.load_default(size=11), ImageFont.load_default(size=9)
    for i, name in enumerate(names):
        ox, oy = (i % cols) * width, (i // cols) * height
        panel = hist[name]
        counts = [int(c) for c in panel["counts"]]
        edges = [float(e) for e in panel["bin_edges"]]
        left, right, top, bottom = ox + 44, ox + width - 14, oy + 38, oy + height - 22
        mid = (left + right) / 2
        draw.text((mid, oy + 6), f"{name} {tuple(panel['shape'])}", font=title, fill="black", anchor="ma")
        stats = f"mean {panel['mean']:.3g}   std {panel['std']:.3g}"
        draw.text((mid, oy + 20), stats, font=title, fill="black", anchor="ma")
        peak = max(counts, default=0)
        step = (right - left) / max(len(counts), 1)
        for j, count in enumerate(counts):
            if count > 0:
                y = bottom - (bottom - top) * count / peak
                draw.rectangle((left + j * step, y, left + (j + 1) * step, bottom), fill="#4477aa")
        draw.rectangle((left, top, right, bottom), outline="black")
        lo, hi = edges[0], edges[-1]
        for value in [lo, 0.0, hi] if lo < 0 < hi else [lo, hi]:
            x = left + (right - left) * (value - lo) / (hi - lo) if hi > lo else left
            draw.line((x, bottom, x, bottom + 3), fill="black")
            draw.text((x, bottom + 5), f"{value:.2g}", font=small, fill="black", anchor="ma")
        for y, label in ((bottom, "0"), (top, str(peak))):
            draw.line((left - 3, y, left, y), fill="black")
            draw.text((left - 5, y), label, font=small, fill="black", anchor="rm")
    path = Path(path)
    image.save(path, format="PNG")
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
