"""What `hyperflow validate` prints: the resolved config, the search space, sizes and ranges."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from hyperflow.components.fingerprint import config_yaml
from hyperflow.components.model import expected_param_count
from hyperflow.components.search import SearchSpace
from hyperflow.components.usercode import describe_user_code

if TYPE_CHECKING:
    from hyperflow.components.config import ExperimentConfig
    from hyperflow.components.data import Dataset

__all__ = ["describe_config", "param_count_range"]


def param_count_range(cfg: ExperimentConfig, data: Dataset) -> tuple[int, int]:
    """The smallest and largest parameter count over the searched architectures (built-in MLP)."""
    space = cfg.search.space
    layers_options: list[Any] = [cfg.model.hidden_layers]
    bn_options: list[Any] = [cfg.model.batch_norm]
    if "hidden_layers" in space:
        layers_options = list(getattr(space["hidden_layers"], "choices", layers_options))
    if "batch_norm" in space:
        bn_options = list(getattr(space["batch_norm"], "choices", bn_options))
    counts = [
        expected_param_count(data.n_features, list(layers), data.n_outputs, bool(bn))
        for layers, bn in itertools.product(layers_options, bn_options)
    ]
    return min(counts), max(counts)


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
    discrete = all(d.kind != "real" for d in space)
    points = space.grid_size(cfg.search.grid.points_per_dimension)
    if cfg.search.strategy == "grid":
        lines.append(f"grid points: {points} (points_per_dimension {cfg.search.grid.points_per_dimension})")
        if points < cfg.search.n_trials:
            lines.append(
                f"  the grid ends after {points} trials, before search.n_trials ({cfg.search.n_trials})"
            )
    elif discrete:
        lines.append(f"distinct points: {points}")
    else:
        lines.append("distinct points: unbounded (real dimensions)")
    if cfg.model.module or cfg.data.module:
        lines.extend(describe_user_code(cfg))
    if data is not None:
        lines.append(
            f"data: {data.name} ({data.task}), {len(data.X_train)}/{len(data.X_val)}/{len(data.X_test)} "
            f"rows train/val/test, {data.n_features} features, {data.n_outputs} outputs"
        )
        if not cfg.model.module:
            low, high = param_count_range(cfg, data)
            lines.append(f"parameters: {low:,}" + (f" to {high:,}" if high != low else ""))
    lines.append(
        f"search: {cfg.search.strategy}, {cfg.search.n_trials} trials, {cfg.search.n_parallel} in parallel, "
        f"{cfg.search.mode} {cfg.search.metric}; early stopping: {cfg.early_stopping.kind}"
    )
    if cfg.early_stopping.kind in ("asha", "hyperband"):
        from hyperflow.components.curves import make_stop_rule

        rule = make_stop_rule(cfg)
        lines.append(
            f"  rungs at {', '.join(map(str, rule.rungs))} epochs; the top 1/{rule.reduction_factor} at a rung go on"
            + (
                f"; {rule.n_brackets} brackets, bracket b judging from rung b"
                if rule.kind == "hyperband"
                else ""
            )
        )
    return "\n".join(lines)
