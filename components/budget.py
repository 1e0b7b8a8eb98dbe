"""`search.max_param_count`: an architecture's parameter count before it trains, and the budget check."""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from hyperflow.components.adapters import adapter_for
from hyperflow.components.architecture import hidden_layer_sizes
from hyperflow.components.describe import param_count_range
from hyperflow.components.model import expected_param_count, param_count
from hyperflow.components.search import Dimension, ParamCounts, SearchSpace, uses_ehvi
from hyperflow.components.search._space import params_key
from hyperflow.components.trial import TrialSpec

if TYPE_CHECKING:
    from hyperflow.components.config import ExperimentConfig
    from hyperflow.components.data import Dataset
    from hyperflow.components.search import Strategy

__all__ = [
    "BudgetError",
    "CountRange",
    "apply_param_budget",
    "budget_problem",
    "counts_parameters",
    "module_count_range",
    "param_counter",
    "param_counts",
]

# A user's module: the most points of the searched keys that change its count built and counted.
MAX_COUNTED_POINTS = 256
# An int range of at most this many values is counted at every value, a wider one at its ends.
_EVERY_INT_UP_TO = 16


class BudgetError(ValueError):
    """`search.max_param_count` cannot be checked, or no architecture of the space fits it."""


def param_counter(spec: TrialSpec, data: Dataset | None) -> Callable[[Mapping[str, Any]], int]:
    """A function from a trial's parameters to its model's parameter count, without training.

    The built-in MLP's count is DESIGN.md's formula (a test holds the built model to it); a user's
    LightningModule is built (not trained) and counted, with the caller's random state untouched.
    The function pickles: a bayes strategy thinks in a process of its own (lookahead), with it.

    Raises:
        BudgetError: a training function, which builds its model only while it trains.
    """
    if spec.user is None:
        if data is None:
            raise BudgetError("search.max_param_count: the built-in model needs its data set to count")
        return _MLPCount(spec, data.n_features, data.n_outputs)
    if spec.user.objective is not None:
        raise BudgetError(
            "search.max_param_count: a training function builds its own model while it trains, so its "
            "parameter count is unknown beforehand; leave the key out, or give a LightningModule (model.module)"
        )
    return _ModuleCount(spec, data)


@dataclass(frozen=True)
class _MLPCount:
    """The built-in MLP's count by formula (a class, not a closure, so that it pickles)."""

    spec: TrialSpec
    n_in: int
    n_out: int

    def __call__(self, params: Mapping[str, Any]) -> int:
        v = self.spec.resolve(params)
        layers = hidden_layer_sizes(
            v.get("hidden_layers"), v.get("depth"), v.get("width"), v.get("width_decay")
        )
        return expected_param_count(self.n_in, layers, self.n_out, bool(v.get("batch_norm", False)))


class _ModuleCount:
    """A user's module built (not trained) and counted, once per distinct point."""

    def __init__(self, spec: TrialSpec, data: Dataset | None) -> None:
        self.spec, self.data = spec, data
        self.counts: dict[str, int] = {}

    def __call__(self, params: Mapping[str, Any]) -> int:
        key = params_key(params)
        if key not in self.counts:
            with torch.random.fork_rng(devices=[]):
                module = adapter_for(self.spec).build(self.data, params)
            assert module is not None
            self.counts[key] = param_count(module)
        return self.counts[key]


@dataclass(frozen=True)
class _WithinBudget:
    """`strategy.feasible` for `search.max_param_count` (a class, so that the strategy pickles)."""

    count: Callable[[Mapping[str, Any]], int]
    limit: int

    def __call__(self, params: Mapping[str, Any]) -> bool:
        return self.count(params) <= self.limit


def param_counts(cfg: ExperimentConfig, spec: TrialSpec, data: Dataset | None) -> ParamCounts | None:
    """What `make_strategy` needs to search (primary, param_count) by EHVI, or None where it does not.

    Only for the built-in model: its count is a formula, cheap at every candidate of an ask (a
    user's module would be built once per candidate). The largest count is the space's, or
    `search.max_param_count` where that is smaller.
    """
    if not uses_ehvi(cfg) or data is None:
        return None
    # The reference point's count: the largest architecture that may train (budget included).
    largest = param_count_range(cfg, data)[1]
    if cfg.search.max_param_count is not None:
        largest = min(largest, cfg.search.max_param_count)
    return param_counter(spec, data), float(largest)


def apply_param_budget(
    strategy: Strategy, cfg: ExperimentConfig, spec: TrialSpec, data: Dataset | None
) -> None:
    """Make the strategy skip every candidate over `search.max_param_count` (never trained, never told)."""
    limit = cfg.search.max_param_count
    if limit is None:
        return
    strategy.feasible = _WithinBudget(param_counter(spec, data), limit)


