"""Learning-curve extrapolation (Domhan et al. 2015) and the early-stopping rules.

The rules: ``median``, ``curve_fit`` (built on the extrapolation below), and ``asha`` and
``hyperband`` (successive halving over epochs; their rungs and brackets live in `stopping`).
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from hyperflow.components.stopping import (
    HALVING_KINDS,
    bracket_of,
    hyperband_brackets,
    judge_at_rung,
    rung_epochs,
)

if TYPE_CHECKING:
    from hyperflow.components.config import ExperimentConfig

__all__ = [
    "FAMILIES",
    "HALVING_KINDS",
    "Prediction",
    "StopDecision",
    "StopPolicy",
    "StopRule",
    "epoch_budget",
    "make_stop_rule",
    "metric_bounds",
    "predict_final",
]

Bounds = tuple[float | None, float | None]

_UNIT_INTERVAL = re.compile(r"(accuracy|acc|auc|auroc|f1|precision|recall)$")
_NON_NEGATIVE = re.compile(r"(loss|rmse|mse|mae)$")
_AT_MOST_ONE = re.compile(r"r2$")


def metric_bounds(metric: str) -> Bounds:
    """The range a metric can take, from its name (prefixes such as ``val_`` do not matter).

    Args:
        metric: A metric name such as ``val_accuracy`` or ``val_loss``.

    Returns:
        ``(0, 1)`` for accuracy-like metrics, ``(0, None)`` for losses and errors, ``(None, 1)``
        for R², and ``(None, None)`` when the name says nothing.
    """
    name = metric.lower()
    if _UNIT_INTERVAL.search(name):
        return (0.0, 1.0)
    if _NON_NEGATIVE.search(name):
        return (0.0, None)
    if _AT_MOST_ONE.search(name):
        return (None, 1.0)
    return (None, None)


# --------------------------------------------------------------------------------------------
# Curve families
#
# Every family is written as f(x) = c - a * g(x; theta) with a >= 0 and g falling, fitted to a
# curve turned to rise and scaled to [0, 1] (see `predict_final`); x = epoch + 1. Given the shape
# theta, (c, a) solve a weighted linear least-squares problem in closed form (variable
# projection), so a vectorised grid over theta, zoomed twice around its best point, finds the
# least-squares fit with no iterative solver. That takes about 0.15 ms a family; scipy's
# least_squares took 1 to 3 ms a family here, mostly its own overhead, and this runs after every
# epoch of every trial. The grid's ends bound theta. Where a
# family saturates, c is its asymptote and is held at or below the metric's bound (an
# accuracy cannot level off above 1, a loss cannot level off below 0).

Theta = tuple[Any, ...]  # shape parameters: floats, or arrays of shape (m, 1) for m candidates


@dataclass(frozen=True)
class _Family:
    name: str
    basis: Callable[[np.ndarray, Theta], np.ndarray]  # g(x; theta), broadcast over theta
    gradient: Callable[[np.ndarray, Theta], list[np.ndarray]]  # dg/dtheta_j at x
    axes: tuple[np.ndarray, ...]  # coarse grid of each shape parameter; its ends are the bounds
    geometric: tuple[bool, ...]  # zoom on this axis in log space
    saturates: bool  # g -> 0, so c is an asymptote and is capped

    @property
    def n_params(self) -> int:
        return 2 + len(self.axes)


def _pow3(x: np.ndarray, t: Theta) -> np.ndarray:
    return np.asarray(x ** -t[0])


def _pow3_grad(x: np.ndarray, t: Theta) -> list[np.ndarray]:
    return [-np.log(x) * x ** -t[0]]


def _exp3(x: np.ndarray, t: Theta) -> np.ndarray:
    return np.asarray(np.exp(-t[0] * (x - 1.0)))


def _exp3_grad(x: np.ndarray, t: Theta) -> list[np.ndarray]:
    return [-(x - 1.0) * np.exp(-t[0] * (x - 1.0))]


def _janoschek(x: np.ndarray, t: Theta) -> np.ndarray:
    return np.asarray(np.exp(-t[0] * (x ** t[1] - 1.0)))


def _janoschek_grad(x: np.ndarray, t: Theta) -> list[np.ndarray]:
    kappa, delta = t
    xd = x**delta
    g = np.exp(-kappa * (xd - 1.0))
    return [-(xd - 1.0) * g, -kappa * xd * np.log(x) * g]


def _mmf(x: np.ndarray, t: Theta) -> np.ndarray:
    # theta = (log beta, delta): beta, the half-way epoch, spans orders of magnitude.
    return np.asarray(1.0 / (1.0 + np.exp(t[1] * (np.log(x) - t[0]))))


def _mmf_grad(x: np.ndarray, t: Theta) -> list[np.ndarray]:
    log_beta, delta = t
    g = _mmf(x, t)
    gg = g * (1.0 - g)  # q / (1 + q)^2 without overflowing q
    return [delta * gg, -(np.log(x) - log_beta) * gg]


def _log_linear(x: np.ndarray, t: Theta) -> np.ndarray:
    return np.asarray(-np.log(x))


def _ilog2(x: np.ndarray, t: Theta) -> np.ndarray:
    return np.asarray(1.0 / np.log(x + 1.0))


def _no_gradient(x: np.ndarray, t: Theta) -> list[np.ndarray]:
    return []


_LOG_LINEAR = _Family("log_linear", _log_linear, _no_gradient, (), (), False)

FAMILIES: tuple[_Family, ...] = (
    # pow3: c - a x^-alpha
    _Family("pow3", _pow3, _pow3_grad, (np.geomspace(0.01, 6.0, 32),), (True,), True),
    # log-linear: c + a log x, the log-power trend without saturation (clipped at the bound)
    _LOG_LINEAR,
    # exp3, exponential saturation: c - a e^(-k (x - 1))
    _Family("exp3", _exp3, _exp3_grad, (np.geomspace(1e-3, 10.0, 32),), (True,), True),
    # Janoschek, c - a e^(-kappa (x^delta - 1)); Weibull and exp4 are the same curve reparametrised
    _Family(
        "janoschek",
        _janoschek,
        _janoschek_grad,
        (np.geomspace(1e-4, 10.0, 13), np.geomspace(0.1, 3.0, 9)),
        (True, True),
        True,
    ),
    # MMF, c - a / (1 + (x / beta)^delta); Domhan's log-power and hill3 are MMF started at zero
    _Family(
        "mmf",
        _mmf,
        _mmf_grad,
        (np.linspace(math.log(0.05), math.log(1e4), 13), np.geomspace(0.2, 6.0, 9)),
        (False, True),
        True,
    ),
    # ilog2: c - a / log(x + 1), the slowest saturation
    _Family("ilog2", _ilog2, _no_gradient, (), (), True),
)

_ZOOM_STEPS = np.linspace(0.0, 1.0, 7)
_ZOOM_LEVELS = 2
# Late epochs weigh more (weight ∝ (epoch + 1)^2): where a curve is heading shows in its latest
# points, and the warm-up is the part the families describe worst.
_POINT_WEIGHT_POWER = 2.0
# BIC weights assume one family is the true curve; none is, so differences in BIC are halved
# to keep the families' disagreement in the uncertainty.
_BIC_TEMPERATURE = 2.0
# A curve can start a second phase of learning that no family foresees from its first one (on
# digits, SGD at a small learning rate plateaus, then climbs again). A log-linear fit to the
# latest third of the curve stands for that possibility: it joins the mixture with a small
# fixed weight, and its distance from the mixture's mean widens the spread further. A larger
# weight would move the mean too much on noisy plateaus, where the short fit's slope is noise.
_TREND = "recent_trend"
_TREND_WEIGHT = 0.1
_TREND_SPREAD = 0.2
# Residual variance floor, normalised units (1e-4 of the curve's range as a std): a curve that
# a family matches exactly would otherwise take every weight and report no uncertainty.
_VARIANCE_FLOOR = 1e-8
# A shape the points barely pin down (an asymptote far beyond the data) gives the delta method
# an unbounded variance; past the curve's whole observed range it says nothing more, and one
# such fit would otherwise swamp the mixture.
_MAX_PARAMETER_VARIANCE = 1.0


@dataclass(frozen=True)
class _Fit:
    name: str
    final: float  # predicted value at the final epoch, normalised units
    variance: float  # predictive variance of the final value: noise + parameter uncertainty
    rss: float  # weighted residual sum of squares
    n_params: int


def _linear_part(
    z: np.ndarray, w: np.ndarray, g: np.ndarray, cap: float | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best (c, a) for each row of g under a >= 0 and c <= cap; returns c, a and the RSS."""
    sw = w.sum()
    zbar = (w @ z) / sw
    gbar = (g @ w)[:, None] / sw
    gc = g - gbar
    sgg = np.maximum((gc * gc) @ w, 1e-300)
    a = np.maximum(-(gc @ (w * (z - zbar))) / sgg, 0.0)[:, None]
    c = zbar + a * gbar
    if cap is not None:
        # The clamped slope is exact on the a = 0 face; on the c = cap face solve for a again.
        over = c > cap
        if over.any():
            g2 = np.maximum((g * g) @ w, 1e-300)[:, None]
            a_cap = np.maximum((g @ (w * (cap - z)))[:, None] / g2, 0.0)
            a = np.where(over, a_cap, a)
            c = np.where(over, cap, c)
    resid = c - a * g - z
    return c[:, 0], a[:, 0], (resid * resid) @ w


