"""Tests for learning-curve extrapolation and the early-stopping rules."""

from __future__ import annotations

import itertools
import json
import math
import pickle
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from hyperflow.components.config import ExperimentConfig
from hyperflow.components.curves import (
    FAMILIES,
    Prediction,
    StopDecision,
    StopPolicy,
    StopRule,
    make_stop_rule,
    metric_bounds,
    predict_final,
)

EPOCHS = 30
FINAL = EPOCHS - 1
EPOCH = np.arange(EPOCHS, dtype=float)
FORTY_PERCENT = int(0.4 * EPOCHS)  # 12 epochs seen, 18 to predict

DIGITS = json.loads((Path(__file__).parent / "data" / "digits_curves.json").read_text())["runs"]
DIGITS_METRICS = (("val_accuracy", "max", (0.0, 1.0)), ("val_loss", "min", (0.0, None)))


def _run_name(run: dict) -> str:
    return f"{run['optimizer']}-lr{run['learning_rate']:g}-{'x'.join(map(str, run['hidden_layers']))}"


# Synthetic curves come from shapes that are not among the fitted families: a shifted power law
# (pow4 with a free offset) and a tanh rise, whose tail no family has exactly.


def pow4_shape(top: float, start: float, rate: float, power: float) -> np.ndarray:
    return top - (top - start) * (1.0 + rate * EPOCH) ** -power


def tanh_shape(top: float, start: float, rate: float) -> np.ndarray:
    return start + (top - start) * np.tanh(rate * (EPOCH + 1.0))


def with_noise(clean: np.ndarray, seed: int, sigma: float = 0.005) -> list[float]:
    noise = np.random.default_rng(seed).normal(0.0, sigma, len(clean))
    return [float(v) for v in np.clip(clean + noise, 0.0, 1.0)]


def loss_shape(start: float, floor: float, rate: float, power: float) -> np.ndarray:
    return floor + (start - floor) * (1.0 + rate * EPOCH) ** -power


def with_loss_noise(clean: np.ndarray, seed: int, sigma: float = 0.02) -> list[float]:
    return [float(v) for v in clean * np.exp(np.random.default_rng(seed).normal(0, sigma, EPOCHS))]


