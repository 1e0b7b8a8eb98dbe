"""Our acquisition step on scikit-optimize's GP: log-EI, multi-start L-BFGS-B, bounded fitting cost.

skopt supplies the surrogate (its `GaussianProcessRegressor` with the Matern-5/2 kernel its
`cook_estimator` builds) and the space's transform to [0, 1] (one-hot for categoricals). Ours:
standardised outputs, kernel hyperparameters warm-started from an anchor fit, history subsets for
the hyperparameter fit and the posterior of long studies, log expected improvement (Ament et al.
2023, "Unexpected improvements to expected improvement") with analytic gradients, and its
maximisation by L-BFGS-B from the best raw candidates of a Sobol set plus perturbations of the
best points seen.

Everything here is a pure function of its inputs and the seeds it is given: the caller derives
them from (study seed, history), so a rebuilt strategy asks what the original asked.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.linalg import cho_solve, cholesky
from scipy.optimize import minimize
from scipy.special import erfcx, log_ndtr, ndtr
from scipy.stats import qmc
from skopt.learning import GaussianProcessRegressor
from skopt.learning.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

__all__ = ["FitSettings", "Posterior", "fit_posterior", "log_ei", "propose", "sobol_unit"]

_SQRT5 = math.sqrt(5.0)
_C1 = 0.5 * math.log(2 * math.pi)
_C2 = 0.5 * math.log(math.pi / 2)
_Z_TAIL = -1.0 / math.sqrt(np.finfo(float).eps)
# skopt's amplitude bounds (cook_estimator). Ours, measured on Branin/Hartmann6/Ackley-5 (README):
# length scales from 0.03, not skopt's 0.01 (Ackley-5 at 50: median regret 5.4 vs 11.8, 3 seeds),
# and up to 3, not 100 (with the prior, 10 seeds: Hartmann6 at 50 0.0045 vs 0.0065, Ackley-5 6.1 vs
# 6.8; a dimension the GP reads as flat, length scale 4-5 on the unit cube, is never explored
# again and the search stalls in a local minimum); a noise floor of 1e-7 on standardised losses
# (Hartmann6 at 100: 1.9e-5 vs 8.6e-5 with 1e-6; 1e-8 left one seed in the local minimum).
_AMP_BOUNDS = (0.01, 1000.0)
_LS_BOUNDS = (0.03, 3.0)
_NOISE_BOUNDS = (1e-7, 1.0)
_JITTER = 1e-10  # sklearn's GaussianProcessRegressor default `alpha`
_WARM_STEPS = 20
# Perturbations of the best points, in the unit cube: local refinement down to 1e-3 of a range.
_LOCAL_SCALES = (0.001, 0.01, 0.1)


@dataclass(frozen=True)
class FitSettings:
    """How the GP's hyperparameters are fitted.

    Attributes:
        anchor_every: a full fit (random restarts) every this many points; between anchors the
            fit starts from the last anchor's hyperparameters, without restarts.
        restarts: random restarts of a full fit (skopt's default is 2).
        fit_window: at most this many points enter the hyperparameter fit (the best quarter, the
            rest drawn by seed).
        reuse_after: beyond this many points, no fit between anchors at all: the anchor's
            hyperparameters are reused and only the posterior is recomputed.
        anchor_every_long: beyond `reuse_after` points, a full fit every this many points (a
            multiple of `anchor_every`).
        posterior_window: at most this many points condition the posterior the acquisition
            reads: the best quarter, the latest quarter and the rest drawn by seed. Up to this
            many points it conditions on every point.
        prior: maximise the marginal likelihood times a prior on the hyperparameters (Optuna
            GPSampler's: length scales near 1, amplitude near 1, a little noise) instead of the
            likelihood alone.
        warm_steps: L-BFGS steps of a warm-started fit between anchors.
    """

    anchor_every: int = 8
    restarts: int = 2
    fit_window: int = 200
    reuse_after: int = 300
    anchor_every_long: int = 32
    posterior_window: int = 300
    prior: bool = True
    warm_steps: int = 20

    def anchor(self, n: int) -> int:
        """The number of points of the last anchor fit at n told points (at most n).

        Every `anchor_every` points up to `reuse_after`, then every `anchor_every_long`; never
        earlier than an anchor already passed, so a growing study refits each anchor once.
        """
        if n < self.anchor_every:
            return n
        if n <= self.reuse_after:
            return n - n % self.anchor_every
        last_short = self.reuse_after - self.reuse_after % self.anchor_every
        return max(last_short, n - n % self.anchor_every_long)

    def period(self, n: int) -> int:
        """Points between two anchors at n told points (what one anchor's full fit is spread over)."""
        return self.anchor_every if n <= self.reuse_after else self.anchor_every_long


@dataclass(frozen=True)
class Posterior:
    """A GP conditioned on standardised losses, with everything needed for predictions."""

    x: np.ndarray  # (n, d) in skopt's transformed space
    y: np.ndarray  # (n,) standardised losses
    amplitude: float
    length_scale: np.ndarray  # (d,)
    noise: float
    chol: np.ndarray  # lower Cholesky factor of K + (noise + jitter) I
    alpha: np.ndarray  # (K + noise I)^-1 y
    best: float  # the lowest standardised loss
    theta: np.ndarray  # log hyperparameters (amplitude, length scales..., noise), for warm starts

    def condition(self, x_more: np.ndarray, y_more: np.ndarray) -> Posterior:
        """The same hyperparameters conditioned on more points."""
        return _condition(
            np.vstack([self.x, x_more]),
            np.concatenate([self.y, y_more]),
            self.amplitude,
            self.length_scale,
            self.noise,
            self.theta,
            best=self.best,
        )

    def believe(self, x_more: np.ndarray) -> Posterior:
        """Conditioned on its own mean at `x_more` (the kriging believer): the mean stays as it was
        everywhere, the uncertainty at those points collapses, the best loss is unchanged."""
        return self.condition(x_more, self.predict(x_more)[0])

    def predict(self, xs: np.ndarray, grad: bool = False) -> tuple[np.ndarray, ...]:
        """Mean and std of the latent function at xs (m, d); with grad, their gradients too."""
        diff = (xs[:, None, :] - self.x[None, :, :]) / self.length_scale  # (m, n, d)
        r = np.sqrt(np.maximum(np.sum(diff**2, axis=-1), 1e-300))
        e = np.exp(-_SQRT5 * r)
        k = self.amplitude * (1 + _SQRT5 * r + 5.0 / 3.0 * r**2) * e  # (m, n)
        mean = k @ self.alpha
        w = cho_solve((self.chol, True), k.T)  # (n, m)
        var = np.maximum(self.amplitude - np.sum(k.T * w, axis=0), 1e-12)
        std = np.sqrt(var)
        if not grad:
            return mean, std
        # d k / d x = -5/3 amplitude (1 + sqrt5 r) exp(-sqrt5 r) (x - x_i) / l^2
        dk = (-5.0 / 3.0 * self.amplitude * (1 + _SQRT5 * r) * e)[..., None] * diff / self.length_scale
        dmean = np.einsum("n,mnd->md", self.alpha, dk)
        dvar = -2.0 * np.einsum("nm,mnd->md", w, dk)
        return mean, std, dmean, dvar / (2 * std[:, None])


def _matern(x: np.ndarray, amplitude: float, length_scale: np.ndarray) -> np.ndarray:
    diff = (x[:, None, :] - x[None, :, :]) / length_scale
    r = np.sqrt(np.sum(diff**2, axis=-1))
    return amplitude * (1 + _SQRT5 * r + 5.0 / 3.0 * r**2) * np.exp(-_SQRT5 * r)


def _condition(
    x: np.ndarray,
    y: np.ndarray,
    amplitude: float,
    length_scale: np.ndarray,
    noise: float,
    theta: np.ndarray,
    best: float | None = None,
) -> Posterior:
    k = _matern(x, amplitude, length_scale)
    k[np.diag_indices_from(k)] += noise + _JITTER
    chol = cholesky(k, lower=True, check_finite=False)
    alpha = cho_solve((chol, True), y, check_finite=False)
    return Posterior(
        x, y, amplitude, length_scale, noise, chol, alpha, float(np.min(y) if best is None else best), theta
    )


def _kernel(d: int, theta: np.ndarray | None) -> Any:
    if theta is None:
        amp, ls, noise = 1.0, np.ones(d), 1e-2
    else:
        amp, ls, noise = float(np.exp(theta[0])), np.exp(theta[1:-1]), float(np.exp(theta[-1]))
    return ConstantKernel(amp, _AMP_BOUNDS) * Matern(
        length_scale=ls, length_scale_bounds=[_LS_BOUNDS] * d, nu=2.5
    ) + WhiteKernel(noise, _NOISE_BOUNDS)


def log_prior(theta: np.ndarray) -> tuple[float, np.ndarray]:
    """Optuna GPSampler's log prior on (log amplitude, log length scales, log noise), and its gradient.

    On the values, not their logs (as Optuna's): -(0.1 l^2 + 0.1 / l^2) a length scale, a Gamma(2, 1)
    amplitude and a Gamma(1.1, 30) noise, each up to a constant.
    """
    amp, ls, noise = theta[0], theta[1:-1], theta[-1]
    up, down = np.exp(2 * ls), np.exp(-2 * ls)
    value = -0.1 * float(np.sum(up + down)) + (amp - math.exp(amp)) + (0.1 * noise - 30.0 * math.exp(noise))
    grad = np.concatenate([[1.0 - math.exp(amp)], -0.2 * (up - down), [0.1 - 30.0 * math.exp(noise)]])
    return value, grad


def _with_prior(obj_func: Callable[..., Any]) -> Callable[..., Any]:
    def objective(theta: np.ndarray, eval_gradient: bool = True) -> Any:
        nll, grad = obj_func(theta, eval_gradient=True)
        lp, lp_grad = log_prior(theta)
        return nll - lp, grad - lp_grad

    return objective


def _optimizer(steps: int | None, prior: bool) -> Any:
    """sklearn's L-BFGS-B on the negative log marginal likelihood (plus the prior), `steps` at most."""

    def run(
        obj_func: Callable[..., Any], initial_theta: np.ndarray, bounds: np.ndarray
    ) -> tuple[np.ndarray, float]:
        res = minimize(
            _with_prior(obj_func) if prior else obj_func,
            initial_theta,
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={} if steps is None else {"maxiter": steps},
        )
        return res.x, float(res.fun)

    return run if prior or steps is not None else "fmin_l_bfgs_b"


def _fit_theta(
    x: np.ndarray,
    y: np.ndarray,
    start: np.ndarray | None,
    restarts: int,
    seed: int,
    *,
    prior: bool = False,
    warm_steps: int = _WARM_STEPS,
) -> np.ndarray:
    """Log hyperparameters maximising the marginal likelihood, by skopt's GP (sklearn's L-BFGS-B)."""
    gp = GaussianProcessRegressor(
        kernel=_kernel(x.shape[1], start),
        normalize_y=False,
        noise="gaussian",
        n_restarts_optimizer=restarts,
        random_state=seed,
        # A warm start is near its optimum already: a few steps, not a full convergence.
        optimizer=_optimizer(None if start is None else warm_steps, prior),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence notes at the bounds
        gp.fit(x, y)
    # skopt zeroes the white noise after fitting (for its predict); read it back from noise_.
    noise = max(float(gp.noise_ or _NOISE_BOUNDS[0]), _NOISE_BOUNDS[0])
    return np.append(np.asarray(gp.kernel_.k1.theta, dtype=float), math.log(noise))


def _fit_subset(n: int, y: np.ndarray, window: int, seed: int) -> np.ndarray:
    if n <= window:
        return np.arange(n)
    n_best = window // 4
    order = np.argsort(y, kind="stable")
    best, rest = order[:n_best], order[n_best:]
    drawn = np.random.default_rng(seed).choice(rest, size=window - n_best, replace=False)
    return np.sort(np.concatenate([best, drawn]))


def _posterior_subset(n: int, y: np.ndarray, window: int, seed: int) -> np.ndarray:
    # The best quarter (where EI looks), the latest quarter (what the acquisition just asked: left
    # out, the GP would not know those places were tried) and a seeded draw of the rest.
    if n <= window:
        return np.arange(n)
    quarter = window // 4
    best = np.argsort(y, kind="stable")[:quarter]
    keep = np.zeros(n, dtype=bool)
    keep[best] = True
    keep[n - quarter :] = True
    rest = np.flatnonzero(~keep)
    drawn = np.random.default_rng(seed).choice(rest, size=window - int(keep.sum()), replace=False)
    keep[drawn] = True
    return np.flatnonzero(keep)


def loss_scale(losses: np.ndarray) -> tuple[float, float]:
    """The centre and scale `standardise` maps losses by (mean, std; 1 where all are equal)."""
    std = float(np.std(losses))
    return float(np.mean(losses)), (std if std > 0 else 1.0)


def standardise(losses: np.ndarray) -> np.ndarray:
    centre, scale = loss_scale(losses)
    return (losses - centre) / scale


def fit_posterior(
    x: np.ndarray,
    losses: np.ndarray,
    settings: FitSettings,
    seed_for: Callable[..., int],
    cache: dict[int, np.ndarray],
) -> Posterior:
    """The GP on (x, losses): hyperparameters fitted as `settings` says, then conditioned.

    It conditions on every point, or on `settings.posterior_window` of them in a long study.

    `seed_for(*parts)` derives seeds; `cache` keeps anchor fits by their number of points (an
    anchor fit depends only on the first `anchor` points, so a rebuilt strategy recomputes it).
    """
    n = len(x)
    anchor = settings.anchor(n)
    y = standardise(losses)

    def fitted(m: int, start: np.ndarray | None, restarts: int) -> np.ndarray:
        ym = standardise(losses[:m])
        idx = _fit_subset(m, ym, settings.fit_window, seed_for("subset", m))
        return _fit_theta(
            x[:m][idx],
            ym[idx],
            start,
            restarts,
            seed_for("fit", m),
            prior=settings.prior,
            warm_steps=settings.warm_steps,
        )

    if anchor not in cache:
        cache[anchor] = fitted(anchor, None, settings.restarts)
        # Only the latest anchor is ever needed again.
        for key in [k for k in cache if k != anchor]:
            del cache[key]
    theta = cache[anchor]
    if n != anchor and n <= settings.reuse_after:
        theta = fitted(n, theta, 0)
    amp, ls, noise = float(np.exp(theta[0])), np.exp(theta[1:-1]), float(np.exp(theta[-1]))
    idx = _posterior_subset(n, y, settings.posterior_window, seed_for("posterior", n))
    return _condition(x[idx], y[idx], amp, ls, noise, theta)


def log_h(z: np.ndarray) -> np.ndarray:
    """log(phi(z) + z Phi(z)), stable for very negative z (Ament et al. 2023, eq. 9)."""
    z = np.asarray(z, dtype=float)
    out = np.empty_like(z)
    upper = z > -1
    zu = z[upper]
    out[upper] = np.log(np.exp(-0.5 * zu**2) / math.sqrt(2 * math.pi) + zu * ndtr(zu))
    mid = ~upper & (z > _Z_TAIL)
    zm = z[mid]
    inner = np.log(erfcx(-zm / math.sqrt(2)) * np.abs(zm)) + _C2
    out[mid] = -0.5 * zm**2 - _C1 + _log1mexp(inner)
    tail = ~upper & ~mid
    zt = z[tail]
    out[tail] = -0.5 * zt**2 - _C1 - 2 * np.log(-zt)
    return out


def _log1mexp(a: np.ndarray) -> np.ndarray:
    # log(1 - exp(a)) for a < 0, accurate on both sides of -log 2 (Maechler 2012).
    return np.where(a > -math.log(2), np.log(-np.expm1(a)), np.log1p(-np.exp(a)))


def log_ei(post: Posterior, xs: np.ndarray, grad: bool = False) -> tuple[np.ndarray, ...]:
    """Log expected improvement below `post.best` at xs (m, d); with grad, its gradient too."""
    if not grad:
        mean, std = post.predict(xs)
        z = (post.best - mean) / std
        return (log_h(z) + np.log(std),)
    mean, std, dmean, dstd = post.predict(xs, grad=True)
    z = (post.best - mean) / std
    lh = log_h(z)
    dlh = np.exp(log_ndtr(z) - lh)  # d log h / dz = Phi(z) / h(z)
    dz = (-dmean - z[:, None] * dstd) / std[:, None]
    return lh + np.log(std), dlh[:, None] * dz + dstd / std[:, None]


def sobol_unit(d: int, n: int, seed: int) -> np.ndarray:
    """The first n points of a scrambled Sobol sequence in [0, 1)^d."""
    m = max(1, math.ceil(math.log2(max(n, 1))))
    return qmc.Sobol(d, scramble=True, seed=seed).random_base2(m)[:n]


def propose(
    post: Posterior,
    seed: int,
    usable: Callable[[np.ndarray], Iterable[np.ndarray | None]],
    *,
    n_raw: int = 1024,
    n_starts: int = 8,
    n_best: int = 5,
    n_local: int = 20,
    maxiter: int = 200,
) -> list[np.ndarray]:
    """Maximisers of log-EI over [0, 1]^d, best first.

    Raw candidates: a Sobol set plus Gaussian perturbations of the `n_best` lowest points told.
    The `n_starts` best raw candidates start L-BFGS-B runs. `usable(xs)` maps continuous points to
    the points that would be asked (rounded, one-hot resolved, in the transformed space), None
    where that point is taken; candidates are ranked by log-EI at their usable point.
    """
    d = post.x.shape[1]
    rng = np.random.default_rng(seed)
    raw = [sobol_unit(d, n_raw, int(rng.integers(2**31)))]
    best_idx = np.argsort(post.y[: len(post.y)], kind="stable")[:n_best]
    for i in best_idx:
        for scale in _LOCAL_SCALES:
            raw.append(post.x[i] + scale * rng.standard_normal((n_local // 2, d)))
    cand = np.clip(np.vstack(raw), 0.0, 1.0)
    (values,) = log_ei(post, cand)
    order = np.argsort(-values, kind="stable")
    # Half the starts from the Sobol set, half from the perturbations: ranked together, the
    # perturbations of the best points take every start once the GP is confident near them, and
    # the search stalls in that basin (Hartmann6, README).
    n_sobol = len(raw[0])
    half = n_starts // 2
    far = np.argsort(-values[:n_sobol], kind="stable")[:half]
    near = n_sobol + np.argsort(-values[n_sobol:], kind="stable")[: n_starts - half]
    starts = cand[np.concatenate([far, near])]

    def neg(flat: np.ndarray) -> tuple[float, np.ndarray]:
        # The starts are independent: one L-BFGS-B on their sum (as BoTorch does) costs one
        # vectorised evaluation per step instead of one per start.
        v, g = log_ei(post, flat.reshape(-1, d), grad=True)
        return -float(np.sum(v)), -g.ravel()

    res = minimize(
        neg,
        starts.ravel(),
        jac=True,
        method="L-BFGS-B",
        bounds=[(0.0, 1.0)] * starts.size,
        options={"maxiter": maxiter},
    )
    finals = list(np.clip(res.x.reshape(-1, d), 0.0, 1.0))
    # The sum's tolerance is relative to all starts' log-EI, which far-off starts make huge: the
    # best two are polished alone, so the winner converges on its own scale.
    (final_values,) = log_ei(post, np.vstack(finals))
    for i in np.argsort(-final_values, kind="stable")[:2]:
        one = minimize(
            neg, finals[i], jac=True, method="L-BFGS-B", bounds=[(0.0, 1.0)] * d, options={"maxiter": maxiter}
        )
        finals.insert(0, np.clip(one.x, 0.0, 1.0))
    # Then the raw candidates, best first, in case every refined point rounds onto a taken one.
    pool = np.vstack([*finals, cand[order]])
    snapped: list[np.ndarray] = []
    keys: set[bytes] = set()
    for u in usable(pool):
        if u is None or u.tobytes() in keys:
            continue
        keys.add(u.tobytes())
        snapped.append(u)
        if len(snapped) >= 2 * n_starts:
            break
    if not snapped:
        return []
    arr = np.vstack(snapped)
    (scores,) = log_ei(post, arr)
    return [arr[i] for i in np.argsort(-scores, kind="stable")]