def _mesh(axes: tuple[np.ndarray, ...]) -> Theta:
    """Every combination of the axes' values, each parameter as a column of candidates."""
    if len(axes) == 1:
        return (axes[0][:, None],)
    first, second = axes
    return (np.repeat(first, len(second))[:, None], np.tile(second, len(first))[:, None])


def _search(
    family: _Family, x: np.ndarray, z: np.ndarray, w: np.ndarray, cap: float | None
) -> tuple[float, float, Theta] | None:
    """Best (c, a, theta) of one family: a grid over theta, zoomed around its best point."""
    if not family.axes:
        c, a, rss = _linear_part(z, w, family.basis(x, ())[None, :], cap)
        return (float(c[0]), float(a[0]), ()) if np.isfinite(rss[0]) else None
    axes = family.axes
    best: tuple[float, float, float, Theta] | None = None
    for level in range(_ZOOM_LEVELS + 1):
        mesh = _mesh(axes)
        c, a, rss = _linear_part(z, w, family.basis(x, mesh), cap)
        rss = np.where(np.isfinite(rss), rss, np.inf)
        i = int(np.argmin(rss))
        if not np.isfinite(rss[i]):
            return None
        if best is None or rss[i] < best[0]:
            best = (float(rss[i]), float(c[i]), float(a[i]), tuple(float(m[i, 0]) for m in mesh))
        if level == _ZOOM_LEVELS:
            break
        # Zoom in between the best point's neighbours, axis by axis.
        where = np.unravel_index(i, tuple(len(ax) for ax in axes))
        zoomed = []
        for ax, k, geometric in zip(axes, map(int, where), family.geometric, strict=True):
            lo, hi = ax[max(k - 1, 0)], ax[min(k + 1, len(ax) - 1)]
            zoomed.append(lo * (hi / lo) ** _ZOOM_STEPS if geometric else lo + (hi - lo) * _ZOOM_STEPS)
        axes = tuple(zoomed)
    return None if best is None else best[1:]