def saturating_pow4(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return pow4_shape(
        rng.uniform(0.85, 0.98), rng.uniform(0.1, 0.5), rng.uniform(0.5, 2.0), rng.uniform(1.5, 2.5)
    )


def saturating_tanh(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return tanh_shape(rng.uniform(0.85, 0.98), rng.uniform(0.1, 0.5), rng.uniform(0.25, 0.5))


def first_stop(policy: StopPolicy, curve: list[float]) -> tuple[int, StopDecision] | None:
    """Replay a curve epoch by epoch as the training callback would; the first stop, if any."""
    for n in range(1, len(curve) + 1):
        decision = policy.check(curve[:n], len(curve) - 1)
        if decision is not None:
            return n, decision
    return None


def policy_after(
    kind: str, completed: list[list[float]], metric: str = "val_accuracy", **kwargs: object
) -> StopPolicy:
    mode = "min" if metric.endswith("loss") else "max"
    rule = StopRule(kind, metric=metric, mode=mode, **kwargs)  # type: ignore[arg-type]
    for curve in completed:
        rule.record(curve, "completed")
    return rule.snapshot()


# --------------------------------------------------------------------------------------------
# metric_bounds and predict_final


@pytest.mark.parametrize(
    ("metric", "bounds"),
    [
        ("val_accuracy", (0.0, 1.0)),
        ("test_auc", (0.0, 1.0)),
        ("f1", (0.0, 1.0)),
        ("val_precision", (0.0, 1.0)),
        ("recall", (0.0, 1.0)),
        ("val_loss", (0.0, None)),
        ("val_rmse", (0.0, None)),
        ("mse", (0.0, None)),
        ("val_mae", (0.0, None)),
        ("val_r2", (None, 1.0)),
        ("reward", (None, None)),
    ],
)
def test_metric_bounds(metric: str, bounds: tuple[float | None, float | None]) -> None:
    assert metric_bounds(metric) == bounds


def test_families_include_the_papers_core_set() -> None:
    names = {f.name for f in FAMILIES}
    assert {"pow3", "log_linear", "exp3", "mmf", "janoschek"} <= names


@pytest.mark.parametrize("shape", [saturating_pow4, saturating_tanh], ids=["shifted-power", "tanh"])
def test_synthetic_saturating_accuracy_predicted_within_002_from_40_percent(
    shape: Callable[[int], np.ndarray],
) -> None:
    for seed in range(20):
        clean = shape(seed)
        curve = with_noise(clean, seed + 1000)
        prediction = predict_final(curve[:FORTY_PERCENT], FINAL, bounds=(0.0, 1.0))
        assert prediction is not None
        assert abs(prediction.mean - clean[FINAL]) < 0.02, (seed, prediction, clean[FINAL])
        assert 0.0 < prediction.std < 0.1


def _levelled_off(curve: list[float]) -> bool:
    # Rose overall and spent its last ten epochs within 0.01: a learner that has saturated, not
    # one still climbing (SGD at 1e-3) nor one that collapsed (learning rate 0.3).
    return curve[-1] > curve[0] and max(curve[-10:]) - min(curve[-10:]) < 0.01


def test_digits_saturating_accuracy_predicted_within_002_from_40_percent() -> None:
    saturating = [run for run in DIGITS if _levelled_off(run["val_accuracy"])]
    assert len(saturating) >= 6
    for run in saturating:
        curve = run["val_accuracy"]
        prediction = predict_final(curve[:FORTY_PERCENT], FINAL, bounds=(0.0, 1.0))
        assert prediction is not None
        assert abs(prediction.mean - curve[FINAL]) < 0.02, (_run_name(run), prediction)


def saturating_loss(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return loss_shape(
        rng.uniform(1.5, 2.5), rng.uniform(0.05, 0.4), rng.uniform(0.5, 2.0), rng.uniform(1.5, 2.5)
    )


def test_saturating_loss_predicted_within_10_percent_from_40_percent() -> None:
    for seed in range(20):
        clean = saturating_loss(seed)
        curve = with_loss_noise(clean, seed + 1000)
        prediction = predict_final(curve[:FORTY_PERCENT], FINAL, bounds=(0.0, None), mode="min")
        assert prediction is not None
        assert abs(prediction.mean / clean[FINAL] - 1.0) < 0.1, (seed, prediction, clean[FINAL])
    levelled = [
        run["val_loss"]
        for run in DIGITS
        if run["val_loss"][-1] < run["val_loss"][0]
        and max(run["val_loss"][-10:]) - min(run["val_loss"][-10:]) < 0.02
    ]
    assert len(levelled) >= 4
    for curve in levelled:
        prediction = predict_final(curve[:FORTY_PERCENT], FINAL, bounds=(0.0, None), mode="min")
        assert prediction is not None
        assert abs(prediction.mean / curve[FINAL] - 1.0) < 0.1, (curve[FINAL], prediction)


def test_digits_finals_lie_within_three_std_of_the_prediction_from_40_percent() -> None:
    # Includes SGD at 1e-3, which plateaus and then climbs again: the uncertainty must cover a
    # second phase of learning that no family foresees.
    for run in DIGITS:
        for metric, mode, bounds in DIGITS_METRICS:
            curve = run[metric]
            prediction = predict_final(curve[:FORTY_PERCENT], FINAL, bounds=bounds, mode=mode)
            assert prediction is not None
            assert abs(curve[FINAL] - prediction.mean) < 3.0 * prediction.std, (
                _run_name(run),
                metric,
                prediction,
            )


def test_collapsed_accuracy_is_predicted_at_its_new_level() -> None:
    # Learning rate 0.3 diverges: accuracy falls to chance and stays there.
    collapsed = [run["val_accuracy"] for run in DIGITS if run["learning_rate"] == 0.3]
    assert collapsed
    for curve in collapsed:
        assert curve[0] > curve[FINAL] + 0.02  # the premise
        for n in range(FORTY_PERCENT, FINAL):
            prediction = predict_final(curve[:n], FINAL, bounds=(0.0, 1.0))
            assert prediction is not None
            assert abs(prediction.mean - curve[FINAL]) < 0.03, (n, prediction)


def _nasty_accuracy_curves() -> dict[str, list[float]]:
    rng = np.random.default_rng(0)
    return {
        "flat": [0.5] * 12,
        "noisy": [float(v) for v in rng.uniform(0.0, 1.0, 15)],
        "at_one": [1.0] * 8,
        "rises_to_one": [0.6, 0.9, 0.99, 1.0, 1.0, 1.0, 1.0],
        "steep_near_one": [0.5, 0.8, 0.95, 0.99, 0.999],
        "still_steep": [0.05, 0.2, 0.4, 0.6, 0.8, 0.95],
        "decreasing": [0.9 - 0.08 * i for i in range(10)],
        "sawtooth": [0.7 + 0.25 * (i % 2) for i in range(12)],
        "tiny_range": [0.3 + 1e-13 * i for i in range(6)],
    }


def test_accuracy_predictions_stay_within_bounds() -> None:
    curves = _nasty_accuracy_curves() | {_run_name(r): r["val_accuracy"] for r in DIGITS}
    for name, curve in curves.items():
        for n in range(3, len(curve) + 1):
            for final_epoch in (n, FINAL, 2 * EPOCHS):
                prediction = predict_final(curve[:n], final_epoch, bounds=(0.0, 1.0))
                assert prediction is not None, (name, n)
                assert 0.0 <= prediction.mean <= 1.0, (name, n, prediction)
                assert math.isfinite(prediction.std) and prediction.std >= 0.0
                for value in (0.0, 0.5, 0.97, 0.999):
                    assert 0.0 <= prediction.prob_better_than(value, "max") <= 1.0
                # Nothing beats a perfect accuracy.
                assert prediction.prob_better_than(1.0, "max") == 0.0


def test_loss_predictions_stay_non_negative() -> None:
    curves = {
        "plunges_to_zero": [1.0, 0.5, 0.2, 0.05, 0.01, 0.002],
        "linear_down": [2.0 - 0.3 * i for i in range(7)],
        "flat": [0.4] * 10,
        "rising": [0.2 + 0.1 * i for i in range(8)],
    } | {_run_name(r): r["val_loss"] for r in DIGITS}
    for name, curve in curves.items():
        for n in range(3, len(curve) + 1):
            prediction = predict_final(curve[:n], 2 * EPOCHS, bounds=(0.0, None), mode="min")
            assert prediction is not None, (name, n)
            assert prediction.mean >= 0.0, (name, n, prediction)
            assert prediction.prob_better_than(0.0, "min") == 0.0


def test_uncertainty_stays_within_reason() -> None:
    # A shape the points barely pin down must not blow the spread up by orders of magnitude.
    for run in DIGITS:
        for metric, mode, bounds in DIGITS_METRICS:
            curve = run[metric]
            for n in range(5, FINAL):
                prediction = predict_final(curve[:n], FINAL, bounds=bounds, mode=mode)
                assert prediction is not None
                observed = max(curve[:n]) - min(curve[:n])
                assert prediction.std < 10.0 * observed, (_run_name(run), metric, n, prediction)


def test_identical_values_after_a_rough_start_are_no_certainty() -> None:
    # After the collapse the accuracy sits at exactly 0.1 for five epochs, then wobbles by 1/360.
    collapsed = next(
        run["val_accuracy"] for run in DIGITS if run["optimizer"] == "adam" and run["learning_rate"] == 0.3
    )
    assert len(set(collapsed[5:10])) == 1  # the premise
    prediction = predict_final(collapsed[:10], FINAL, bounds=(0.0, 1.0))
    assert prediction is not None
    assert prediction.std > 0.001
    assert abs(prediction.mean - collapsed[FINAL]) < 3.0 * prediction.std


def test_unbounded_metric_can_be_predicted_past_its_observed_range() -> None:
    curve = [float(v) for v in 10.0 * np.log1p(EPOCH[:10])]
    prediction = predict_final(curve, FINAL)
    assert prediction is not None
    assert prediction.mean > curve[-1]


def test_too_few_or_non_finite_points_predict_nothing() -> None:
    assert predict_final([], FINAL) is None
    assert predict_final([0.5, 0.6], FINAL) is None
    assert predict_final([0.5, float("nan"), 0.7, 0.8], FINAL) is None
    assert predict_final([0.5, 0.6, float("inf"), 0.8], FINAL) is None
    assert predict_final([0.5, 0.6, 0.7], FINAL) is not None


def test_observed_final_epoch_is_returned_as_is() -> None:
    prediction = predict_final([0.5, 0.6, 0.7, 0.65], 2, bounds=(0.0, 1.0))
    assert prediction is not None
    assert (prediction.mean, prediction.std) == (0.7, 0.0)


def test_invalid_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="mode"):
        predict_final([0.1, 0.2, 0.3], FINAL, mode="up")
    with pytest.raises(ValueError, match="final_epoch"):
        predict_final([0.1, 0.2, 0.3], -1)
    with pytest.raises(ValueError, match="mode"):
        Prediction(0.5, 0.1, {}).prob_better_than(0.4, "up")


def test_predictions_keep_no_state_between_calls() -> None:
    curve = DIGITS[3]["val_accuracy"][:10]
    first = predict_final(curve, FINAL, bounds=(0.0, 1.0))
    for other in _nasty_accuracy_curves().values():
        predict_final(other, FINAL, bounds=(0.0, 1.0))
    predict_final([0.1, float("nan"), 0.3], FINAL)
    assert predict_final(curve, FINAL, bounds=(0.0, 1.0)) == first


def test_weights_form_a_distribution_over_the_families() -> None:
    prediction = predict_final(DIGITS[7]["val_accuracy"][:10], FINAL, bounds=(0.0, 1.0))
    assert prediction is not None
    assert sum(prediction.weights.values()) == pytest.approx(1.0)
    assert all(w >= 0.0 for w in prediction.weights.values())
    assert {f.name for f in FAMILIES} & set(prediction.weights)


def test_uncertainty_shrinks_as_the_curve_fills_in() -> None:
    curve = with_noise(pow4_shape(0.95, 0.2, 0.3, 1.5), seed=3)
    stds = [predict_final(curve[:n], FINAL, bounds=(0.0, 1.0)).std for n in (6, 12, 24)]  # type: ignore[union-attr]
    assert stds[0] > stds[1] > stds[2]


def test_probability_is_a_survival_function() -> None:
    prediction = predict_final(DIGITS[4]["val_accuracy"][:8], FINAL, bounds=(0.0, 1.0))
    assert prediction is not None
    values = np.linspace(0.9, 0.999, 20)
    above = [prediction.prob_better_than(float(v), "max") for v in values]
    assert all(a >= b for a, b in itertools.pairwise(above))
    for v in values:
        total = prediction.prob_better_than(float(v), "max") + prediction.prob_better_than(float(v), "min")
        assert total == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------
# curve_fit: stops what will lose, keeps what will win


def test_curve_clearly_below_the_best_is_stopped_early() -> None:
    best = with_noise(pow4_shape(0.95, 0.3, 1.0, 1.5), seed=1)
    policy = policy_after("curve_fit", [best])
    losers = {
        "shifted-power": with_noise(pow4_shape(0.86, 0.3, 1.0, 2.0), seed=2),
        "tanh": with_noise(tanh_shape(0.88, 0.2, 0.2), seed=3),
        "slow-and-low": with_noise(pow4_shape(0.85, 0.1, 0.2, 1.0), seed=4),
    }
    for name, curve in losers.items():
        stop = first_stop(policy, curve)
        assert stop is not None, name
        epochs, decision = stop
        assert epochs <= EPOCHS // 2, (name, epochs)
        assert decision.predicted is not None and decision.predicted < best[-1]
        assert decision.probability is not None and decision.probability < 0.05
        assert "val_accuracy" in decision.reason


def test_slow_starter_that_overtakes_is_not_stopped() -> None:
    fast = with_noise(pow4_shape(0.93, 0.6, 2.0, 2.0), seed=5)
    slow_starters = {
        "shifted-power": with_noise(pow4_shape(0.98, 0.1, 0.3, 2.0), seed=6),
        "tanh": with_noise(tanh_shape(0.98, 0.1, 0.08), seed=7),
    }
    for name, slow in slow_starters.items():
        assert slow[4] < fast[4] - 0.1 and slow[-1] > fast[-1], name  # the premise
        assert first_stop(policy_after("curve_fit", [fast]), slow) is None, name
        # The median rule, which cannot see where a curve is heading, stops it.
        assert first_stop(policy_after("median", [fast]), slow) is not None, name


def _digits_pairs(metric: str) -> tuple[list[tuple[list, list]], list[tuple[list, list]]]:
    """(best completed, trial) pairs: clearly worse trials, and slow starters that win."""
    worse, overtakers = [], []
    for a, b in itertools.permutations([run[metric] for run in DIGITS], 2):
        if metric == "val_accuracy":
            clearly_worse = b[-1] < a[-1] - 0.05
            overtakes = b[-1] > a[-1] + 0.005 and b[4] < a[4]
        else:
            clearly_worse = b[-1] > 1.3 * a[-1]
            overtakes = b[-1] < a[-1] - 0.005 and b[4] > a[4]
        if clearly_worse:
            worse.append((a, b))
        if overtakes:
            overtakers.append((a, b))
    return worse, overtakers


@pytest.mark.parametrize("metric", ["val_accuracy", "val_loss"])
def test_digits_curves_clearly_worse_are_stopped_and_overtakers_are_not(metric: str) -> None:
    worse, overtakers = _digits_pairs(metric)
    assert len(worse) >= 20 and len(overtakers) >= 3
    for best, trial in worse:
        stop = first_stop(policy_after("curve_fit", [best], metric=metric), trial)
        assert stop is not None, (best[-1], trial[-1])
        predicted = stop[1].predicted
        assert predicted is not None
        if metric == "val_loss":
            assert predicted >= 0.0 and predicted > best[-1]
        else:
            assert 0.0 <= predicted < best[-1]
    for best, trial in overtakers:
        assert first_stop(policy_after("curve_fit", [best], metric=metric), trial) is None


def test_loss_clearly_worse_is_stopped_and_late_winner_is_not() -> None:
    best = with_loss_noise(loss_shape(2.3, 0.25, 1.5, 1.5), seed=8)
    policy = policy_after("curve_fit", [best], metric="val_loss")
    worse = with_loss_noise(loss_shape(2.3, 0.5, 1.0, 1.5), seed=9)
    stop = first_stop(policy, worse)
    assert stop is not None
    assert stop[0] <= EPOCHS // 2
    assert stop[1].predicted is not None and stop[1].predicted >= 0.0
    assert stop[1].predicted > best[-1]

    late_winner = with_loss_noise(loss_shape(2.3, 0.12, 0.15, 2.0), seed=10)
    assert late_winner[4] > best[4] + 0.5 and late_winner[-1] < best[-1]  # the premise
    assert first_stop(policy, late_winner) is None


# --------------------------------------------------------------------------------------------
# The rule's record: any order, only completed trials count


@pytest.mark.parametrize("mode", ["max", "min"])
def test_best_completed_is_the_true_best_in_any_order(mode: str) -> None:
    metric = "val_accuracy" if mode == "max" else "val_loss"
    sign = 1.0 if mode == "max" else -1.0
    # Pruned and failed trials carry better values than any completed one: they must never win.
    results = [
        ([0.5, 0.7, sign * 0.1 + 0.75], "completed"),
        ([0.5, 0.6, sign * 0.2 + 0.75], "completed"),
        ([0.4, 0.5, sign * 0.05 + 0.75], "completed"),
        ([0.5, sign * 0.3 + 0.75], "pruned"),
        ([0.6, sign * 0.4 + 0.75], "failed"),
        ([0.6, float("nan")], "failed"),
    ]
    pick = max if mode == "max" else min
    for order in itertools.permutations(results):
        rule = StopRule("curve_fit", metric=metric, mode=mode)
        seen: list[float] = []
        for curve, state in order:
            rule.record(curve, state)
            if state == "completed":
                seen.append(curve[-1])
            assert rule.best_completed == (pick(seen) if seen else None)
        assert rule.best_completed == pytest.approx(sign * 0.2 + 0.75)


def test_best_completed_survives_random_parallel_arrival() -> None:
    rng = random.Random(0)
    finals = [rng.uniform(0.5, 0.99) for _ in range(40)]
    states = [rng.choice(["completed", "pruned", "failed"]) for _ in finals]
    states[0] = "completed"
    expected = max(f for f, s in zip(finals, states, strict=True) if s == "completed")
    for _ in range(50):
        order = list(zip(finals, states, strict=True))
        rng.shuffle(order)
        rule = StopRule("median", metric="val_accuracy", mode="max")
        for final, state in order:
            rule.record([0.3, final], state)
        assert rule.best_completed == expected


def test_nothing_stops_without_a_completed_trial() -> None:
    hopeless = [0.1] * EPOCHS
    for kind in ("curve_fit", "median"):
        rule = StopRule(kind, metric="val_accuracy", mode="max", min_epochs=1)
        rule.record([0.9] * EPOCHS, "pruned")
        rule.record([0.95] * EPOCHS, "failed")
        assert rule.best_completed is None
        assert first_stop(rule.snapshot(), hopeless) is None


def test_snapshot_is_picklable_and_independent_of_later_records() -> None:
    rule = StopRule("curve_fit", metric="val_accuracy", mode="max", min_epochs=3)
    rule.record([0.5, 0.6, 0.7], "completed")
    snapshot = rule.snapshot()
    rule.record([0.9, 0.95, 0.99], "completed")
    assert snapshot.best == 0.7
    assert rule.snapshot().best == 0.99

    clone = pickle.loads(pickle.dumps(snapshot))
    assert clone == snapshot
    trial = with_noise(pow4_shape(0.8, 0.3, 1.0, 1.5), seed=11)
    # This trial beats 0.7 but not 0.99: each snapshot answers for the time it was taken.
    assert first_stop(clone, trial) is None
    assert first_stop(pickle.loads(pickle.dumps(rule.snapshot())), trial) is not None


# --------------------------------------------------------------------------------------------
# median, none, min_epochs, every


def test_median_rule_compares_with_completed_trials_at_the_same_epoch() -> None:
    completed = [[0.9] * 10, [0.8] * 10, [0.1] * 3]  # the short one never reached epoch 5
    policy = policy_after("median", completed, min_epochs=1)
    # At epoch 5 the median is that of 0.9 and 0.8; counting the short trial would make it 0.8.
    decision = policy.check([0.84] * 6, FINAL)
    assert decision is not None
    assert decision.predicted is None and decision.probability is None
    assert "median" in decision.reason
    assert policy.check([0.86] * 6, FINAL) is None
    # At epoch 1 all three count: the median is 0.8.
    assert policy.check([0.84] * 2, FINAL) is None
    # Past every completed trial's length nothing compares.
    assert policy.check([0.0] * 12, FINAL) is None


def test_median_rule_for_a_metric_to_minimise() -> None:
    policy = policy_after("median", [[0.2] * 8, [0.4] * 8, [0.3] * 8], metric="val_loss")
    assert policy.check([0.35] * 6, FINAL) is not None
    assert policy.check([0.25] * 6, FINAL) is None


def test_none_never_stops() -> None:
    policy = policy_after("none", [[0.99] * EPOCHS], min_epochs=1)
    assert first_stop(policy, [0.01] * EPOCHS) is None


@pytest.mark.parametrize("every", [1, 3])
@pytest.mark.parametrize("kind", ["curve_fit", "median"])
def test_min_epochs_and_every_are_respected(kind: str, every: int) -> None:
    policy = policy_after(kind, [[0.97] * EPOCHS], min_epochs=7, every=every)
    hopeless = [0.1 + 0.001 * i for i in range(EPOCHS)]
    stops = [n for n in range(1, EPOCHS + 1) if policy.check(hopeless[:n], FINAL) is not None]
    assert stops == list(range(7, EPOCHS, every))


def test_final_epoch_is_never_stopped() -> None:
    policy = policy_after("curve_fit", [[0.97] * EPOCHS], min_epochs=1)
    assert policy.check([0.1] * EPOCHS, FINAL) is None


def test_rule_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="kind"):
        StopRule("successive_halving", metric="val_accuracy", mode="max")
    with pytest.raises(ValueError, match="max_epochs"):
        StopRule("hyperband", metric="val_accuracy", mode="max")
    with pytest.raises(ValueError, match="reduction_factor"):
        StopRule("asha", metric="val_accuracy", mode="max", max_epochs=30, reduction_factor=1)
    with pytest.raises(ValueError, match="rung before the last epoch"):
        StopRule("asha", metric="val_accuracy", mode="max", min_epochs=30, max_epochs=30)
    with pytest.raises(ValueError, match="mode"):
        StopRule("median", metric="val_accuracy", mode="up")
    with pytest.raises(ValueError, match="threshold"):
        StopRule("curve_fit", metric="val_accuracy", mode="max", threshold=1.5)
    with pytest.raises(ValueError, match="state"):
        StopRule("median", metric="val_accuracy", mode="max").record([0.5], "interrupted")


def test_make_stop_rule_reads_the_experiment() -> None:
    cfg = ExperimentConfig.model_validate(
        {
            "search": {"metric": "val_loss"},
            "early_stopping": {"kind": "median", "min_epochs": 3, "threshold": 0.1, "every": 2},
        }
    )
    rule = make_stop_rule(cfg)
    assert (rule.kind, rule.metric, rule.mode) == ("median", "val_loss", "min")
    assert (rule.min_epochs, rule.threshold, rule.every) == (3, 0.1, 2)
    assert rule.snapshot().bounds == (0.0, None)
    assert make_stop_rule(ExperimentConfig()).mode == "max"
