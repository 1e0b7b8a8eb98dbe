"""Per-layer weight summaries as trial metrics: mean, std and the fraction of weights near zero.

MLflow's compare view charts metrics across runs but shows no histogram side by side, so each
trial logs, per weight tensor of more than one dimension (a layer's weights or kernels, not its
bias), `weights/<name>/mean`, `weights/<name>/std` and `weights/<name>/near_zero` (the fraction
with |w| < `WEIGHT_NEAR_ZERO`), with the epoch's other metrics every `tracking.weight_summary_every`
epochs (`TrialGuard.logs_weights`) and at the trial's last epoch (`TrialLogger.finish`).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from hyperflow.components.names import WEIGHT_NEAR_ZERO

__all__ = ["weight_metrics"]

_STATS = ("mean", "std", "near_zero")


def weight_metrics(named: Iterable[tuple[str, torch.Tensor]]) -> dict[str, float]:
    """The summaries of every weight tensor with more than one dimension, as metric name -> value."""
    names: list[str] = []
    rows: list[torch.Tensor] = []
    with torch.no_grad():
        for name, tensor in named:
            if tensor.ndim < 2 or not tensor.is_floating_point():
                continue
            w = tensor.detach().float()
            rows.append(
                torch.stack([w.mean(), w.std(correction=0), (w.abs() < WEIGHT_NEAR_ZERO).float().mean()])
            )
            names.append(name)
        if not rows:
            return {}
        values = torch.stack(rows).cpu().tolist()  # one transfer for all layers
    return {
        f"weights/{name}/{stat}": float(v)
        for name, row in zip(names, values, strict=True)
        for stat, v in zip(_STATS, row, strict=True)
    }