def _fit_family(
    family: _Family,
    x: np.ndarray,
    z: np.ndarray,
    w: np.ndarray,
    x_final: float,
    cap: float | None,
    noise_floor: float,
) -> _Fit | None:
    """Fit one family to a normalised curve and predict x_final; None when it fails."""
    n = len(x)
    if n <= family.n_params:
        return None
    with np.errstate(all="ignore"):
        found = _search(family, x, z, w, cap if family.saturates else None)
        if found is None:
            return None
        c, a, theta = found
        g_data = family.basis(x, theta)
        resid = c - a * g_data - z
        rss = float(resid @ (w * resid))
        at_final = np.array([x_final])
        g_final = float(family.basis(at_final, theta)[0])
        final = c - a * g_final
        # Delta method: the prediction's variance from the parameters' covariance, which grows
        # with the distance extrapolated and with how loosely the points pin the shape down.
        jac = np.column_stack([np.ones(n), -g_data, *(-a * d for d in family.gradient(x, theta))])
        grad = np.array([1.0, -g_final, *(-a * float(d[0]) for d in family.gradient(at_final, theta))])
    if not (np.isfinite(rss) and np.isfinite(final) and np.all(np.isfinite(jac))):
        return None
    sigma2 = max(rss / (n - family.n_params), _VARIANCE_FLOOR)  # per unit weight
    information = jac.T @ (w[:, None] * jac)
    try:
        parameters = float(grad @ np.linalg.solve(information, grad)) * sigma2
    except np.linalg.LinAlgError:  # a = 0 leaves the shape free: its columns vanish
        parameters = float(grad @ np.linalg.pinv(information, hermitian=True) @ grad) * sigma2
    # The final epoch's own noise: the last observed epoch's, and no less than the curve's own
    # roughness (a run of identical rounded values fits exactly but is no certainty).
    variance = max(sigma2 / float(w[-1]), noise_floor) + min(max(parameters, 0.0), _MAX_PARAMETER_VARIANCE)
    if not math.isfinite(variance):
        return None
    return _Fit(family.name, final, variance, rss, family.n_params)


