"""Heuristic starts: `search.heuristic_start: lr_range_test` narrows the learning rate before the search."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from hyperflow.components.config import validate_config
from hyperflow.components.lr_find import (
    NarrowedRange,
    configured_bounds,
    log_range_test,
    narrow,
    range_test,
    read_narrowed,
)

if TYPE_CHECKING:
    from hyperflow.components.config import ExperimentConfig
    from hyperflow.components.data import Dataset
    from hyperflow.components.tracking import StudyTracker

__all__ = ["describe_start", "narrowed_config", "start_config"]


def start_config(
    cfg: ExperimentConfig, data: Dataset | None, tracker: StudyTracker, study_run_id: str
) -> ExperimentConfig:
    """The config the study's strategy searches: `cfg`, or its heuristic start applied.

    `lr_range_test`: the range test's result recorded in the study run is used when there is one
    (a resumed study never runs it again); otherwise the test runs now and is recorded (params
    `lr_range_test.*`, `plots/lr_range_test.png`, `lr_range_test.json`). A failure before it is
    recorded ends the study run as KILLED, so that it can be resumed.
    """
    if cfg.search.heuristic_start != "lr_range_test":
        return cfg
    narrowed = read_narrowed(tracker.client.get_run(study_run_id).data.params)
    if narrowed is None:
        try:
            if data is None:
                raise ValueError("search.heuristic_start: lr_range_test needs the built-in data")
            result = range_test(cfg, data)
            narrowed = narrow(result.suggestion, configured_bounds(cfg))
            log_range_test(tracker.client, study_run_id, result, narrowed)
        except BaseException:
            with contextlib.suppress(Exception):
                tracker.end_run(study_run_id, "KILLED")
            raise
    return narrowed_config(cfg, narrowed)


def narrowed_config(cfg: ExperimentConfig, narrowed: NarrowedRange) -> ExperimentConfig:
    """`cfg` with `search.space.learning_rate` narrowed and the suggestion as the first initial point.

    The first point takes the other values of the first configured initial point, else the model
    values (clipped into a range; the first choice where the model's is not among the choices);
    configured points, and the model's learning_rate where they leave it out, are clipped into the
    narrowed range.
    """
    raw = cfg.model_dump(mode="json")
    search = raw["search"]
    spec = search["space"]["learning_rate"]
    spec["low"], spec["high"] = narrowed.low, narrowed.high

    def clip(value: Any) -> float:
        return min(max(float(value), narrowed.low), narrowed.high)

    points = [
        {**p, "learning_rate": clip(p.get("learning_rate", cfg.model.learning_rate))}
        for p in search["initial_points"]
    ]
    if narrowed.suggestion is not None:
        first = {**(points[0] if points else {}), "learning_rate": clip(narrowed.suggestion)}
        points.insert(0, _complete(first, cfg))
    search["initial_points"] = points
    return validate_config(raw, "the heuristic start's narrowed config")


def _complete(point: dict[str, Any], cfg: ExperimentConfig) -> dict[str, Any]:
    """Every searched value of a point: the model's where the point leaves it out, clipped into a
    range; a model value that is not among a dimension's choices gives way to the first choice."""
    from hyperflow.components.search import SearchSpace

    defaults = cfg.model.point_defaults()
    out = dict(point)
    for d in SearchSpace.from_config(cfg):
        if d.name in out:
            continue
        value = defaults.get(d.name)
        if d.kind == "categorical":
            out[d.name] = value if value is not None and d.contains(value) else d.choices[0]
        else:
            value = (d.low + d.high) / 2 if value is None else min(max(value, d.low), d.high)
            out[d.name] = d.coerce(value)
    return out


def describe_start(cfg: ExperimentConfig, params: dict[str, str]) -> str | None:
    """One line on the heuristic start a study run records (None: it has none)."""
    if cfg.search.heuristic_start != "lr_range_test":
        return None
    narrowed = read_narrowed(params)
    if narrowed is None:
        return None
    low, high = narrowed.bounds
    found = (
        "no suggestion" if narrowed.raw_suggestion is None else f"suggestion {narrowed.raw_suggestion:.4g}"
    )
    text = (
        f"LR range test: {found}; learning_rate searched in [{narrowed.low:.4g}, {narrowed.high:.4g}] "
        f"of [{low:.4g}, {high:.4g}]"
    )
    return text + (f" ({narrowed.note})" if narrowed.note else "")
