"""Bayesian optimisation on scikit-optimize's surrogates, behind the ask/tell interface.

The GP with `acquisition: logEI` (the default) proposes through our acquisition step on skopt's
GP (`_gp.py`); every other combination goes through `skopt.Optimizer`.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import numpy as np
from skopt import Optimizer
from skopt.space import Categorical, Integer, Real, Space
from skopt.utils import normalize_dimensions
from threadpoolctl import threadpool_limits

from hyperflow.components.names import COMPLETED, FAILED, PRUNED
from hyperflow.components.search import _gp
from hyperflow.components.search._base import Observation, Strategy, derive_seed
from hyperflow.components.search._random import sample_new, space_exhausted
from hyperflow.components.search._space import Dimension, SearchSpace, params_key

__all__ = ["PRUNED_POLICIES", "BayesStrategy", "acquisition_settings"]

Surrogate = Literal["GP", "RF", "ET", "GBRT"]
Acquisition = Literal["logEI", "gp_hedge", "EI", "PI", "LCB"]
AcqOptimizer = Literal["auto", "sampling", "lbfgs"]
PrunedPolicy = Literal["last", "worst", "omit", "predicted", "discounted"]
PRUNED_POLICIES: tuple[PrunedPolicy, ...] = ("last", "worst", "omit", "predicted", "discounted")

# skopt's defaults: candidates sampled per acquisition, L-BFGS starts among the best of them.
_SKOPT_N_POINTS = 10_000
_SKOPT_N_RESTARTS = 5
# The `auto` policy's switch: beyond this many results, fewer candidates (see BayesStrategy).
_AUTO_SHORT_HISTORY = 50
_AUTO_N_POINTS = 2_000


def acquisition_settings(n_told: int) -> tuple[int, int]:
    """The `auto` policy: (candidate points, L-BFGS restarts) once `n_told` results are known.

    skopt's defaults while the history is short; from 50 results on, 2 000 candidates instead of
    10 000, still refined by L-BFGS. `BayesStrategy` gives the measurements behind it.
    """
    if n_told < _AUTO_SHORT_HISTORY:
        return _SKOPT_N_POINTS, _SKOPT_N_RESTARTS
    return _AUTO_N_POINTS, _SKOPT_N_RESTARTS


def _one_blas_thread(fitting: bool) -> contextlib.AbstractContextManager[object]:
    # A GP's matrices are at most a few hundred rows: BLAS threads only contend, with each other
    # and with the trials training beside the search loop (2.7x slower tells measured on 2 busy
    # cores). Entering the limit costs ~1 ms, so tells that fit nothing skip it.
    return threadpool_limits(limits=1, user_api="blas") if fitting else contextlib.nullcontext()


def _is_fixed(d: Dimension) -> bool:
    return len(d.choices) == 1 if d.kind == "categorical" else d.low == d.high


def _skopt_dimension(d: Dimension) -> Real | Integer | Categorical:
    if d.kind == "categorical":
        # By index: skopt hashes categories, which list-valued choices (hidden_layers) are not.
        return Categorical(list(range(len(d.choices))), name=d.name)
    prior = "log-uniform" if d.log else "uniform"
    if d.kind == "int":
        return Integer(int(d.low), int(d.high), prior=prior, name=d.name)
    return Real(float(d.low), float(d.high), prior=prior, name=d.name)


class BayesStrategy(Strategy):
    """Bayesian optimisation with a GP, random-forest or extra-trees surrogate (skopt).

    The default (`surrogate: GP`, `acquisition: logEI`) is ours on skopt's GP (`_gp.py`): tells
    only record; an ask fits the GP on the told history (failures as the worst loss, pruned
    trials as `pruned` says) and maximises log-EI, pending points believed at the GP's mean. Its
    suggestions are a function of (seed, history, pending) only. Everything below is about the
    skopt path (the GP with gp_hedge/EI/PI/LCB, RF, ET):

    - Initial design: until `n_initial_points` results have been told, points come from a
      scrambled Sobol sequence by position (both paths), not skopt's generator, so a resumed
      study does not replay trial 0.
    - After that skopt's model proposes; its generator is re-seeded from (seed, trials told) before
      every tell and ask, so a suggestion depends only on the told history.
    - Pending points (parallel asks) and `ask(n > 1)`: constant liar with skopt's `cl_min` lie (the
      best loss so far) on a copy of the optimiser, as `Optimizer.ask(n_points, "cl_min")` does;
      the pending points and the history are fitted in one go rather than one refit per lie.
    - A failure is told as the worst loss seen so far (held back until some value exists), never
      NaN. Pruned trials are told their last value.

    `acq_optimizer="auto"` keeps skopt's choice (L-BFGS for a GP, sampling for trees) and shrinks
    the candidate sample once the history is long (`acquisition_settings`). One GP tell + ask on
    the digits space (6 dimensions, 2 categorical, `gp_hedge`, before log-EI), one BLAS thread, on this
    project's 2-core machine, best of 3:

    ======  ==============  =================  =============  ============
    points  lbfgs (10 000)  sampling (10 000)  lbfgs (2 000)  GP fit alone
    ======  ==============  =================  =============  ============
    10      0.17 s          0.09 s             0.16 s         0.05 s
    50      0.38 s          0.26 s             0.28 s         0.14 s
    100     0.91 s          0.70 s             0.55 s         0.32 s
    200     2.10 s          1.96 s             1.21 s         0.81 s
    ======  ==============  =================  =============  ============

    Beyond the fit, the cost is predicting mean and std at every candidate for each of gp_hedge's
    three acquisition functions (0.5 s per function at 200 points); L-BFGS adds only short local
    refinements. So switching to "sampling" saves little (7% at 200 points), while cutting the
    candidates from 10 000 to 2 000 saves 40% and keeps the refinement. Over trials 50-100 of
    100-evaluation runs (3 seeds), 2 000 refined candidates matched skopt's defaults in quality
    (median gap to the optimum: Hartmann6 0.128 vs 0.128; a digits-like mixed space 3e-5 vs
    1.3e-4, where pure sampling reached 8e-4) and cut the strategy's time there by 35-50%.
    BLAS is limited to one thread while fitting: two threads on two busy cores made tells up to
    2.7x slower (and one 40-evaluation Branin run took 114 s instead of 3 s).
    """

    name = "bayes"

    def __init__(
        self,
        space: SearchSpace,
        *,
        mode: Literal["max", "min"] = "max",
        seed: int = 0,
        initial_points: Sequence[Mapping[str, Any]] = (),
        surrogate: Surrogate = "GP",
        acquisition: Acquisition = "logEI",
        n_initial_points: int = 8,
        acq_optimizer: AcqOptimizer = "auto",
        pruned: PrunedPolicy = "predicted",
        fit: _gp.FitSettings | None = None,
        ordinal: Mapping[str, Sequence[int]] | None = None,
    ) -> None:
        super().__init__(space, mode=mode, seed=seed, initial_points=initial_points)
        if n_initial_points < 1:
            raise ValueError(f"search.bayes.n_initial_points must be at least 1, not {n_initial_points}")
        if pruned not in PRUNED_POLICIES:
            raise ValueError(
                f"search.bayes.pruned must be one of {', '.join(PRUNED_POLICIES)}, not {pruned!r}"
            )
        self.surrogate = surrogate
        # logEI is ours and GP-only; the tree surrogates keep skopt's previous default.
        self.ours = surrogate == "GP" and acquisition == "logEI"
        self.acquisition: Acquisition = (
            "gp_hedge" if acquisition == "logEI" and not self.ours else acquisition
        )
        self.n_initial_points = n_initial_points
        self.acq_optimizer = acq_optimizer
        self.pruned = pruned
        self.fit_settings = fit or _gp.FitSettings()
        self._free = [i for i, d in enumerate(space.dimensions) if not _is_fixed(d)]
        # `ordinal`: categorical dimensions the surrogate sees as one ordered integer, by name:
        # their choices' indices, lowest first. Kept here as (rank of each choice, the order).
        self._ranks: dict[int, tuple[list[int], list[int]]] = {}
        for name, order in (ordinal or {}).items():
            i = space.names.index(name)
            if sorted(order) != list(range(len(space.dimensions[i].choices))):
                raise ValueError(f"ordinal[{name!r}] must order every choice index once, not {list(order)}")
            rank = [0] * len(order)
            for position, choice in enumerate(order):
                rank[choice] = position
            self._ranks[i] = (rank, [int(c) for c in order])
        # Single-valued dimensions stay out of skopt (its Real and Integer need low < high).
        self._fixed = {
            i: (0 if d.kind == "categorical" else d.low)
            for i, d in enumerate(space.dimensions)
            if _is_fixed(d)
        }
        # Failures told before any value exists: they are told as the worst value once one does.
        self._deferred: list[list[Any]] = []
        self.optimizer: Optimizer | None = self._build() if self._free and not self.ours else None
        # Ours: skopt's transform to [0, 1] (one-hot categoricals), one row per told trial.
        self._tspace: Space | None = None
        if self._free and self.ours:
            self._tspace = Space(normalize_dimensions([self._dimension(i) for i in self._free]))
        self._rows: list[np.ndarray] = []
        self._anchors: dict[int, np.ndarray] = {}
        self._posterior: tuple[int, _gp.Posterior] | None = None

    # ---------------------------------------------------------------- skopt plumbing

    def _dimension(self, i: int) -> Real | Integer | Categorical:
        d = self.space.dimensions[i]
        if i in self._ranks:
            return Integer(0, len(d.choices) - 1, name=d.name)
        return _skopt_dimension(d)

    def _build(self) -> Optimizer:
        dims = [self._dimension(i) for i in self._free]
        try:
            opt = Optimizer(
                dims,
                base_estimator=self.surrogate,
                n_initial_points=self.n_initial_points,
                acq_func=self.acquisition,
                acq_optimizer="auto" if self.acq_optimizer == "auto" else self.acq_optimizer,
                random_state=derive_seed(self.name, self.seed, "optimizer"),
                # skopt keeps every fitted model by default: a leak over a long study.
                model_queue_size=1,
            )
            if self.surrogate == "GBRT":
                self._check_surrogate(opt)
        except Exception as exc:
            if self.surrogate == "GBRT":
                raise ValueError(
                    "search.bayes.surrogate: GBRT does not work with the installed scikit-learn "
                    f"({type(exc).__name__}: {str(exc).splitlines()[0]}); use GP, RF or ET"
                ) from exc
            if "acq_optimizer" in str(exc):
                raise ValueError(
                    f"search.bayes.acq_optimizer: 'lbfgs' needs gradients, which the "
                    f"{self.surrogate} surrogate has not; use 'sampling' or 'auto'"
                ) from exc
            raise
        return opt

    def _check_surrogate(self, opt: Optimizer) -> None:
        # skopt's GBRT breaks in fit or predict on newer scikit-learn: find out now, not at trial 9.
        est = opt.base_estimator_
        x = np.asarray(opt.space.transform(opt.space.rvs(4, random_state=0)))
        est.fit(x, np.arange(4.0))
        est.predict(x, return_std=True)

    def _encode(self, params: Mapping[str, Any]) -> list[Any]:
        full = self.space.encode(params)
        out: list[Any] = []
        for i in self._free:
            d, v = self.space.dimensions[i], full[i]
            # A point from elsewhere (an initial point) may lie outside the bounds skopt checks.
            if d.kind == "int":
                v = int(min(max(v, d.low), d.high))
            elif d.kind == "real":
                v = float(min(max(v, d.low), d.high))
            elif i in self._ranks:
                v = self._ranks[i][0][int(v)]
            out.append(v)
        return out

    def _decode(self, x: Sequence[Any]) -> dict[str, Any]:
        x = [self._ranks[i][1][int(v)] if i in self._ranks else v for i, v in zip(self._free, x, strict=True)]
        values = {**self._fixed, **dict(zip(self._free, x, strict=True))}
        return self.space.decode([values[i] for i in range(len(self.space))])

    def _configure(self, opt: Optimizer, n_told: int) -> None:
        if self.acq_optimizer == "auto":
            opt.n_points, opt.n_restarts_optimizer = acquisition_settings(n_told)

    def _reseed(self, opt: Optimizer, *parts: int | str) -> None:
        opt.rng = np.random.RandomState(derive_seed(self.name, self.seed, *parts))

    def _tell_optimizer(self, xs: list[list[Any]], ys: list[float]) -> None:
        opt = self.optimizer
        assert opt is not None
        n_after = len(opt.Xi) + len(xs)
        self._configure(opt, n_after)
        self._reseed(opt, "tell", self.n_told)
        with warnings.catch_warnings(), _one_blas_thread(n_after >= self.n_initial_points):
            warnings.simplefilter("ignore")
            if len(xs) == 1:
                opt.tell(xs[0], ys[0])
            else:
                opt.tell(xs, ys)

    # ---------------------------------------------------------------- Strategy hooks

    @property
    def exhausted(self) -> bool:
        return space_exhausted(self)

    def _observe(self, params: dict[str, Any], loss: float) -> None:
        if self._tspace is not None:
            self._rows.append(self._transform(params))
            return
        if self.optimizer is None:
            return
        xs, ys = [*self._deferred, self._encode(params)], [loss]
        if self._deferred:
            worst = self._worst_loss()
            assert worst is not None  # this trial's value is in the history
            ys = [worst] * len(self._deferred) + ys
            self._deferred = []
        self._tell_optimizer(xs, ys)

    def _observe_failed(self, params: dict[str, Any]) -> None:
        if self._tspace is not None:
            self._rows.append(self._transform(params))
            return
        if self.optimizer is None:
            return
        worst = self._worst_loss()
        if worst is None:
            self._deferred.append(self._encode(params))
        else:
            self._tell_optimizer([self._encode(params)], [worst])

    def _suggest(self, n: int) -> list[dict[str, Any]]:
        start = self.n_told + len(self._pending)
        taken: set[str] = set()

        def is_free(point: Mapping[str, Any]) -> bool:
            return self._is_new(point) and params_key(point) not in taken

        opt = self.optimizer
        proposals: list[dict[str, Any] | None]
        if self._tspace is not None:
            if self._gp_data()[0].shape[0] < self.n_initial_points:
                proposals = [self._sobol(start + i) for i in range(n)]
            else:
                return self._suggest_ours(n, start, is_free, taken)
        elif opt is None or len(opt.Xi) < self.n_initial_points:
            proposals = [self._sobol(start + i) for i in range(n)] if opt is not None else [None] * n
        else:
            proposals = [self._decode(x) for x in self._ask_optimizer(opt, n)]

        out: list[dict[str, Any]] = []
        for i, proposal in enumerate(proposals):
            point = proposal
            if point is None or not is_free(point):
                # Initial design taken, or skopt repeated a point (small discrete spaces): sample.
                point = sample_new(self.space, self._rng("sample", start + i), is_free)
            if point is None:
                break
            out.append(point)
            taken.add(params_key(point))
        return out

    def _ask_optimizer(self, opt: Optimizer, n: int) -> list[list[Any]]:
        pending = [self._encode(p) for p in self._pending.values()]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if not pending and n == 1:
                self._reseed(opt, "ask", self.n_told)
                return [opt.ask()]
            with _one_blas_thread(True):
                return self._ask_with_liar(opt, pending, n)

    def _ask_with_liar(self, opt: Optimizer, pending: list[list[Any]], n: int) -> list[list[Any]]:
        # skopt's `copy()` + one `_tell` per lie, except that the history and the pending points
        # are fitted together: one model fit instead of 1 + len(pending).
        lie = float(np.min(opt.yi))
        liar = Optimizer(
            dimensions=opt.space.dimensions,
            base_estimator=opt.base_estimator_,
            n_initial_points=opt.n_initial_points_,
            acq_func=opt.acq_func,
            acq_optimizer=opt.acq_optimizer,
            acq_func_kwargs=opt.acq_func_kwargs,
            acq_optimizer_kwargs=opt.acq_optimizer_kwargs,
            random_state=derive_seed(self.name, self.seed, "liar", self.n_told, len(pending)),
            model_queue_size=1,
        )
        if hasattr(opt, "gains_"):
            liar.gains_ = np.copy(opt.gains_)
        self._configure(liar, len(opt.Xi) + len(pending))
        liar._tell(list(opt.Xi) + pending, list(opt.yi) + [lie] * len(pending))
        xs: list[list[Any]] = []
        for i in range(n):
            x = liar.ask()
            xs.append(x)
            if i < n - 1:
                liar._tell(x, lie)
        return xs

    # ---------------------------------------------------------------- ours: log-EI on skopt's GP

    def _sobol(self, position: int) -> dict[str, Any]:
        """The initial design's point at `position`: a scrambled Sobol sequence over the free dimensions."""
        # Sobol fills the space more evenly than random draws (scipy's generator, by position).
        u = _gp.sobol_unit(len(self._free), position + 1, derive_seed(self.name, self.seed, "sobol"))[
            position
        ]
        units = dict(zip(self._free, u, strict=True))
        return {d.name: d.from_unit(float(units.get(i, 0.5))) for i, d in enumerate(self.space.dimensions)}

    def _transform(self, params: Mapping[str, Any]) -> np.ndarray:
        assert self._tspace is not None
        return np.asarray(self._tspace.transform([self._encode(params)])[0], dtype=float)

    def surrogate_data(self) -> tuple[np.ndarray, np.ndarray]:
        """What the surrogate is fitted on: rows (transformed space) and losses, lower is better."""
        if self._tspace is not None:
            return self._gp_data()
        if self.optimizer is None:
            return np.zeros((0, 0)), np.zeros(0)
        opt = self.optimizer
        return np.asarray(opt.space.transform(opt.Xi), dtype=float), np.asarray(opt.yi, dtype=float)

    def _gp_data(self) -> tuple[np.ndarray, np.ndarray]:
        """The rows and losses the GP is fitted on: a function of the told history only."""
        valued = [self._loss(o.value) for o in self.history if o.value is not None]
        completed = [
            self._loss(o.value) for o in self.history if o.state == COMPLETED and o.value is not None
        ]
        worst = max(valued) if valued else None
        worst_completed = max(completed) if completed else worst
        rows, losses = [], []
        for row, obs in zip(self._rows, self.history, strict=True):
            if obs.state == FAILED or obs.value is None:
                if worst is None:
                    continue  # no value yet to tell a failure as
                loss = worst
            elif obs.state == PRUNED and self.pruned != "last":
                if self.pruned == "omit":
                    continue
                assert worst_completed is not None
                loss = self._pruned_loss(obs, self._loss(obs.value), worst_completed)
            else:
                loss = self._loss(obs.value)
            rows.append(row)
            losses.append(loss)
        width = len(self._rows[0]) if self._rows else 0
        return np.asarray(rows, dtype=float).reshape(len(rows), width), np.asarray(losses, dtype=float)

    def _pruned_loss(self, obs: Observation, last: float, worst_completed: float) -> float:
        """The loss a pruned trial is told as (`pruned`: worst, predicted or discounted).

        `worst`: the worst completed loss, or its own if worse. `predicted`: the stop rule's
        predicted final value (`worst` where the rule predicted none: median, asha). `discounted`:
        from its own loss towards `worst`'s by the share of its epochs it did not train (all the way
        where the epochs are unknown): a trial stopped at epoch 5 of 30 counts mostly as the worst,
        one stopped at 28 of 30 mostly as itself.
        """
        worst = max(worst_completed, last)
        if self.pruned == "predicted":
            return self._loss(obs.predicted) if obs.predicted is not None else worst
        if self.pruned == "discounted" and obs.epochs is not None and obs.max_epochs is not None:
            trained = min(obs.epochs / obs.max_epochs, 1.0)
            return trained * last + (1.0 - trained) * worst
        return worst

    def _fitted(self) -> _gp.Posterior:
        if self._posterior is not None and self._posterior[0] == self.n_told:
            return self._posterior[1]
        x, losses = self._gp_data()
        with _one_blas_thread(True):
            post = _gp.fit_posterior(
                x,
                losses,
                self.fit_settings,
                lambda *parts: derive_seed(self.name, self.seed, *parts),
                self._anchors,
            )
        self._posterior = (self.n_told, post)
        return post

    def _suggest_ours(
        self,
        n: int,
        start: int,
        is_free: Any,
        taken: set[str],
    ) -> list[dict[str, Any]]:
        assert self._tspace is not None
        tspace = self._tspace
        post = self._fitted()
        pending = [self._transform(p) for p in self._pending.values()]
        # Kriging believer: a pending point (a parallel trial, the lookahead's trial still training,
        # a point chosen earlier in this ask) is believed at the GP's mean there, under the same
        # hyperparameters. Its uncertainty collapses, so the next suggestion looks elsewhere, and the
        # surface elsewhere stays what the results say. skopt's cl_min lie (the best loss seen), used
        # here before, made every pending point's neighbourhood look as good as the best: through
        # the lookahead, digits' best fell below TPE's on 14 of 25 seeds against 5 of 25 with this
        # (bench/time_to_accuracy.py --lookahead; README, Time to accuracy).
        if pending:
            post = post.believe(np.vstack(pending))
        chosen: dict[bytes, dict[str, Any]] = {}

        def usable(xs: np.ndarray) -> Iterator[np.ndarray | None]:
            # Transformed in one go; checked lazily, as far as `propose` reads.
            values = tspace.inverse_transform(np.clip(xs, 0.0, 1.0))
            rows = np.asarray(tspace.transform(values), dtype=float)
            for v, row in zip(values, rows, strict=True):
                point = self._decode(v)
                if is_free(point):
                    chosen[row.tobytes()] = point
                    yield row
                else:
                    yield None

        out: list[dict[str, Any]] = []
        for i in range(n):
            seed = derive_seed(self.name, self.seed, "ask", self.n_told, len(pending) + i)
            with _one_blas_thread(True):
                rows = _gp.propose(post, seed, usable)
            point: dict[str, Any] | None
            if rows:
                point, row = chosen[rows[0].tobytes()], rows[0]
            else:  # every candidate taken (a small discrete space): sample instead
                point = sample_new(self.space, self._rng("sample", start + i), is_free)
                if point is None:
                    break
                row = self._transform(point)
            out.append(point)
            taken.add(params_key(point))
            post = post.believe(row[None, :])
        return out
