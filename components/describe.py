"""What `hyperflow validate` prints: the resolved config, the search space, sizes and ranges."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from hyperflow.components.architecture import (
    DEFAULT_DEPTH,
    DEFAULT_WIDTH,
    DEFAULT_WIDTH_DECAY,
    hidden_layer_sizes,
)
from hyperflow.components.config import ChoiceSpec
from hyperflow.components.fingerprint import config_yaml
from hyperflow.components.model import expected_param_count
from hyperflow.components.search import SearchSpace, uses_ehvi
from hyperflow.components.search._random import finite_size
from hyperflow.components.usercode import describe_user_code

if TYPE_CHECKING:
    from hyperflow.components.config import ExperimentConfig
    from hyperflow.components.data import Dataset

__all__ = ["architectures", "describe_config", "param_count_range"]


def _options(cfg: ExperimentConfig, key: str) -> list[Any]:
    """The values a model field takes over the space: its choices, every int of a range (the ends
    of a real one, enough where the count is monotonic in it), or its fixed value."""
    spec = cfg.search.space.get(key)
    if spec is None:
        return [getattr(cfg.model, key)]
    if isinstance(spec, ChoiceSpec):
        return list(spec.choices)
    if key == "depth":  # not monotonic: a narrow extra layer can shrink the count
        return list(range(int(spec.low), int(spec.high) + 1))
    return [spec.low, spec.high]


def architectures(cfg: ExperimentConfig) -> list[list[int]]:
    """Every hidden-layer list the searched architecture keys can give (built-in MLP), distinct."""
    if "hidden_layers" in cfg.search.space or cfg.model.hidden_layers is not None:
        return [list(h) for h in _options(cfg, "hidden_layers")]
    combos = itertools.product(*(_options(cfg, k) for k in ("depth", "width", "width_decay")))
    out: list[list[int]] = []
    for depth, width, decay in combos:
        layers = hidden_layer_sizes(None, depth, None if width is None else round(width), decay)
        if layers not in out:
            out.append(layers)
    return out


def param_count_range(cfg: ExperimentConfig, data: Dataset) -> tuple[int, int]:
    """The smallest and largest parameter count over the searched architectures (built-in MLP)."""
    counts = [
        expected_param_count(data.n_features, layers, data.n_outputs, bool(bn))
        for layers, bn in itertools.product(architectures(cfg), _options(cfg, "batch_norm"))
    ]
    return min(counts), max(counts)


def _architecture_text(cfg: ExperimentConfig) -> str:
    model, space = cfg.model, cfg.search.space
    if "hidden_layers" in space:
        return "hidden_layers searched"
    if model.hidden_layers is not None:
        return f"hidden_layers {model.hidden_layers}"
    defaults = {"depth": DEFAULT_DEPTH, "width": DEFAULT_WIDTH, "width_decay": DEFAULT_WIDTH_DECAY}
    parts = []
    for key, default in defaults.items():
        value = getattr(model, key)
        parts.append(f"{key} searched" if key in space else f"{key} {default if value is None else value}")
        if key not in space and value is None:
            parts[-1] += " (unset)"
    layers = architectures(cfg)
    shown = (
        f"hidden_layers {layers[0]}"
        if len(layers) == 1
        else f"{len(layers)} architectures, {layers[0]} to {layers[-1]}"
    )
    return f"{shown} from {', '.join(parts)}"


def _objectives_text(cfg: ExperimentConfig) -> str:
    search = cfg.search
    names = ", ".join(f"{o.metric} ({o.mode})" for o in search.objectives)
    if search.strategy == "bayes":
        how = "EHVI, the count known before training" if uses_ehvi(cfg) else "ParEGO's scalarisation"
    elif search.strategy == "genetic":
        how = "NSGA-II"
    else:
        how = f"{search.strategy} search, the front recorded"
    return f"objectives: {names}, the first the primary; searched by {how}; champion: {search.select}"


def describe_config(cfg: ExperimentConfig, data: Dataset | None) -> str:
    """A readable report of a valid config."""
    space = SearchSpace.from_config(cfg)
    lines = ["# resolved config", config_yaml(cfg).rstrip(), "", "# search space"]
    width = max((len(d.name) for d in space), default=4)
    for d in space:
        if d.kind == "categorical":
            desc = f"one of {list(d.choices)}"
        else:
            desc = f"{d.kind:4} [{d.low:g}, {d.high:g}]" + (" log" if d.log else "")
        lines.append(f"  {d.name:<{width}}  {desc}")
    if not len(space):
        lines.append("  (nothing searched: every trial trains the fixed model)")
    n_trials = cfg.search.n_trials
    if cfg.search.strategy == "grid":
        points = space.grid_size(cfg.search.grid.points_per_dimension)
        lines.append(f"grid points: {points} (points_per_dimension {cfg.search.grid.points_per_dimension})")
        if points < n_trials:
            lines.append(f"  the grid ends after {points} trials, before search.n_trials ({n_trials})")
    else:
        # What random, bayes and genetic sample from: every int of a range, a one-point range once.
        size = finite_size(space)
        lines.append(f"distinct points: {'unbounded (real dimensions)' if size is None else size}")
        if size is not None and size < n_trials:
            lines.append(
                f"  the search ends after {size} trial{'s' * (size != 1)}, when every point has been tried, before "
                f"search.n_trials ({n_trials})"
            )
    if cfg.model.module or cfg.data.module:
        from hyperflow.components.budget import counts_parameters  # budget imports this module

        counted = counts_parameters(cfg)
        lines.extend(describe_user_code(cfg, (lambda: _module_counts_text(cfg, data)) if counted else None))
    if data is not None:
        lines.append(
            f"data: {data.name} ({data.task}), {len(data.X_train)}/{len(data.X_val)}/{len(data.X_test)} "
            f"rows train/val/test, {data.n_features} features, {data.n_outputs} outputs"
        )
        if data.preparation is not None and data.preparation.spec["layout"] == "table":
            lines.append(f"prepared: {preparation_text(data.preparation.spec)}")
        if not cfg.model.module:
            lines.append(f"architecture: {_architecture_text(cfg)}")
            low, high = param_count_range(cfg, data)
            lines.append(f"parameters: {low:,}" + (f" to {high:,}" if high != low else ""))
    lines.append(
        f"search: {cfg.search.strategy}, {cfg.search.n_trials} trials, {cfg.search.n_parallel} in parallel, "
        f"{cfg.search.mode} {cfg.search.metric}; early stopping: {cfg.early_stopping.kind}"
    )
    if cfg.search.objectives:
        lines.append(f"  {_objectives_text(cfg)}")
    if (idle := _idle_stop_rule_text(cfg)) is not None:
        lines.append(f"  {idle}")
    if cfg.early_stopping.kind in ("asha", "hyperband"):
        from hyperflow.components.curves import make_stop_rule

        rule = make_stop_rule(cfg)
        lines.append(
            f"  rungs at {', '.join(map(str, rule.rungs))} epochs; a trial goes on when in the best "
            f"1/{rule.reduction_factor} of the values recorded at its rung"
            + (
                f"; {rule.n_brackets} brackets, bracket b judging from rung b"
                if rule.kind == "hyperband"
                else ""
            )
        )
    return "\n".join(lines)


def _idle_stop_rule_text(cfg: ExperimentConfig) -> str | None:
    """A warning where median or curve_fit can never stop a trial: it judges from min_epochs on, and
    never at a trial's last epoch, so no trial is long enough (None: some trial is)."""
    es = cfg.early_stopping
    if es.kind not in ("median", "curve_fit"):
        return None
    longest, where = cfg.epoch_budget(), "model.max_epochs"
    if "max_epochs" in cfg.search.space:
        where = "the largest value of search.space.max_epochs"
    if es.min_epochs < longest:
        return None
    return (
        f"{es.kind} can never stop a trial: early_stopping.min_epochs ({es.min_epochs}) is not below "
        f"{where} ({longest}), and a trial is never stopped at its last epoch"
    )


def preparation_text(spec: dict[str, Any]) -> str:
    """One line on what the preparation does: columns in, prepared features out, gaps, categories."""
    columns = spec["columns"]
    cats = [c for c in columns if c["kind"] == "categorical"]
    parts = [f"{len(columns)} columns -> {len(spec['features'])} features"]
    if cats:
        parts.append("one-hot " + ", ".join(f"{c['name']} ({len(c['categories'])})" for c in cats))
    if spec.get("n_imputed"):
        parts.append(f"{spec['n_imputed']} gaps filled (train median / most frequent)")
    if spec.get("n_dropped"):
        parts.append(f"{spec['n_dropped']} rows with gaps dropped")
    return "; ".join(parts)


def _module_counts_text(cfg: ExperimentConfig, data: Dataset | None) -> str:
    """A user's module's parameter counts over the space, built and counted (`module_count_range`)."""
    from hyperflow.components.budget import module_count_range  # budget imports this module

    counts = module_count_range(cfg, None if cfg.data.module else data)
    return counts.text() if counts is not None else "unknown (no point of the space builds the module)"
