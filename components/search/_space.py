"""The search space: typed dimensions built from `search.space`, sampling and encoding."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from hyperflow.components.config import ChoiceSpec, ModelConfig
from hyperflow.components.config_checks import numeric_field_type

if TYPE_CHECKING:
    from hyperflow.components.config import ExperimentConfig

__all__ = ["Dimension", "SearchSpace", "params_key"]

Kind = Literal["real", "int", "categorical"]


def params_key(params: Mapping[str, Any]) -> str:
    """A canonical, hashable key for a parameter set (lists included), for de-duplication."""
    return json.dumps({k: _plain(v) for k, v in sorted(params.items())}, sort_keys=True)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and value == int(value) and abs(value) < 2**53:
        return float(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class Dimension:
    """One searched hyperparameter.

    `real` and `int` have `low`/`high` (inclusive) and `log`; `categorical` has `choices`, which
    may be lists (`hidden_layers`) and are encoded by index wherever an index is needed.
    """

    name: str
    kind: Kind
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple[Any, ...] = field(default=())

    def contains(self, value: Any) -> bool:
        if self.kind == "categorical":
            return self.index_of(value) is not None
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            return False
        if self.kind == "int" and float(value) != int(value):
            return False
        return bool(self.low <= value <= self.high)

    def index_of(self, value: Any) -> int | None:
        """The index of a categorical value, comparing lists and tuples alike."""
        plain = _plain(value)
        for i, choice in enumerate(self.choices):
            if _plain(choice) == plain:
                return i
        return None

    def sample(self, rng: np.random.Generator) -> Any:
        """A uniform draw (log-uniform where `log`)."""
        if self.kind == "categorical":
            return self.choices[int(rng.integers(len(self.choices)))]
        return self.from_unit(float(rng.random()))

    def to_unit(self, value: Any) -> float:
        """Map a value into [0, 1] (log-scaled where `log`; a categorical gives its index's bin)."""
        if self.kind == "categorical":
            idx = self.index_of(value)
            if idx is None:
                raise ValueError(f"{value!r} is not a choice of {self.name}")
            return (idx + 0.5) / len(self.choices)
        if self.kind == "int":  # the centre of the value's bin in from_unit
            if self.log:
                span = math.log(self.high + 1) - math.log(self.low)
                return (math.log(value + 0.5) - math.log(self.low)) / span
            return (float(value) - self.low + 0.5) / (self.high - self.low + 1)
        if self.high == self.low:
            return 0.5
        if self.log:
            return (math.log(value) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        return (float(value) - self.low) / (self.high - self.low)

    def from_unit(self, u: float) -> Any:
        """Inverse of `to_unit`: a value of this dimension's type for u in [0, 1]."""
        u = min(max(u, 0.0), 1.0)
        if self.kind == "categorical":
            return self.choices[min(int(u * len(self.choices)), len(self.choices) - 1)]
        if self.kind == "int":
            # Floor over [low, high + 1) so that every integer, the end points included, is as likely.
            if self.log:
                span = math.log(self.high + 1) - math.log(self.low)
                x = math.exp(math.log(self.low) + u * span)
            else:
                x = self.low + u * (self.high - self.low + 1)
            return int(min(max(math.floor(x), self.low), self.high))
        if self.log:
            x = math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        else:
            x = self.low + u * (self.high - self.low)
        return float(min(max(x, self.low), self.high))

    def grid(self, points: int) -> list[Any]:
        """The values a grid takes along this dimension."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.kind == "int":
            count = int(self.high - self.low) + 1
            if count <= points:
                return list(range(int(self.low), int(self.high) + 1))
            raw = (
                np.geomspace(self.low, self.high, points)
                if self.log
                else np.linspace(self.low, self.high, points)
            )
            return sorted({round(float(v)) for v in raw})
        if self.low == self.high:
            return [float(self.low)]
        raw = (
            np.geomspace(self.low, self.high, points)
            if self.log
            else np.linspace(self.low, self.high, points)
        )
        return [float(v) for v in raw]

    def coerce(self, value: Any) -> Any:
        """The canonical Python value: int for int, float for real, the choice itself for categorical."""
        if self.kind == "categorical":
            idx = self.index_of(value)
            if idx is None:
                raise ValueError(f"{value!r} is not a choice of {self.name}")
            return self.choices[idx]
        if self.kind == "int":
            return round(float(value))
        return float(value)


class SearchSpace:
    """An ordered collection of dimensions, in the order of `search.space`."""

    def __init__(self, dimensions: Iterable[Dimension]) -> None:
        self.dimensions: tuple[Dimension, ...] = tuple(dimensions)
        names = [d.name for d in self.dimensions]
        if len(set(names)) != len(names):
            raise ValueError("dimension names must be unique")

    @classmethod
    def from_config(cls, cfg: ExperimentConfig) -> SearchSpace:
        """Build the space from a validated config; int fields (and `type: int`) give int dims."""
        dims: list[Dimension] = []
        for name, spec in cfg.search.space.items():
            if isinstance(spec, ChoiceSpec):
                dims.append(Dimension(name, "categorical", choices=tuple(spec.choices)))
                continue
            is_int = spec.type == "int" or (
                spec.type is None and numeric_field_type(ModelConfig.model_fields, name) is int
            )
            dims.append(
                Dimension(
                    name,
                    "int" if is_int else "real",
                    low=int(spec.low) if is_int else float(spec.low),
                    high=int(spec.high) if is_int else float(spec.high),
                    log=spec.log,
                )
            )
        return cls(dims)

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.dimensions]

    def __len__(self) -> int:
        return len(self.dimensions)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.dimensions)

    def __getitem__(self, name: str) -> Dimension:
        for d in self.dimensions:
            if d.name == name:
                return d
        raise KeyError(name)

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        return {d.name: d.sample(rng) for d in self.dimensions}

    def contains(self, params: Mapping[str, Any]) -> bool:
        return set(params) == set(self.names) and all(d.contains(params[d.name]) for d in self.dimensions)

    def coerce(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Canonical values for a full parameter set; raises naming an unknown or missing key."""
        missing = [n for n in self.names if n not in params]
        extra = [k for k in params if k not in self.names]
        if missing or extra:
            raise ValueError(f"parameters do not match the space (missing {missing}, unknown {extra})")
        return {d.name: d.coerce(params[d.name]) for d in self.dimensions}

    def encode(self, params: Mapping[str, Any]) -> list[Any]:
        """A point as a list in dimension order, categoricals as their index (for skopt)."""
        out: list[Any] = []
        for d in self.dimensions:
            if d.kind == "categorical":
                idx = d.index_of(params[d.name])
                if idx is None:
                    raise ValueError(f"{params[d.name]!r} is not a choice of {d.name}")
                out.append(idx)
            elif d.kind == "int":
                out.append(int(params[d.name]))
            else:
                out.append(float(params[d.name]))
        return out

    def decode(self, point: Sequence[Any]) -> dict[str, Any]:
        """Inverse of `encode`: plain Python values (int, float or the choice itself)."""
        out: dict[str, Any] = {}
        for d, v in zip(self.dimensions, point, strict=True):
            if d.kind == "categorical":
                out[d.name] = d.choices[int(v)]
            elif d.kind == "int":
                out[d.name] = int(v)
            else:
                out[d.name] = float(v)
        return out

    def complete(self, partial: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
        """Fill the dimensions a partial point leaves out (e.g. an initial point) from `defaults`."""
        full = {n: partial[n] if n in partial else defaults[n] for n in self.names}
        return self.coerce(full)

    def grid_size(self, points_per_dimension: int) -> int:
        return int(np.prod([len(d.grid(points_per_dimension)) for d in self.dimensions], dtype=np.int64))
