"""`strategy: bayes` with two objectives, the second `param_count`: expected hypervolume improvement.

A model's parameter count is known before it trains (`components/budget.py` computes it), so only
the primary objective is uncertain. The GP of the Bayes strategy models the primary (told as the
single-objective search tells it, pruned trials included); the count of a candidate is exact. The
hypervolume improvement of a candidate with count c and primary loss y over the front is then a
sum over the front's staircase: the integral over counts from c to the reference count of how far
y lies below the best loss found at or below each count. Its expectation under the GP's normal
posterior is the same sum of expected improvements, one per step of the staircase, each weighted
by the step's length on the count axis: exact, with no Monte Carlo and no second surrogate (what
BoTorch's EHVI integrates by boxes for two uncertain objectives reduces to this when one is known).

The surrogate also sees what is known about the architecture: a `hidden_layers` choice as its rank
by parameter count, and numeric choices (a list of learning rates) by value, as ordered integers
rather than unrelated categories, so that neighbouring sizes and rates inform each other.

The acquisition is maximised over a candidate pool (a Sobol set plus perturbations of the best
points, each resolved to the point that would be asked), not by gradient steps: the count is a step
function of the architecture. Everything is a function of (seed, told history, pending points).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from scipy.special import logsumexp

from hyperflow.components.names import COMPLETED
from hyperflow.components.search import _gp
from hyperflow.components.search._base import derive_seed
from hyperflow.components.search._bayes import BayesStrategy, _one_blas_thread
from hyperflow.components.search._random import sample_new
from hyperflow.components.search._space import SearchSpace, params_key

__all__ = ["EHVIStrategy", "log_ehvi", "ordered_choices"]

ParamCount = Callable[[Mapping[str, Any]], float]

# The candidate pool of one suggestion: Sobol points, and perturbations of the best points told.
_N_RAW = 1024
_N_BEST = 5
_N_LOCAL = 10
_LOCAL_SCALES = (0.01, 0.1, 0.3)


def log_ehvi(
    mean: np.ndarray,
    std: np.ndarray,
    counts: np.ndarray,
    front: Sequence[tuple[float, float]],
    ref_loss: float,
    ref_count: float,
) -> np.ndarray:
    """log E[hypervolume improvement] of candidates (count known, loss ~ N(mean, std²)); both minimised.

    `front`: (count, loss) of the points found so far (dominated ones may be included). The
    hypervolume is the area between the front's staircase and the reference point (ref_count,
    ref_loss), counts scaled by ref_count. A candidate at or beyond ref_count improves nothing
    (-inf).
    """
    pts = sorted(front)
    fc = np.array([c for c, _ in pts], dtype=float)
    fl = np.minimum.accumulate(np.array([loss for _, loss in pts], dtype=float)) if pts else np.zeros(0)
    starts = np.concatenate([[0.0], fc])
    ends = np.concatenate([fc, [ref_count]])
    levels = np.minimum(np.concatenate([[ref_loss], fl]), ref_loss)
    lengths = np.clip(ends[None, :] - np.maximum(starts[None, :], counts[:, None]), 0.0, None) / ref_count
    z = (levels[None, :] - mean[:, None]) / std[:, None]
    with np.errstate(divide="ignore"):
        terms = _gp.log_h(z) + np.log(std)[:, None] + np.log(lengths)
    return np.asarray(logsumexp(terms, axis=1), dtype=float)


def ordered_choices(space: SearchSpace, count: ParamCount) -> dict[str, list[int]]:
    """The categorical dimensions the surrogate sees as ordered: their choice indices, lowest first.

    `hidden_layers` by the parameter count of each architecture (the other parameters at their
    first choice or lower bound), numeric choices by value. Ties keep the written order.
    """
    base = {d.name: d.from_unit(0.0) for d in space.dimensions}
    out: dict[str, list[int]] = {}
    for d in space.dimensions:
        if d.kind != "categorical" or len(d.choices) < 3:  # two choices are one bit either way
            continue
        if d.name == "hidden_layers":
            keys = [float(count({**base, d.name: c})) for c in d.choices]
        elif all(isinstance(c, int | float) and not isinstance(c, bool) for c in d.choices):
            keys = [float(c) for c in d.choices]
        else:
            continue
        out[d.name] = [int(i) for i in np.argsort(keys, kind="stable")]
    return out


class EHVIStrategy(BayesStrategy):
    """Two objectives, (primary, param_count): the Bayes strategy's GP on the primary, EHVI to ask.

    `count` gives a point's parameter count without training; `ref_count` is the reference point's
    count (the space's largest architecture), `ordinal` as `ordered_choices` gives it. Up to
    `n_initial_points` results the initial design is the Bayes strategy's (Sobol). Pending points
    (parallel asks, lookahead) are believed at the GP's mean: the GP is conditioned on that value
    and the point joins the front, so the next suggestion looks elsewhere.
    """

    name = "ehvi"

    def __init__(
        self,
        space: SearchSpace,
        *,
        count: ParamCount,
        ref_count: float,
        **bayes: Any,
    ) -> None:
        super().__init__(space, **bayes)
        if not self.ours:
            raise ValueError(
                "search.bayes.multi_objective: ehvi runs on the GP with logEI (search.bayes.surrogate: GP, "
                "acquisition: logEI); use parego with other surrogates"
            )
        self.count = count
        self.ref_count = float(ref_count)

    def front_points(self) -> list[tuple[float, float]]:
        """(param_count, primary loss) of every completed trial told with both objectives."""
        return [
            (float(o.objectives[1]), self._loss(o.value))
            for o in self.history
            if o.state == COMPLETED and o.objectives is not None and o.value is not None
        ]

    def _pool(
        self, post: _gp.Posterior, seed: int, is_free: Callable[[Mapping[str, Any]], bool]
    ) -> Iterator[dict[str, Any]]:
        assert self._tspace is not None
        rng = np.random.default_rng(seed)
        d = post.x.shape[1]
        raw = [_gp.sobol_unit(d, _N_RAW, int(rng.integers(2**31)))]
        for i in np.argsort(post.y, kind="stable")[:_N_BEST]:
            for scale in _LOCAL_SCALES:
                raw.append(post.x[i] + scale * rng.standard_normal((_N_LOCAL, d)))
        keys: set[str] = set()
        for v in self._tspace.inverse_transform(np.clip(np.vstack(raw), 0.0, 1.0)):
            point = self._decode(v)
            key = params_key(point)
            if key not in keys and is_free(point):
                keys.add(key)
                yield point

    def _suggest_ours(
        self,
        n: int,
        start: int,
        is_free: Any,
        taken: set[str],
    ) -> list[dict[str, Any]]:
        post = self._fitted()
        # The front on the GP's scale: the losses standardised as the fit standardised them.
        centre, scale = _gp.loss_scale(self._gp_data()[1])
        front = [(c, (loss - centre) / scale) for c, loss in self.front_points()]
        ref_loss = float(np.max(post.y))
        believed = list(self._pending.values())
        out: list[dict[str, Any]] = []
        for i in range(len(believed) + n):
            if i < len(believed):
                point = believed[i]
                row, count = self._transform(point), float(self.count(point))
            else:
                seed = derive_seed(self.name, self.seed, "ask", self.n_told, i)
                pool = list(self._pool(post, seed, is_free))
                if not pool:  # every candidate taken (a small discrete space): sample instead
                    sampled = sample_new(self.space, self._rng("sample", start + len(out)), is_free)
                    if sampled is None:
                        break
                    pool = [sampled]
                # One transform for the pool: skopt's per-point transform costs ~1.4 ms (scikit-learn checks).
                assert self._tspace is not None
                rows = np.asarray(self._tspace.transform([self._encode(p) for p in pool]), dtype=float)
                counts = np.array([float(self.count(p)) for p in pool])
                with _one_blas_thread(True):
                    mean, std = post.predict(rows)
                best = int(np.argmax(log_ehvi(mean, std, counts, front, ref_loss, self.ref_count)))
                point, row, count = pool[best], rows[best], float(counts[best])
                out.append(point)
                taken.add(params_key(point))
            # Believed at the GP's mean (Posterior.believe), the value kept for the front too.
            (believed_loss,) = post.predict(row[None, :])[0]
            post = post.condition(row[None, :], np.array([believed_loss]))
            front.append((count, float(believed_loss)))
        return out
