"""What the benchmarks share: arguments, Markdown tables, verdicts, statistics and the default trial."""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python bench/x.py` from a checkout that is not installed
    sys.path.insert(0, str(ROOT))

import hyperflow  # noqa: E402, F401 - its import sets the runtime defaults (no telemetry, no network)

# What the CLI sets too: Prefect's per-task INFO lines would bury the tables.
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")

if TYPE_CHECKING:
    from hyperflow.components.config import ExperimentConfig
    from hyperflow.components.data import Dataset
    from hyperflow.components.trial import TrialSpec

__all__ = [
    "BREAST_CANCER",
    "DIGITS",
    "ROOT",
    "DefaultTrial",
    "banner",
    "default_trial",
    "fmt",
    "load_experiment",
    "median_iqr",
    "optuna_suggest",
    "parser",
    "print_table",
    "stopwatch",
    "torch_threads_one",
    "verdict",
]

DIGITS = "conf/digits.yaml"
BREAST_CANCER = "conf/genetic.yaml"  # the shipped breast_cancer experiment


def parser(description: str | None) -> argparse.ArgumentParser:
    """An argument parser with the `--quick` switch every benchmark takes."""
    first_line = (description or "").strip().splitlines()[0] if description else None
    p = argparse.ArgumentParser(description=first_line)
    p.add_argument("--quick", action="store_true", help="a small version that finishes in under 20 s")
    return p


def add_lookahead_option(p: argparse.ArgumentParser, who: str) -> None:
    """`--lookahead` (the default, as a study asks: `search.lookahead: true`) / `--no-lookahead`."""
    p.add_argument(
        "--lookahead",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=f"{who} through the study's lookahead, as a study does by default (on); "
        "--no-lookahead asks after each result (search.lookahead: false)",
    )


def torch_threads_one() -> None:
    """One torch thread, as every trial of a search gets (`threads_per_trial`)."""
    import torch

    torch.set_num_threads(1)


def banner(name: str, quick: bool) -> None:
    """The benchmark's heading and the conditions it ran under (absolute times depend on them)."""
    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"## {name}{' (--quick)' if quick else ''}")
    print(
        f"{os.cpu_count()} CPUs, load {load:.2f} at start, Python {platform.python_version()}, "
        f"torch {torch.__version__.split('+')[0]}, torch threads {torch.get_num_threads()}"
    )
    print()


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A Markdown table (rich's MARKDOWN box), ready to paste into the README."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(box=box.MARKDOWN, show_edge=True, pad_edge=True)
    for i, head in enumerate(headers):
        table.add_column(head, justify="left" if i == 0 else "right", no_wrap=True)
    for row in rows:
        table.add_row(*(fmt(v) for v in row))
    console = Console(width=400, no_color=True, highlight=False, file=io.StringIO(), record=True)
    console.print(table)
    lines = [line.rstrip() for line in console.export_text().splitlines() if line.strip()]
    print(f"### {title}")
    print()
    print("\n".join(lines))
    sys.stdout.flush()


def fmt(value: Any) -> str:
    """A cell: floats to 3-4 significant digits, None as a dash."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not np.isfinite(value):
            return str(value)
        if value == 0:
            return "0"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 0.01:
            return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
        return f"{value:.2e}"
    return str(value)


def verdict(ok: bool, text: str) -> bool:
    """The one-line verdict every benchmark ends with."""
    print(f"verdict: {'PASS' if ok else 'MISS'} - {text}")
    sys.stdout.flush()
    return ok


def median_iqr(values: Sequence[float]) -> tuple[float, float, float]:
    """Median and the 25th and 75th percentiles."""
    arr = np.asarray(values, dtype=float)
    q1, med, q3 = np.percentile(arr, [25, 50, 75])
    return float(med), float(q1), float(q3)


@contextmanager
def stopwatch() -> Iterator[list[float]]:
    """`with stopwatch() as t:` ... then `t[0]` holds the seconds the block took."""
    box: list[float] = [0.0]
    start = time.perf_counter()
    try:
        yield box
    finally:
        box[0] = time.perf_counter() - start


def load_experiment(path: str = DIGITS, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """A shipped config (relative to the repository root) with `--set`-style overrides."""
    from hyperflow.components.config import load_config

    return load_config(ROOT / path, list(overrides))


@dataclass
class DefaultTrial:
    """The default digits trial (conf/digits.yaml's model) and its measured training time."""

    cfg: ExperimentConfig
    data: Dataset
    spec: TrialSpec
    seconds: float  # median wall time of train_trial
    value: float


def default_trial(repeats: int = 3) -> DefaultTrial:
    """Train the default digits trial `repeats` times, with different seeds, on one torch thread."""
    from hyperflow.components.data import load_dataset
    from hyperflow.components.lifecycle import threads_per_trial
    from hyperflow.components.training import train_trial
    from hyperflow.components.trial import TrialSpec

    cfg = load_experiment(DIGITS)
    data = load_dataset(cfg.data, cfg.seed)
    spec = TrialSpec.from_config(cfg, num_threads=threads_per_trial(cfg))
    times, values = [], []
    for seed in range(repeats):
        with stopwatch() as t:
            result = train_trial(data, {}, spec, seed=seed)
        times.append(t[0])
        values.append(result.value)
    return DefaultTrial(cfg, data, spec, statistics.median(times), float(statistics.median(values)))


def optuna_suggest(trial: Any, space: Any) -> dict[str, Any]:
    """Draw a point of a hyperflow SearchSpace from an Optuna trial (categoricals by index)."""
    params: dict[str, Any] = {}
    for d in space.dimensions:
        if d.kind == "categorical":
            # By index: Optuna's choices must be plain scalars, and hidden_layers are lists.
            params[d.name] = d.choices[trial.suggest_categorical(d.name, list(range(len(d.choices))))]
        elif d.kind == "int":
            params[d.name] = trial.suggest_int(d.name, int(d.low), int(d.high), log=d.log)
        else:
            params[d.name] = trial.suggest_float(d.name, float(d.low), float(d.high), log=d.log)
    return params