@dataclass(frozen=True)
class Prediction:
    """The predicted metric at a trial's final epoch.

    Attributes:
        mean: Predicted value, within the metric's bounds.
        std: Its standard deviation: residual noise, parameter uncertainty grown by the
            extrapolation distance, and the spread between families.
        weights: Each surviving family's weight in the ensemble, and that of ``recent_trend``,
            a log-linear fit to the latest third of the curve.
        bounds: The metric's bounds; the predictive distribution is a normal clipped to them.
    """

    mean: float
    std: float
    weights: dict[str, float]
    bounds: Bounds = (None, None)

    def prob_better_than(self, value: float, mode: str) -> float:
        """Probability that the final value beats `value` (is greater for max, less for min).

        Args:
            value: The value to beat, such as the best completed trial's.
            mode: ``max`` or ``min``.

        Returns:
            A probability in [0, 1]; 0 when `value` is already the best the metric allows.
        """
        lo, hi = self.bounds
        if mode == "max":
            if hi is not None and value >= hi:
                return 0.0
            if lo is not None and value < lo:
                return 1.0
            if self.std <= 0.0:
                return 1.0 if self.mean > value else 0.0
            return 0.5 * math.erfc((value - self.mean) / (self.std * math.sqrt(2.0)))
        if mode == "min":
            if lo is not None and value <= lo:
                return 0.0
            if hi is not None and value > hi:
                return 1.0
            if self.std <= 0.0:
                return 1.0 if self.mean < value else 0.0
            return 0.5 * math.erfc((self.mean - value) / (self.std * math.sqrt(2.0)))
        raise ValueError(f"mode must be 'max' or 'min', not {mode!r}")


def _clip(value: float, bounds: Bounds) -> float:
    lo, hi = bounds
    if lo is not None:
        value = max(value, lo)
    if hi is not None:
        value = min(value, hi)
    return value


