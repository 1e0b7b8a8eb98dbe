"""`search.max_param_count`: an architecture's parameter count before it trains, and the budget check."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from hyperflow.components.adapters import adapter_for
from hyperflow.components.architecture import hidden_layer_sizes
from hyperflow.components.describe import param_count_range
from hyperflow.components.model import expected_param_count, param_count
from hyperflow.components.search import ParamCounts, uses_ehvi
from hyperflow.components.search._space import params_key
from hyperflow.components.trial import TrialSpec

if TYPE_CHECKING:
    from hyperflow.components.config import ExperimentConfig
    from hyperflow.components.data import Dataset
    from hyperflow.components.search import Strategy

__all__ = ["BudgetError", "apply_param_budget", "budget_problem", "param_counter", "param_counts"]


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


def budget_problem(cfg: ExperimentConfig, data: Dataset | None) -> str | None:
    """Why `search.max_param_count` cannot hold for this space (None: it can, or it is not set).

    The built-in MLP: the smallest architecture the space gives is over the budget. A training
    function: its count is unknown before it trains. A user's module is checked trial by trial.
    """
    limit = cfg.search.max_param_count
    if limit is None:
        return None
    spec = TrialSpec.from_config(cfg)
    try:
        param_counter(spec, data)
    except BudgetError as exc:
        return str(exc)
    if spec.user is not None or data is None:
        return None
    low, high = param_count_range(cfg, data)
    if low > limit:
        return (
            f"search.max_param_count: {limit:,} is below the smallest architecture of the space "
            f"({low:,} parameters; the space spans {low:,} to {high:,})"
        )
    return None
