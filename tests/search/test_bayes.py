"""Bayes with our log-EI on skopt's GP: quality, determinism, parallel asks, resume, pruned trials."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError
from scipy.stats import norm
from strategy_driving import ask_and_tell, replay

from hyperflow.components.config import ExperimentConfig
from hyperflow.components.search import BayesStrategy, Dimension, SearchSpace, _gp
from hyperflow.components.search._bayes import PRUNED_POLICIES
from hyperflow.components.search._space import params_key
from hyperflow.components.search.objectives import branin


@pytest.mark.slow  # 3-6 s a seed on this project's busy 2-core machine
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bayes_gets_within_001_of_the_branin_minimum_in_40_evaluations(seed: int) -> None:
    space, fn, optimum = branin()
    strategy = BayesStrategy(space, mode="min", seed=seed)
    assert strategy.ours  # the default is our log-EI, not skopt's ask
    ask_and_tell(strategy, 40, fn)
    assert strategy.best is not None and strategy.best.value is not None
    assert strategy.best.value - optimum < 0.01


def test_the_same_seed_gives_the_same_suggestions_past_the_initial_design() -> None:
    space, fn, _ = branin()
    first = ask_and_tell(BayesStrategy(space, mode="min", seed=4, n_initial_points=4), 10, fn)
    again = ask_and_tell(BayesStrategy(space, mode="min", seed=4, n_initial_points=4), 10, fn)
    other = ask_and_tell(BayesStrategy(space, mode="min", seed=5, n_initial_points=4), 10, fn)
    assert first == again
    assert first[4:] != other[4:]


def test_extra_asks_given_back_do_not_change_the_next_suggestion() -> None:
    space, fn, _ = branin()
    quiet = BayesStrategy(space, mode="min", seed=1, n_initial_points=4)
    busy = BayesStrategy(space, mode="min", seed=1, n_initial_points=4)
    for _ in range(7):
        for point in busy.ask(3):  # asked, never run
            busy.release(point)
        busy._initial.clear()  # released points would be asked first: drop them
        (a,) = quiet.ask()
        (b,) = busy.ask()
        assert a == b
        quiet.tell(a, fn(a))
        busy.tell(b, fn(b))


def test_parallel_asks_on_a_small_discrete_space_never_repeat() -> None:
    # 5 x 4 x 3 = 60 points: rounding makes the liar's proposals collide unless they are checked.
    space = SearchSpace(
        [
            Dimension("a", "int", 0, 4),
            Dimension("b", "categorical", choices=("w", "x", "y", "z")),
            Dimension("c", "int", 1, 3),
        ]
    )

    def fn(p: dict[str, Any]) -> float:
        return (p["a"] - 2) ** 2 + ("w", "x", "y", "z").index(p["b"]) + abs(p["c"] - 2)

    strategy = BayesStrategy(space, mode="min", seed=0, n_initial_points=4)
    ask_and_tell(strategy, 6, fn)
    batch = strategy.ask(8) + strategy.ask(8)
    keys = [params_key(p) for p in batch]
    told = {params_key(o.params) for o in strategy.history}
    assert len(batch) == 16 and len(set(keys)) == 16 and not set(keys) & told
    for point in batch:
        strategy.tell(point, fn(point))
    rest = strategy.ask(60)
    assert len(rest) == 60 - 22 and strategy.exhausted


def test_a_rebuilt_strategy_asks_what_the_uninterrupted_one_would_next() -> None:
    space, fn, _ = branin()
    # Past two anchors of the hyperparameter fit (every 8 points), with a pruned and a failed trial.
    original = BayesStrategy(space, mode="min", seed=3, n_initial_points=4)
    ask_and_tell(original, 5, fn)
    (pruned,) = original.ask()
    original.tell(pruned, fn(pruned) + 5.0, pruned=True)
    (failed,) = original.ask()
    original.tell_failed(failed)
    ask_and_tell(original, 13, fn)
    in_flight = original.ask(2)  # trials still running when the study stopped
    fresh = replay(BayesStrategy, original, mode=original.mode, seed=original.seed, n_initial_points=4)
    for point in in_flight:
        fresh._pending[params_key(point)] = point
    assert fresh.ask(2) == original.ask(2)


def test_pruned_trials_are_told_as_the_policy_says() -> None:
    space = branin().space
    strategies = {p: BayesStrategy(space, mode="max", seed=0, pruned=p) for p in PRUNED_POLICIES}
    for s in strategies.values():
        a, b, c, d, e = s.ask(5)
        s.tell(a, 2.0, epochs=30, max_epochs=30)
        s.tell(b, 5.0, epochs=30, max_epochs=30)
        # Its last value looks best; it was stopped at epoch 6 of 30, predicted to end at 4.0.
        s.tell(c, 9.0, pruned=True, predicted=4.0, epochs=6, max_epochs=30)
        s.tell(d, 8.0, pruned=True)  # stopped by a rule that predicts nothing, epochs unknown
        s.tell(e, 1.0, pruned=True, predicted=3.0, epochs=24, max_epochs=30)  # worse than the worst
        s.tell_failed(s.ask()[0])
    # mode max: losses are -value; a failure is the worst value seen (1.0); `worst` is the worst
    # completed value (2.0), or the trial's own if worse.
    assert list(strategies["last"].surrogate_data()[1]) == [-2.0, -5.0, -9.0, -8.0, -1.0, -1.0]
    assert list(strategies["worst"].surrogate_data()[1]) == [-2.0, -5.0, -2.0, -2.0, -1.0, -1.0]
    x, losses = strategies["omit"].surrogate_data()
    assert list(losses) == [-2.0, -5.0, -1.0] and x.shape == (3, 2)
    # predicted: the prediction where there is one, else as `worst`.
    assert list(strategies["predicted"].surrogate_data()[1]) == [-2.0, -5.0, -4.0, -2.0, -3.0, -1.0]
    # discounted: 6 of 30 epochs trained: 0.2 of the way from worst (-2) to its own (-9); unknown
    # epochs: as `worst`; 24 of 30 but worse than the worst: its own.
    discounted = strategies["discounted"].surrogate_data()[1]
    assert np.allclose(discounted, [-2.0, -5.0, 0.2 * -9.0 + 0.8 * -2.0, -2.0, -1.0, -1.0])
    assert all(s.best is not None and s.best.value == 5.0 for s in strategies.values())


def test_a_rebuilt_strategy_tells_pruned_trials_as_the_original_did() -> None:
    space, fn, _ = branin()
    for policy in ("predicted", "discounted"):
        original = BayesStrategy(space, mode="min", seed=2, n_initial_points=3, pruned=policy)
        ask_and_tell(original, 4, fn)
        for i, point in enumerate(original.ask(2)):
            original.tell(
                point, fn(point) + 3.0, pruned=True, predicted=fn(point) + 1.0, epochs=3 + i, max_epochs=9
            )
        ask_and_tell(original, 2, fn)
        fresh = replay(BayesStrategy, original, mode="min", seed=2, n_initial_points=3, pruned=policy)
        assert np.array_equal(fresh.surrogate_data()[1], original.surrogate_data()[1])
        assert fresh.ask() == original.ask()


def test_bad_pruned_policy_names_the_key() -> None:
    with pytest.raises(ValidationError, match=r"search\.bayes\.pruned|pruned"):
        ExperimentConfig.model_validate({"search": {"bayes": {"pruned": "dropped"}}})
    with pytest.raises(ValueError, match=r"search\.bayes\.pruned must be one of last, worst"):
        BayesStrategy(branin().space, pruned="dropped")  # type: ignore[arg-type]


def test_log_h_is_exact_where_the_plain_formula_works_and_finite_where_it_does_not() -> None:
    z = np.array([-30.0, -8.0, -3.0, -1.0, -0.5, 0.0, 2.0, 6.0])
    plain = np.log(norm.pdf(z) + z * norm.cdf(z))
    assert np.allclose(_gp.log_h(z[1:]), plain[1:], rtol=1e-8)
    deep = _gp.log_h(np.array([-30.0, -1e3, -1e9]))
    assert np.all(np.isfinite(deep)) and np.all(np.diff(deep) < 0)
    # Asymptotically log h(z) ~ -z^2/2 - log(sqrt(2 pi)) - 2 log|z|.
    assert deep[1] == pytest.approx(-0.5e6 - 0.5 * math.log(2 * math.pi) - 2 * math.log(1e3), rel=1e-6)


def test_the_gp_matches_skopt_and_log_ei_gradients_match_finite_differences() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((25, 3))
    y = np.sin(5 * x[:, 0]) + x[:, 1] ** 2
    post = _gp.fit_posterior(x, y, _gp.FitSettings(), lambda *p: 0, {})
    reference = _gp.GaussianProcessRegressor(
        kernel=_gp._kernel(3, post.theta), optimizer=None, noise="gaussian", normalize_y=False
    ).fit(x, _gp.standardise(y))
    xt = rng.random((6, 3))
    mean, std = reference.predict(xt, return_std=True)
    ours_mean, ours_std = post.predict(xt)
    assert np.allclose(ours_mean, mean, atol=1e-8) and np.allclose(ours_std, std, rtol=1e-3, atol=1e-6)
    probe = rng.random((256, 3))
    (values,) = _gp.log_ei(post, probe)
    for x0 in probe[np.argsort(-values)[:3]]:  # where log-EI is moderate and its curvature small
        _, grad = _gp.log_ei(post, x0[None, :], grad=True)
        h = 1e-6
        numeric = [
            (_gp.log_ei(post, (x0 + h * e)[None, :])[0][0] - _gp.log_ei(post, (x0 - h * e)[None, :])[0][0])
            / (2 * h)
            for e in np.eye(3)
        ]
        assert np.allclose(grad[0], numeric, rtol=1e-4, atol=1e-6)


def test_a_pending_point_is_believed_at_the_gps_mean_not_at_the_best_loss() -> None:
    # The kriging believer: the surface is left as the results say, only the pending point's
    # uncertainty collapses (a lie of the best loss would pull the mean down around it).
    rng = np.random.default_rng(3)
    x = rng.random((20, 3))
    post = _gp.fit_posterior(x, np.sin(5 * x[:, 0]) + x[:, 1] ** 2, _gp.FitSettings(), lambda *p: 0, {})
    probe = rng.random((64, 3))
    pending = probe[:2]
    believed = post.believe(pending)
    mean, std = post.predict(probe)
    b_mean, b_std = believed.predict(probe)
    assert np.allclose(b_mean, mean, atol=1e-8)
    assert np.all(b_std[:2] < 0.2 * std[:2]) and np.all(b_std <= std + 1e-12)
    assert believed.best == post.best and len(believed.y) == len(post.y) + 2


def test_long_histories_fit_hyperparameters_on_a_bounded_subset_that_keeps_the_best() -> None:
    y = np.random.default_rng(1).standard_normal(500)
    idx = _gp._fit_subset(500, y, 200, seed=7)
    assert len(idx) == 200 == len(set(idx.tolist()))
    assert set(np.argsort(y)[:50].tolist()) <= set(idx.tolist())
    assert np.array_equal(idx, _gp._fit_subset(500, y, 200, seed=7))
    assert np.array_equal(_gp._fit_subset(150, y[:150], 200, seed=7), np.arange(150))


def test_anchors_are_every_8_points_up_to_300_then_every_32_and_never_go_back() -> None:
    fit = _gp.FitSettings()
    anchors = [fit.anchor(n) for n in range(1, 1200)]
    # Up to reuse_after, the schedule the search-quality figures were measured with.
    assert anchors[:300] == [n - n % 8 if n >= 8 else n for n in range(1, 301)]
    assert all(b >= a for a, b in itertools.pairwise(anchors))
    assert all(a <= n for n, a in zip(range(1, 1200), anchors, strict=True))
    # Beyond it, one full fit per 32 points, so any 32 consecutive asks pay for exactly one.
    for start in (301, 500, 977):
        window = anchors[start - 1 : start - 1 + 32]
        assert len(set(window)) in (1, 2) and fit.period(start) == 32
        assert sum(1 for n, a in zip(range(start, start + 32), window, strict=True) if n == a) == 1


def test_long_histories_condition_the_posterior_on_a_window_with_the_best_and_the_latest() -> None:
    y = np.random.default_rng(2).standard_normal(1000)
    idx = _gp._posterior_subset(1000, y, 300, seed=5)
    assert len(idx) == 300 == len(set(idx.tolist()))
    assert set(np.argsort(y)[:75].tolist()) <= set(idx.tolist())
    assert set(range(925, 1000)) <= set(idx.tolist())
    assert np.array_equal(idx, _gp._posterior_subset(1000, y, 300, seed=5))
    assert not np.array_equal(idx, _gp._posterior_subset(1000, y, 300, seed=6))
    assert np.array_equal(_gp._posterior_subset(300, y[:300], 300, seed=5), np.arange(300))
    # Through fit_posterior: the GP a long study's acquisition reads holds the window, best included.
    rng = np.random.default_rng(3)
    x = rng.random((60, 2))
    losses = np.sin(4 * x[:, 0]) + x[:, 1]
    small = _gp.FitSettings(anchor_every=4, reuse_after=20, anchor_every_long=8, posterior_window=24)
    post = _gp.fit_posterior(x, losses, small, lambda *p: 0, {})
    assert post.x.shape == (24, 2)
    assert post.best == pytest.approx(float(np.min(_gp.standardise(losses))))
    assert any(np.array_equal(row, x[int(np.argmin(losses))]) for row in post.x)


def test_a_rebuilt_long_study_asks_what_the_uninterrupted_one_would_next() -> None:
    # The long-study bounds scaled down: past the posterior window and several long anchors.
    space, fn, _ = branin()
    small = _gp.FitSettings(
        anchor_every=4, reuse_after=12, anchor_every_long=8, posterior_window=16, fit_window=12
    )
    original = BayesStrategy(space, mode="min", seed=6, n_initial_points=4, fit=small)
    ask_and_tell(original, 29, fn)
    in_flight = original.ask(2)
    fresh = replay(
        BayesStrategy, original, mode=original.mode, seed=original.seed, n_initial_points=4, fit=small
    )
    for point in in_flight:
        fresh._pending[params_key(point)] = point
    assert fresh.ask(2) == original.ask(2)
    # And the window changed what it asked: a strategy that conditions on everything asks elsewhere.
    everything = replace(small, posterior_window=10**9)
    full = replay(
        BayesStrategy, original, mode=original.mode, seed=original.seed, n_initial_points=4, fit=everything
    )
    assert full.ask(1) != replay(
        BayesStrategy, original, mode=original.mode, seed=original.seed, n_initial_points=4, fit=small
    ).ask(1)


def test_studies_recorded_under_the_gp_hedge_default_keep_their_hash() -> None:
    from hyperflow.components.fingerprint import config_hash

    # Hashes main's code computed before logEI became the default.
    old_default = {"search": {"bayes": {"acquisition": "gp_hedge"}}}
    assert config_hash(ExperimentConfig.model_validate(old_default)) == "44136fa355b3678a"
    old_rf = {"seed": 3, "search": {"bayes": {"surrogate": "RF", "acquisition": "gp_hedge"}}}
    assert config_hash(ExperimentConfig.model_validate(old_rf)) == "5597cc325776d4a4"
    assert config_hash(ExperimentConfig()) != "44136fa355b3678a"  # a logEI study is another study


def test_studies_recorded_under_the_worst_default_keep_their_hash() -> None:
    from hyperflow.components.fingerprint import config_hash

    # Hashes this code computed before `predicted` became search.bayes.pruned's default.
    assert config_hash(ExperimentConfig.model_validate({"search": {"bayes": {"pruned": "worst"}}})) == (
        "878b726c27b2d568"
    )
    assert config_hash(ExperimentConfig()) != "878b726c27b2d568"  # a predicted study is another study
    # Strategies that never read the key keep their hash without naming it.
    assert config_hash(ExperimentConfig.model_validate({"search": {"strategy": "random"}})) == (
        "71b1bdf722bd8198"
    )
    genetic = {"seed": 3, "search": {"strategy": "genetic"}}
    assert config_hash(ExperimentConfig.model_validate(genetic)) == "2acd6ab8cf9eed1d"