def predict_final(
    curve: Sequence[float],
    final_epoch: int,
    *,
    bounds: Bounds = (None, None),
    mode: str = "max",
) -> Prediction | None:
    """Predict a metric's value at the final epoch from its first epochs.

    The curve is turned to rise (negated for ``min``) and scaled to [0, 1], so one set of
    rising, saturating families serves accuracies and losses alike. Every family in `FAMILIES`
    is fitted afresh (nothing is kept between calls) from the curve's lowest point on, with
    late epochs weighing more; fits that fail or are not finite are dropped, and the rest mix
    with tempered BIC weights, joined by a log-linear fit to the latest third of the curve.

    The uncertainty is that mixture's: each family's residual noise and its parameters'
    uncertainty carried to the final epoch (the delta method, growing with the distance
    extrapolated), plus the spread of the families' predictions. Each prediction is clipped to
    `bounds` first, and the mean lies within them.

    Args:
        curve: The metric at epochs 0, 1, ..., len(curve) - 1.
        final_epoch: Index of the trial's last epoch (``max_epochs - 1``).
        bounds: The metric's (lower, upper) bounds, None for open; see `metric_bounds`.
        mode: ``max`` when the metric rises as training improves, ``min`` when it falls.

    Returns:
        The prediction, or None with fewer than three points, a point that is not finite, or
        no family that fits.

    Raises:
        ValueError: On an unknown mode or a negative final epoch.
    """
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', not {mode!r}")
    if final_epoch < 0:
        raise ValueError(f"final_epoch must be >= 0, not {final_epoch}")
    y = np.asarray(curve, dtype=float)
    n = len(y)
    if n < 3 or not np.all(np.isfinite(y)):
        return None
    if final_epoch < n:
        return Prediction(_clip(float(y[final_epoch]), bounds), 0.0, {}, bounds)

    sign = 1.0 if mode == "max" else -1.0
    z = sign * y
    lo, hi = bounds
    # In the rising orientation: the bound the curve heads for (an accuracy's 1, a loss's 0)
    # and the one it leaves.
    cap_z = hi if sign > 0 else (None if lo is None else -lo)
    floor_z = lo if sign > 0 else (None if hi is None else -hi)
    z_min = float(z.min())
    span = float(z.max()) - z_min
    if span <= 1e-12 * max(1.0, abs(z_min)):
        return Prediction(_clip(float(y[-1]), bounds), 0.0, {}, bounds)
    zn = (z - z_min) / span
    cap = None if cap_z is None else (cap_z - z_min) / span
    floor = None if floor_z is None else (floor_z - z_min) / span

    # Fit from the curve's lowest point on: what comes before it (a collapse, a diverging
    # start) is a phase that rising families do not describe.
    start = int(np.argmin(zn[: max(n - 3, 1)]))
    x = np.arange(start + 1.0, n + 1.0)
    zs = zn[start:]
    w = x**_POINT_WEIGHT_POWER
    w *= len(x) / w.sum()
    x_final = float(final_epoch + 1)
    # The curve's epoch-to-epoch noise, from second differences (they cancel a smooth trend);
    # for white noise of variance s2 the differences have variance 6 s2, 1.4826 MAD is their std.
    rough = float(np.median(np.abs(np.diff(zn, 2))))
    noise_floor = max((1.4826 * rough) ** 2 / 6.0, _VARIANCE_FLOOR)
    fits = [f for family in FAMILIES if (f := _fit_family(family, x, zs, w, x_final, cap, noise_floor))]
    if not fits:
        return None

    m = len(x)
    bic = np.array([m * math.log(max(f.rss / m, _VARIANCE_FLOOR)) + f.n_params * math.log(m) for f in fits])
    weights = np.exp(-0.5 * (bic - bic.min()) / _BIC_TEMPERATURE)
    weights /= weights.sum()
    recent = max(3, m // 3)
    trend = _fit_family(_LOG_LINEAR, x[-recent:], zs[-recent:], np.ones(recent), x_final, None, noise_floor)
    if trend is not None:
        fits.append(_Fit(_TREND, trend.final, trend.variance, trend.rss, trend.n_params))
        weights = np.append(weights * (1.0 - _TREND_WEIGHT), _TREND_WEIGHT)

    finals = np.clip(
        [f.final for f in fits],
        -np.inf if floor is None else floor,
        np.inf if cap is None else cap,
    )
    mean = float(weights @ finals)
    variance = float(weights @ (np.array([f.variance for f in fits]) + (finals - mean) ** 2))
    if trend is not None:
        variance += _TREND_SPREAD * (finals[-1] - mean) ** 2
    if not (math.isfinite(mean) and math.isfinite(variance)):
        return None
    return Prediction(
        mean=_clip(sign * (z_min + span * mean), bounds),
        std=span * math.sqrt(variance),
        weights={f.name: float(wf) for f, wf in zip(fits, weights, strict=True)},
        bounds=bounds,
    )


# --------------------------------------------------------------------------------------------
# Stop rules


@dataclass(frozen=True)
class StopDecision:
    """Why a trial should stop.

    Attributes:
        reason: Human-readable text for the tag ``hyperflow.stop_reason``.
        predicted: Predicted final value (curve_fit), logged as ``predicted_final_<metric>``.
        probability: Probability that the final value beats the best completed (curve_fit).
        rung: The rung the trial was stopped at (asha, hyperband), counted from the first.
        cutoff: The value it had to reach at that rung (asha, hyperband).
    """

    reason: str
    predicted: float | None = None
    probability: float | None = None
    rung: int | None = None
    cutoff: float | None = None


_KINDS = ("none", "median", "curve_fit", *HALVING_KINDS)


def _check_settings(
    kind: str, mode: str, min_epochs: int, threshold: float, every: int, reduction_factor: int = 3
) -> None:
    if kind not in _KINDS:
        raise ValueError(f"early stopping kind must be one of {', '.join(_KINDS)}, not {kind!r}")
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', not {mode!r}")
    if min_epochs < 1 or every < 1:
        raise ValueError("min_epochs and every must be at least 1")
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must lie in (0, 1), not {threshold}")
    if isinstance(reduction_factor, bool) or not isinstance(reduction_factor, int) or reduction_factor < 2:
        raise ValueError(f"reduction_factor must be an integer of at least 2, not {reduction_factor!r}")


@dataclass(frozen=True)
class StopPolicy:
    """A frozen, picklable snapshot of a `StopRule`, sent with a trial to wherever it runs.

    Attributes:
        kind: ``none``, ``median``, ``curve_fit``, ``asha`` or ``hyperband``.
        metric: The search metric's name, for messages and bounds.
        mode: ``max`` or ``min``.
        min_epochs: Epochs a trial trains before it may be stopped.
        threshold: curve_fit stops below this probability of beating the best.
        every: After min_epochs, check only every this many epochs.
        best: Best final value among completed trials when the snapshot was taken.
        completed: Curves of completed trials (kept for the median rule only).
        bounds: The metric's bounds, from its name (see `metric_bounds`).
        reduction_factor: asha, hyperband: the top 1/reduction_factor at a rung go on.
        rungs: asha, hyperband: the epochs trained at which this trial is judged.
        rung_values: For each of `rungs`, the values recorded there by the completed and pruned
            trials (of this trial's bracket) finished when the snapshot was taken.
        first_rung: The index of ``rungs[0]`` among all the rule's rungs (its name in messages).
        bracket: hyperband: this trial's bracket; None otherwise.
    """

    kind: str
    metric: str
    mode: str
    min_epochs: int = 5
    threshold: float = 0.05
    every: int = 1
    best: float | None = None
    completed: tuple[tuple[float, ...], ...] = ()
    bounds: Bounds = (None, None)
    reduction_factor: int = 3
    rungs: tuple[int, ...] = ()
    rung_values: tuple[tuple[float, ...], ...] = ()
    first_rung: int = 0
    bracket: int | None = None

    def __post_init__(self) -> None:
        _check_settings(
            self.kind, self.mode, self.min_epochs, self.threshold, self.every, self.reduction_factor
        )
        if len(self.rung_values) != len(self.rungs):
            raise ValueError("rung_values must hold one tuple of values per rung")

    def _worse(self, value: float, reference: float) -> bool:
        return value < reference if self.mode == "max" else value > reference

    def check(self, curve: Sequence[float], final_epoch: int) -> StopDecision | None:
        """Decide whether a trial should stop after its latest epoch.

        Args:
            curve: The trial's metric at epochs 0, 1, ..., len(curve) - 1 so far.
            final_epoch: Index of the trial's last epoch (``max_epochs - 1``).

        Returns:
            A decision to stop, or None to keep training.
        """
        n = len(curve)
        if self.kind == "none" or n < self.min_epochs:
            return None
        if self.kind in HALVING_KINDS:
            return self._check_rung(curve, final_epoch)
        if self.best is None:
            return None
        if (n - self.min_epochs) % self.every or n - 1 >= final_epoch:
            return None
        epoch = n - 1
        current = float(curve[-1])
        if not math.isfinite(current):
            return None  # a NaN trial fails on its own; it is not pruned
        if self.kind == "median":
            at_epoch = [c[epoch] for c in self.completed if len(c) > epoch]
            if not at_epoch:
                return None
            median = statistics.median(at_epoch)
            if not self._worse(current, median):
                return None
            side = "below" if self.mode == "max" else "above"
            return StopDecision(
                f"median: {self.metric} {current:.4g} at epoch {epoch} is {side} the median "
                f"{median:.4g} of {len(at_epoch)} completed trial(s) at that epoch"
            )
        prediction = predict_final(curve, final_epoch, bounds=self.bounds, mode=self.mode)
        if prediction is None:
            return None
        p = prediction.prob_better_than(self.best, self.mode)
        if p >= self.threshold:
            return None
        return StopDecision(
            f"curve_fit: P(final {self.metric} beats the best completed {self.best:.4g}) = "
            f"{p:.3g} < {self.threshold:g} at epoch {epoch}; predicted {prediction.mean:.4g} "
            f"± {prediction.std:.2g} at epoch {final_epoch}",
            predicted=prediction.mean,
            probability=p,
        )

    def _check_rung(self, curve: Sequence[float], final_epoch: int) -> StopDecision | None:
        """asha, hyperband: judge the trial when it has trained exactly a rung's epochs."""
        n = len(curve)
        if n - 1 >= final_epoch or n not in self.rungs:
            return None  # a trial whose own budget ends before a rung simply completes
        current = float(curve[-1])
        if not math.isfinite(current):
            return None
        i = self.rungs.index(n)
        verdict = judge_at_rung(current, self.rung_values[i], self.reduction_factor, self.mode)
        if verdict.keep:
            return None
        rung = self.first_rung + i
        rule = "asha" if self.kind == "asha" else f"hyperband (bracket {self.bracket})"
        side = "below" if self.mode == "max" else "above"
        assert verdict.cutoff is not None  # a trial with nothing recorded at its rung goes on
        percentile = 100 * (verdict.quantile if self.mode == "max" else 1 - verdict.quantile)
        return StopDecision(
            f"{rule}: {self.metric} {current:.6g} at rung {rung} ({n} epoch{'s' if n != 1 else ''}) is "
            f"{side} the rung's cut-off {verdict.cutoff:.6g}, the {percentile:.4g}th "
            f"percentile of the {verdict.n} value{'s' if verdict.n != 1 else ''} recorded there "
            f"(the best 1/{self.reduction_factor} go on)",
            rung=rung,
            cutoff=verdict.cutoff,
        )


class StopRule:
    """The study's stop rule and its record of finished trials; owned by the search loop.

    Trials may finish in any order: the best is recomputed from every completed trial, and
    pruned or failed trials never count, neither as the best nor in the median. asha and
    hyperband record, at every rung a trial's curve reached, the value of each completed and
    pruned trial (failed ones never count); a rung's record does not depend on the order.
    """

    def __init__(
        self,
        kind: str,
        *,
        metric: str,
        mode: str,
        min_epochs: int = 5,
        threshold: float = 0.05,
        every: int = 1,
        reduction_factor: int = 3,
        max_epochs: int | None = None,
    ) -> None:
        """Create an empty rule.

        Args:
            kind: ``none``, ``median``, ``curve_fit``, ``asha`` or ``hyperband``.
            metric: The search metric, such as ``val_accuracy``; its name gives its bounds.
            mode: ``max`` or ``min``.
            min_epochs: Epochs a trial trains before it may be stopped; asha's first rung.
            threshold: curve_fit stops a trial whose probability of beating the best completed
                trial falls below this.
            every: After min_epochs, check only every this many epochs (median, curve_fit).
            reduction_factor: asha, hyperband: rungs at ``min_epochs · reduction_factor^i``,
                and the top ``1/reduction_factor`` at a rung go on.
            max_epochs: asha, hyperband: the most epochs a trial trains (the upper bound when
                ``max_epochs`` is searched); rungs lie below it.

        Raises:
            ValueError: On a bad setting, or asha / hyperband without a rung below `max_epochs`.
        """
        _check_settings(kind, mode, min_epochs, threshold, every, reduction_factor)
        self.kind = kind
        self.metric = metric
        self.mode = mode
        self.min_epochs = min_epochs
        self.threshold = threshold
        self.every = every
        self.reduction_factor = reduction_factor
        self.max_epochs = max_epochs
        self._completed: list[tuple[float, ...]] = []
        self.rungs: tuple[int, ...] = ()
        self.n_brackets = 1
        if kind in HALVING_KINDS:
            if max_epochs is None:
                raise ValueError(f"{kind} needs max_epochs, the most epochs a trial trains")
            self.rungs = rung_epochs(min_epochs, reduction_factor, max_epochs)
            if not self.rungs:
                raise ValueError(
                    f"{kind} needs a rung before the last epoch: min_epochs ({min_epochs}) must be "
                    f"below max_epochs ({max_epochs})"
                )
            if kind == "hyperband":
                self.n_brackets = hyperband_brackets(min_epochs, reduction_factor, max_epochs)
        # _rung_values[bracket][i]: values recorded at rungs[i] by that bracket's trials.
        self._rung_values: list[list[list[float]]] = [
            [[] for _ in self.rungs] for _ in range(self.n_brackets)
        ]

    def bracket(self, number: int | None) -> int:
        """The bracket of trial `number`: hyperband's from the number alone, 0 for other rules."""
        if self.kind != "hyperband":
            return 0
        if number is None:
            raise ValueError("hyperband needs the trial number (its bracket comes from it)")
        return bracket_of(number, self.n_brackets, self.reduction_factor)

    def record(self, curve: Sequence[float], state: str, number: int | None = None) -> None:
        """Record a finished trial.

        Args:
            curve: The trial's metric per epoch.
            state: ``completed``, ``pruned`` or ``failed``; failed trials never count, pruned
                ones only at the rungs they reached (asha, hyperband).
            number: The trial's number (hyperband needs it for the trial's bracket).
        """
        if state not in ("completed", "pruned", "failed"):
            raise ValueError(f"state must be completed, pruned or failed, not {state!r}")
        values = tuple(float(v) for v in curve)
        if state == "completed" and values and math.isfinite(values[-1]):
            self._completed.append(values)
        if self.rungs and state in ("completed", "pruned"):
            bracket = self.bracket(number)
            for i, rung in enumerate(self.rungs):
                # Bracket b judges from rung b on; a trial counts at each rung its curve reached.
                if i >= bracket and len(values) >= rung and math.isfinite(values[rung - 1]):
                    self._rung_values[bracket][i].append(values[rung - 1])

    @property
    def best_completed(self) -> float | None:
        """The best final value among completed trials, None before the first."""
        finals = [c[-1] for c in self._completed]
        if not finals:
            return None
        return max(finals) if self.mode == "max" else min(finals)

    def snapshot(self, number: int | None = None) -> StopPolicy:
        """What a trial needs to apply the rule, frozen as of now.

        Args:
            number: The trial's number; hyperband needs it (the trial's bracket comes from it).
        """
        bracket = self.bracket(number)
        return StopPolicy(
            kind=self.kind,
            metric=self.metric,
            mode=self.mode,
            min_epochs=self.min_epochs,
            threshold=self.threshold,
            every=self.every,
            best=self.best_completed,
            completed=tuple(self._completed) if self.kind == "median" else (),
            bounds=metric_bounds(self.metric),
            reduction_factor=self.reduction_factor,
            rungs=self.rungs[bracket:],
            rung_values=tuple(tuple(sorted(v)) for v in self._rung_values[bracket][bracket:])
            if self.rungs
            else (),
            first_rung=bracket,
            bracket=bracket if self.kind == "hyperband" else None,
        )


def epoch_budget(cfg: ExperimentConfig) -> int:
    """The most epochs a trial of the experiment trains: the space's upper bound of a searched
    ``max_epochs``, else ``model.max_epochs``."""
    return cfg.epoch_budget()


def make_stop_rule(cfg: ExperimentConfig) -> StopRule:
    """The stop rule an experiment asks for.

    Args:
        cfg: The experiment; reads ``early_stopping``, the search metric and direction, and
            (asha, hyperband) the epoch budget, `epoch_budget`.

    Returns:
        An empty `StopRule`.
    """
    es = cfg.early_stopping
    return StopRule(
        es.kind,
        metric=cfg.search.metric,
        mode=cfg.search.mode,
        min_epochs=es.min_epochs,
        threshold=es.threshold,
        every=es.every,
        reduction_factor=es.reduction_factor,
        max_epochs=epoch_budget(cfg) if es.kind in HALVING_KINDS else None,
    )