@dataclass(frozen=True)
class CountRange:
    """A user's module's parameter counts over the space, built (not trained) and counted.

    Each searched key is varied alone from a base point (its choices; an int range's values, or
    its ends when wide; a real range's ends) to find the keys that change the count (`varied`);
    every combination of those is then counted (`points` in all), unless there are more than
    MAX_COUNTED_POINTS (`complete` False: only the first ones, so `low` may be above the true
    smallest). Points whose module cannot be built are left out.
    """

    low: int
    high: int
    points: int
    varied: tuple[str, ...]
    complete: bool

    def text(self) -> str:
        """`1,234 to 5,678 (channels changes it; 4 points built and counted)` for validate."""
        span = f"{self.low:,}" + (f" to {self.high:,}" if self.high != self.low else "")
        what = (
            f"{', '.join(self.varied)} change{'s' * (len(self.varied) == 1)} it"
            if self.varied
            else "no searched key changes it"
        )
        more = "" if self.complete else f", the first {MAX_COUNTED_POINTS} of more"
        return f"{span} ({what}; {self.points} point{'s' * (self.points != 1)} built and counted{more})"


def _corners(d: Dimension) -> list[Any]:
    """The values of a dimension a module is counted at (the space's first value first)."""
    if d.kind == "categorical":
        return list(d.choices)
    if d.kind == "int":
        low, high = int(d.low), int(d.high)
        return list(range(low, high + 1)) if high - low < _EVERY_INT_UP_TO else [low, high]
    return [float(d.low), float(d.high)] if d.high != d.low else [float(d.low)]


# The last range worked out (validate checks the budget, then prints the range): (key, range).
_last_range: list[tuple[tuple[str, int], CountRange | None]] = []


def module_count_range(cfg: ExperimentConfig, data: Dataset | None) -> CountRange | None:
    """The parameter counts of a user's LightningModule over the space (None: not a module, or no
    point of the space builds). `data`: the built-in data set (None with a DataModule)."""
    key = (cfg.model_dump_json(), id(data))
    if _last_range and _last_range[0][0] == key:
        return _last_range[0][1]
    counts = _module_count_range(cfg, data)
    _last_range[:] = [(key, counts)]
    return counts


def _module_count_range(cfg: ExperimentConfig, data: Dataset | None) -> CountRange | None:
    spec = TrialSpec.from_config(cfg)
    if spec.user is None or spec.user.objective is not None or spec.user.module is None:
        return None
    count = _ModuleCount(spec, data)
    space = SearchSpace.from_config(cfg)
    options = {d.name: _corners(d) for d in space}
    base = {name: values[0] for name, values in options.items()}

    def counted(point: Mapping[str, Any]) -> int | None:
        with contextlib.suppress(Exception):  # a point the user's constructor refuses: left out
            return count(space.coerce(point))
        return None

    base_count = counted(base)
    counts = [] if base_count is None else [base_count]
    varied: list[str] = []
    for name, values in options.items():
        alone = [counted({**base, name: v}) for v in values[1:]]
        counts.extend(c for c in alone if c is not None)
        if any(c is not None and c != base_count for c in alone):
            varied.append(name)
    combos = itertools.product(*(options[name] for name in varied))
    total = math.prod(len(options[name]) for name in varied) if varied else 1
    for combo in itertools.islice(combos, MAX_COUNTED_POINTS):
        c = counted({**base, **dict(zip(varied, combo, strict=True))})
        if c is not None:
            counts.append(c)
    if not counts:
        return None
    return CountRange(
        low=min(counts),
        high=max(counts),
        points=len(count.counts),
        varied=tuple(varied),
        complete=total <= MAX_COUNTED_POINTS,
    )


def _training_function_objective_problem(cfg: ExperimentConfig, spec: TrialSpec) -> str | None:
    if spec.user is None or spec.user.objective is None:
        return None
    for i, objective in enumerate(cfg.search.objectives):
        if objective.metric == "param_count":
            return (
                f"search.objectives.{i}.metric: a training function builds its own model while it trains, so "
                "hyperflow cannot count its parameters (every trial would record param_count 0); leave "
                "param_count out of search.objectives (or report the count as a metric of your own, "
                "report(epoch, value, n_params=...), and name that), or give a LightningModule (model.module)"
            )
    return None


def counts_parameters(cfg: ExperimentConfig) -> bool:
    """Whether the study needs its architectures' parameter counts: a budget or a `param_count` objective."""
    return cfg.search.max_param_count is not None or any(
        o.metric == "param_count" for o in cfg.search.objectives
    )


def budget_problem(cfg: ExperimentConfig, data: Dataset | None) -> str | None:
    """Why `search.max_param_count` cannot hold for this space, or why a `param_count` objective
    cannot be known (None: neither).

    The built-in MLP: the smallest architecture the space gives is over the budget. A user's
    LightningModule: the smallest count of `module_count_range` is over it. A training function:
    its count is unknown before it trains (and unknown after: it is never counted).
    """
    if not counts_parameters(cfg):
        return None
    limit = cfg.search.max_param_count
    spec = TrialSpec.from_config(cfg)
    problem = _training_function_objective_problem(cfg, spec)
    if problem is not None or limit is None:
        return problem
    try:
        param_counter(spec, data)
    except BudgetError as exc:
        return str(exc)
    if spec.user is not None:
        counts = module_count_range(cfg, data)
        if counts is None or not counts.complete or counts.low <= limit:
            return None
        return (
            f"search.max_param_count: {limit:,} is below the smallest architecture of the space: "
            f"{spec.user.module} has {counts.text()}"
        )
    if data is None:
        return None
    low, high = param_count_range(cfg, data)
    if low > limit:
        return (
            f"search.max_param_count: {limit:,} is below the smallest architecture of the space "
            f"({low:,} parameters; the space spans {low:,} to {high:,})"
        )
    return None
