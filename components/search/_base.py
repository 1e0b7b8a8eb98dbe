"""The ask/tell interface every search strategy implements, and the bookkeeping they share."""

from __future__ import annotations

import abc
import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np

from hyperflow.components.names import COMPLETED, FAILED, PRUNED, FinishedState, Mode
from hyperflow.components.search._space import SearchSpace, params_key

__all__ = ["Observation", "Proposer", "Strategy", "StrategyOptions", "derive_seed"]

# propose(position, is_free) -> a new point, or None when there is none left
Proposer = Callable[[int, Callable[[Mapping[str, Any]], bool]], "dict[str, Any] | None"]


def derive_seed(*parts: int | str) -> int:
    """A 31-bit seed derived from its parts: the same parts always give the same seed."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


@dataclass(frozen=True)
class Observation:
    """One told trial. `value` is the metric as reported (None for a failed trial).

    `predicted`, `epochs` and `max_epochs` are what the study knows of a trial that may have been
    stopped early: the stop rule's predicted final value of the metric (curve_fit), the epochs it
    trained and the epochs it would have trained. None where unknown.
    """

    params: dict[str, Any]
    value: float | None
    state: FinishedState
    objectives: tuple[float, ...] | None = None  # every objective's value, several objectives only
    predicted: float | None = None
    epochs: int | None = None
    max_epochs: int | None = None


class StrategyOptions(TypedDict, total=False):
    """The keyword arguments every strategy takes: what `Strategy.__init__` takes besides the space."""

    mode: Mode
    seed: int
    initial_points: Sequence[Mapping[str, Any]]


class Strategy(abc.ABC):
    """Ask for parameter sets, tell their outcomes.

    The base class owns what all strategies share: initial points served first, the pending set
    (asked, not yet told) so that parallel asks never repeat a point, the ordered history of
    outcomes, and `best` (completed trials only; pruned and failed trials never count).

    Subclasses implement `_suggest(n)` and may override `_observe` / `_observe_failed`. They see
    values as losses (`_loss(value)`: lower is better whatever `mode` is) and must never be given a
    NaN. Their suggestions must depend only on the seed and the told history (and the pending set),
    not on how many asks came before, so that a strategy rebuilt by telling it a recorded history
    suggests what the original would have.
    """

    name: str = "base"

    def __init__(
        self,
        space: SearchSpace,
        *,
        mode: Mode = "max",
        seed: int = 0,
        initial_points: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', not {mode!r}")
        self.space = space
        self.mode = mode
        self.seed = int(seed)
        self.history: list[Observation] = []
        self._pending: dict[str, dict[str, Any]] = {}
        self._seen: set[str] = set()
        self._initial = [space.coerce(p) for p in initial_points]
        # Several objectives (`search.objectives`): their modes, the first the primary's (= mode).
        self.objective_modes: tuple[Mode, ...] = (mode,)
        # `search.max_param_count`: a point for which `feasible` is false is never asked (see _is_new).
        self.feasible: Callable[[Mapping[str, Any]], bool] | None = None
        self.infeasible: set[str] = set()  # keys of the candidates ruled out, for n_candidates_infeasible
        self._feasible_keys: set[str] = set()

    # ---------------------------------------------------------------- public interface

    def ask(self, n: int = 1) -> list[dict[str, Any]]:
        """Up to `n` new parameter sets, distinct from each other and from every pending one.

        Fewer than `n` (possibly none) only when the strategy is exhausted (a finished grid).
        """
        if n < 1:
            return []
        out: list[dict[str, Any]] = []
        while self._initial and len(out) < n:
            point = self._initial.pop(0)
            key = params_key(point)
            if not self._is_new(point):
                continue
            self._pending[key] = point
            out.append(point)
        if len(out) < n:
            for point in self._suggest(n - len(out)):
                point = self.space.coerce(point)
                key = params_key(point)
                if key in self._pending or not self._is_feasible(point, key):
                    continue
                self._pending[key] = point
                out.append(point)
        return out

    def tell(
        self,
        params: Mapping[str, Any],
        value: float,
        *,
        pruned: bool = False,
        objectives: Sequence[float] | None = None,
        predicted: float | None = None,
        epochs: int | None = None,
        max_epochs: int | None = None,
    ) -> None:
        """Record a finished trial's value (the metric at its last epoch).

        A pruned trial is told to the optimiser too (how, is the strategy's choice: bayes's
        `pruned` policy) but it never becomes `best`. A value that is not finite is a failure (see
        `tell_failed`). With several objectives, `objectives` holds every objective's value (the
        first is `value`); a strategy that searches them (`_observe_objectives`) is given them all
        as losses, the others the primary's. `predicted` (the stop rule's predicted final value of
        the metric, None if it made none), `epochs` (trained) and `max_epochs` (the trial's budget)
        are kept in the history as given; a value that is not finite or positive counts as unknown.
        """
        point = self.space.coerce(params)
        if value is None or not math.isfinite(float(value)):
            self.tell_failed(point)
            return
        self._forget_pending(point)
        vector = None
        if objectives is not None and len(self.objective_modes) > 1:
            vector = tuple(float(v) for v in objectives)
            if len(vector) != len(self.objective_modes) or not all(math.isfinite(v) for v in vector):
                vector = None  # an objective missing: the trial is told by its primary value only
        obs = Observation(
            point,
            float(value),
            PRUNED if pruned else COMPLETED,
            vector,
            predicted=float(predicted) if predicted is not None and math.isfinite(float(predicted)) else None,
            epochs=int(epochs) if epochs is not None and epochs > 0 else None,
            max_epochs=int(max_epochs) if max_epochs is not None and max_epochs > 0 else None,
        )
        self.history.append(obs)
        self._seen.add(params_key(point))
        if vector is not None:
            self._observe_objectives(point, self.objective_losses(vector))
        else:
            self._observe(point, self._loss(float(value)))

    def tell_failed(self, params: Mapping[str, Any]) -> None:
        """Record a failed trial: the search goes on and no NaN reaches the optimiser."""
        point = self.space.coerce(params)
        self._forget_pending(point)
        self.history.append(Observation(point, None, FAILED))
        self._seen.add(params_key(point))
        self._observe_failed(point)

    def pend(self, params: Mapping[str, Any]) -> None:
        """Take a point as asked without asking (resume: a trial the study asked before it stopped).

        The strategy is then in the state the ask left it in: the point is pending, and an initial
        point it was is not served again.
        """
        point = self.space.coerce(params)
        key = params_key(point)
        self._initial = [p for p in self._initial if params_key(p) != key]
        self._pending[key] = point

    def release(self, params: Mapping[str, Any]) -> None:
        """Give back an asked point that was never run (an interrupted trial): it may be asked again."""
        point = self.space.coerce(params)
        if self._pending.pop(params_key(point), None) is not None:
            self.requeue(point)

    def requeue(self, params: Mapping[str, Any]) -> None:
        """Ask this point again before anything new (a trial that was interrupted, not finished)."""
        point = self.space.coerce(params)
        if params_key(point) not in self._seen:
            self._initial.insert(0, point)

    @property
    def best(self) -> Observation | None:
        """The best completed trial so far (pruned and failed trials never count)."""
        done = [o for o in self.history if o.state == COMPLETED and o.value is not None]
        if not done:
            return None
        return min(done, key=lambda o: self._loss(o.value))  # type: ignore[arg-type]

    @property
    def exhausted(self) -> bool:
        """True when no new point can be suggested (only a grid runs out)."""
        return False

    @property
    def pending(self) -> list[dict[str, Any]]:
        return list(self._pending.values())

    @property
    def n_told(self) -> int:
        return len(self.history)

    # ---------------------------------------------------------------- for subclasses

    def _loss(self, value: float) -> float:
        return -value if self.mode == "max" else value

    def objective_losses(self, values: Sequence[float]) -> tuple[float, ...]:
        """Objective values as losses (lower is better for each), by `objective_modes`."""
        return tuple(-v if m == "max" else v for v, m in zip(values, self.objective_modes, strict=True))

    def _worst_loss(self) -> float | None:
        """The worst loss told so far (what a failure is told as, where a value is needed)."""
        losses = [self._loss(o.value) for o in self.history if o.value is not None]
        return max(losses) if losses else None

    def _rng(self, *parts: int | str) -> np.random.Generator:
        """A generator seeded from the study seed and `parts`: draws depend on position, not on calls."""
        return np.random.default_rng(derive_seed(self.name, self.seed, *parts))

    def _is_new(self, point: Mapping[str, Any]) -> bool:
        key = params_key(point)
        return key not in self._seen and key not in self._pending and self._is_feasible(point, key)

    def _is_feasible(self, point: Mapping[str, Any], key: str) -> bool:
        """Whether `feasible` lets the point through (each distinct point is checked once)."""
        if self.feasible is None or key in self._feasible_keys:
            return True
        if key in self.infeasible:
            return False
        ok = bool(self.feasible(point))
        (self._feasible_keys if ok else self.infeasible).add(key)
        return ok

    def _collect(self, n: int, propose: Proposer) -> list[dict[str, Any]]:
        """Up to `n` points from `propose(position, is_free)`, stopping at the first None.

        `position` is the suggestion's place in the study (trials told plus pending, plus its index
        here), for a position-seeded generator; `is_free(point)` holds for a point that is neither
        told, pending nor already collected.
        """
        start = self.n_told + len(self._pending)
        taken: set[str] = set()

        def is_free(point: Mapping[str, Any]) -> bool:
            return self._is_new(point) and params_key(point) not in taken

        out: list[dict[str, Any]] = []
        for i in range(n):
            point = propose(start + i, is_free)
            if point is None:
                break
            out.append(point)
            taken.add(params_key(point))
        return out

    @abc.abstractmethod
    def _suggest(self, n: int) -> list[dict[str, Any]]:
        """Return up to n new points, not pending and not yet seen where the space allows."""

    def _observe(self, params: dict[str, Any], loss: float) -> None:  # noqa: B027 - optional hook
        """Take a finished trial's loss (lower is better)."""

    def _observe_objectives(self, params: dict[str, Any], losses: tuple[float, ...]) -> None:
        """Take a finished trial's objectives as losses; by default only the primary counts."""
        self._observe(params, losses[0])

    def _observe_failed(self, params: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Take a failed trial; the default ignores it (grid and random just move on)."""

    def _forget_pending(self, params: Mapping[str, Any]) -> None:
        self._pending.pop(params_key(params), None)
