"""The built-in MLP's hidden layers: `model.hidden_layers` as given, or `depth` / `width` / `width_decay`."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = [
    "ARCHITECTURE_KEYS",
    "DEFAULT_DEPTH",
    "DEFAULT_HIDDEN_LAYERS",
    "DEFAULT_WIDTH",
    "DEFAULT_WIDTH_DECAY",
    "hidden_layer_sizes",
]

# The built-in architecture when neither hidden_layers nor depth / width is given: [128, 64].
DEFAULT_DEPTH = 2
DEFAULT_WIDTH = 128
DEFAULT_WIDTH_DECAY = 0.5
DEFAULT_HIDDEN_LAYERS = (128, 64)
ARCHITECTURE_KEYS = ("depth", "width", "width_decay")


def hidden_layer_sizes(
    hidden_layers: Sequence[int] | None = None,
    depth: int | None = None,
    width: int | None = None,
    width_decay: float | None = None,
) -> list[int]:
    """Hidden layer widths: `hidden_layers` as given, else layer i of `depth` has round(width * width_decay**i).

    Unset values take the defaults (depth 2, width 128, width_decay 0.5: [128, 64]); halves round
    up and every layer keeps at least one unit.
    """
    if hidden_layers is not None:
        return [int(h) for h in hidden_layers]
    d = DEFAULT_DEPTH if depth is None else int(depth)
    w = DEFAULT_WIDTH if width is None else int(width)
    r = DEFAULT_WIDTH_DECAY if width_decay is None else float(width_decay)
    return [max(1, math.floor(w * r**i + 0.5)) for i in range(d)]
