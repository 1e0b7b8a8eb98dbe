"""ASHA and Hyperband: rungs, brackets, the published rule, parallel trials, resume, config."""

from __future__ import annotations

import heapq
import itertools
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hyperflow.components.config import ConfigError, validate_config
from hyperflow.components.curves import StopPolicy, StopRule, make_stop_rule
from hyperflow.components.stopping import (
    bracket_of,
    bracket_sizes,
    hyperband_brackets,
    judge_at_rung,
    rung_epochs,
)

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 30


def synthetic_curves(
    n: int, seed: int, *, mode: str = "max", epochs: int = EPOCHS, step: float = 0.0
) -> list[list[float]]:
    """Saturating curves of varied height and speed, some crossing others late; `step` rounds
    them (as an accuracy on a small validation split is), which makes ties."""
    rng = np.random.default_rng(seed)
    x = np.arange(1, epochs + 1, dtype=float)
    curves = []
    for _ in range(n):
        top, start, rate = rng.uniform(0.6, 0.98), rng.uniform(0.1, 0.5), rng.uniform(0.05, 0.8)
        y = top - (top - start) * np.exp(-rate * x) + rng.normal(0.0, 0.01, epochs)
        if step:
            y = np.round(y / step) * step
        curves.append([float(v) for v in (y if mode == "max" else 1.0 - y)])
    return curves


def stop_epoch(policy: StopPolicy, curve: list[float]) -> int | None:
    """Replay a curve as the training callback does: the epochs trained when it was stopped."""
    final = len(curve) - 1
    for n in range(1, len(curve) + 1):
        if n - 1 < final and policy.check(curve[:n], final) is not None:
            return n
    return None


def run_sequential(rule: StopRule, curves: list[list[float]]) -> list[int | None]:
    """A study at n_parallel = 1: trial i is planned after trials 0..i-1 finished."""
    stops = []
    for number, curve in enumerate(curves):
        stop = stop_epoch(rule.snapshot(number), curve)
        rule.record(curve[:stop] if stop else curve, "pruned" if stop else "completed", number)
        stops.append(stop)
    return stops


def ray_asha_stops(
    curves: list[list[float]], mode: str, *, grace: int, reduction_factor: int, max_t: int, s: int = 0
) -> list[int | None]:
    """Ray Tune's ASHA on the same curves, reported once per epoch (training_iteration = epochs).

    A transcription of `ray.tune.schedulers.async_hyperband` (ray is not a dependency): one
    `_Bracket(min_t=grace, max_t, reduction_factor, s)`, its milestones ``grace · rf^(k + s)``
    for ``k < int(log(max_t / grace) / log(rf) - s + 1)``, a trial judged at the highest
    milestone it reached and is not yet recorded at, stopped when its reward (negated for
    ``min``) is below ``np.nanpercentile(recorded, (1 - 1 / rf) · 100)``, and recorded there either
    way. A result at ``max_t`` ends the trial without a judgement, as `on_trial_result` does.
    """
    op = 1.0 if mode == "max" else -1.0
    n_rungs = int(np.log(max_t / grace) / np.log(reduction_factor) - s + 1)
    rungs: list[tuple[float, dict[int, float]]] = [
        (grace * reduction_factor ** (k + s), {}) for k in reversed(range(n_rungs))
    ]
    stops: list[int | None] = []
    for trial, curve in enumerate(curves):
        stop = None
        for it in range(1, len(curve) + 1):
            reward = op * curve[it - 1]
            if it >= max_t:
                break
            for milestone, recorded in rungs:
                if it < milestone or trial in recorded:
                    continue
                cutoff = (
                    np.nanpercentile(list(recorded.values()), (1 - 1 / reduction_factor) * 100)
                    if recorded
                    else None
                )
                if cutoff is not None and reward < cutoff:
                    stop = it
                recorded[trial] = reward
                break
            if stop is not None:
                break
        stops.append(stop)
    return stops


# --------------------------------------------------------------------------------------------
# Rungs and brackets


def test_rungs_lie_below_the_maximum_epochs() -> None:
    assert rung_epochs(5, 3, 30) == (5, 15)
    assert rung_epochs(5, 3, 45) == (5, 15), "a rung at the last epoch judges nothing"
    assert rung_epochs(5, 3, 46) == (5, 15, 45)
    assert rung_epochs(1, 2, 10) == (1, 2, 4, 8)
    assert rung_epochs(30, 3, 30) == ()


def test_bracket_sizes_are_li_et_als() -> None:
    # Hyperband's Table 1 (R = 81, eta = 3): n = 81, 34, 15, 8, 5 for s = 4 .. 0.
    assert bracket_sizes(5, 3) == (81, 34, 15, 8, 5)
    assert hyperband_brackets(1, 3, 81) == 5
    assert hyperband_brackets(5, 3, 30) == 2  # floor(log3(30 / 5)) + 1
    assert hyperband_brackets(5, 3, 45) == 3  # the last bracket starts at 45: no stopping at all


def test_a_trials_bracket_comes_from_its_number_alone() -> None:
    sizes = bracket_sizes(3, 3)
    rounds = [bracket_of(n, 3, 3) for n in range(2 * sum(sizes))]
    assert rounds[: sum(sizes)] == rounds[sum(sizes) :], "every round is the same"
    assert [rounds[: sum(sizes)].count(b) for b in range(3)] == list(sizes)
    assert set(rounds[:5]) == {0, 1, 2}, "the brackets interleave: the first trials cover them all"
    rule = StopRule("hyperband", metric="val_accuracy", mode="max", min_epochs=5, max_epochs=60)
    again = StopRule("hyperband", metric="val_accuracy", mode="max", min_epochs=5, max_epochs=60)
    assert [rule.snapshot(n).bracket for n in range(40)] == [again.snapshot(n).bracket for n in range(40)]
    assert rule.snapshot(3).rungs == (45,) and rule.snapshot(3).first_rung == 2
    with pytest.raises(ValueError, match="trial number"):
        rule.snapshot()


# --------------------------------------------------------------------------------------------
# The published rule


def test_a_rung_keeps_what_reaches_the_quantile_of_the_values_recorded_there() -> None:
    rule = StopRule("asha", metric="val_accuracy", mode="max", min_epochs=1, max_epochs=10)
    assert rule.rungs == (1, 3, 9)
    for value in (0.9, 0.8, 0.7, 0.6, 0.5):
        rule.record([value] * 10, "completed")
    policy = rule.snapshot()
    assert policy.rung_values[0] == (0.5, 0.6, 0.7, 0.8, 0.9)
    # The 2/3 quantile of the five: between the 3rd (0.7) and 4th (0.8) value, 2/3 of the way.
    decision = policy.check([0.75], 9)
    assert decision is not None and decision.rung == 0 and decision.cutoff == pytest.approx(0.7 + 0.2 / 3)
    assert "rung 0 (1 epoch)" in decision.reason and "cut-off 0.766667" in decision.reason
    assert "66.67th percentile of the 5 values recorded there (the best 1/3 go on)" in decision.reason
    assert policy.check([0.77], 9) is None, "above the cut-off goes on, second best of six as it is"
    assert policy.check([0.75, 0.75], 9) is None, "only rungs are judged"
    assert decision.predicted is None
    for _ in range(3):
        rule.record([0.8] * 10, "completed")
    assert rule.snapshot().check([0.8], 9) is None, "a tie with the cut-off goes on"
    assert rule.snapshot().check([0.79], 9) is not None


def test_the_first_trials_at_a_rung_are_judged_on_the_quantile_not_a_count() -> None:
    first = judge_at_rung(0.5, [], 3, "max")
    assert first.keep and first.cutoff is None, "the first trial at a rung always goes on"
    assert not judge_at_rung(0.5, [0.6], 3, "max").keep, "against one value: reach it"
    assert judge_at_rung(0.6, [0.6], 3, "max").keep
    # Of 0.6 and 0.65 the 2/3 quantile is 0.6333: 0.64 goes on, though not the best of the three
    # (Optuna's count, the top max(1, 3 // 3) of three, would stop it).
    assert judge_at_rung(0.64, [0.6, 0.65], 3, "max").keep
    assert not judge_at_rung(0.63, [0.6, 0.65], 3, "max").keep
    # Lower is better: the 1/3 quantile, 0.6167.
    assert judge_at_rung(0.61, [0.6, 0.65], 3, "min").keep
    assert not judge_at_rung(0.62, [0.6, 0.65], 3, "min").keep
    with pytest.raises(ValueError, match="mode"):
        judge_at_rung(0.5, [0.6], 3, "up")


@pytest.mark.parametrize("rf", [3, 4])
@pytest.mark.parametrize(("mode", "step"), [("max", 0.0), ("min", 0.0), ("max", 0.01)])
def test_asha_stops_where_ray_tunes_asha_does(mode: str, step: float, rf: int) -> None:
    curves = synthetic_curves(60, seed=1, mode=mode, step=step)
    metric = "val_accuracy" if mode == "max" else "val_loss"
    rule = StopRule("asha", metric=metric, mode=mode, min_epochs=2, reduction_factor=rf, max_epochs=EPOCHS)
    ours = run_sequential(rule, curves)
    assert ours == ray_asha_stops(curves, mode, grace=2, reduction_factor=rf, max_t=EPOCHS)
    stopped = [s for s in ours if s is not None]
    assert set(rule.rungs) == set(stopped), "trials stop at every rung, and only at rungs"
    assert sum(s is None for s in ours) < len(curves) / rf


def test_hyperband_runs_asha_from_its_bracket_on_over_its_own_trials() -> None:
    curves = synthetic_curves(80, seed=2)
    rule = StopRule(
        "hyperband", metric="val_accuracy", mode="max", min_epochs=1, reduction_factor=3, max_epochs=EPOCHS
    )
    assert rule.rungs == (1, 3, 9, 27) and rule.n_brackets == 4
    ours = run_sequential(rule, curves)
    brackets = [rule.bracket(n) for n in range(len(curves))]
    assert set(brackets) == {0, 1, 2, 3}
    for b in range(rule.n_brackets):
        mine = [i for i, x in enumerate(brackets) if x == b]
        reference = ray_asha_stops(
            [curves[i] for i in mine], "max", grace=1, reduction_factor=3, max_t=EPOCHS, s=b
        )
        assert [ours[i] for i in mine] == reference, f"bracket {b}"
        assert all(s is None or s >= 3**b for s in reference), "a bracket judges from its own rung on"
    assert any(ours[i] is not None for i, x in enumerate(brackets) if x == 0)


def test_a_stopped_trials_reason_names_its_bracket_rung_and_cut_off() -> None:
    rule = StopRule(
        "hyperband", metric="val_loss", mode="min", min_epochs=2, reduction_factor=2, max_epochs=9
    )
    number = next(n for n in range(20) if rule.bracket(n) == 1)
    for other in range(20):
        if rule.bracket(other) == 1 and other != number:
            rule.record([0.3] * 9, "completed", other)
    decision = rule.snapshot(number).check([0.9] * 4, 8)
    assert decision is not None and decision.rung == 1
    assert re.search(
        r"hyperband \(bracket 1\): val_loss 0\.9 at rung 1 \(4 epochs\) is above the rung's cut-off 0\.3, "
        r"the 50th percentile of the \d+ values recorded there \(the best 1/2 go on\)",
        decision.reason,
    )


def test_failed_trials_never_count_and_pruned_ones_only_where_they_got() -> None:
    rule = StopRule(
        "asha", metric="val_accuracy", mode="max", min_epochs=2, reduction_factor=2, max_epochs=10
    )
    rule.record([0.99] * 10, "failed")
    rule.record([0.9] * 4, "pruned")
    rule.record([0.5] * 10, "completed")
    policy = rule.snapshot()
    assert policy.rungs == (2, 4, 8)
    assert policy.rung_values == ((0.5, 0.9), (0.5, 0.9), (0.5,))


def test_a_trial_whose_own_budget_ends_before_a_rung_simply_completes() -> None:
    cfg = validate_config(
        {
            "search": {"space": {"max_epochs": {"low": 4, "high": 20}}},
            "early_stopping": {"kind": "asha", "min_epochs": 5, "reduction_factor": 3},
        }
    )
    rule = make_stop_rule(cfg)
    assert rule.rungs == (5, 15), "rungs go up to the space's upper bound"
    for _ in range(3):
        rule.record([0.95] * 20, "completed")
    policy = rule.snapshot()
    assert stop_epoch(policy, [0.2] * 20) == 5
    assert stop_epoch(policy, [0.2] * 10) == 5, "a 10-epoch trial is judged at rung 5 ..."
    assert stop_epoch(policy, [0.2] * 5) is None, "... a 5-epoch one is not: its last epoch is no rung"


# --------------------------------------------------------------------------------------------
# Parallel trials and resume


@pytest.mark.parametrize("kind", ["asha", "hyperband"])
def test_parallel_trials_finishing_out_of_order_are_judged_by_what_had_finished(kind: str) -> None:
    """Three trials in flight, of random lengths: each is judged against exactly the trials that
    had finished when it was planned (hyperband: those of its bracket, from its bracket's rung
    on), whatever order they finished in."""
    curves = synthetic_curves(60, seed=3)
    rng = np.random.default_rng(4)
    rule = StopRule(
        kind, metric="val_accuracy", mode="max", min_epochs=2, reduction_factor=3, max_epochs=EPOCHS
    )
    running: list[tuple[float, int]] = []  # (finish time, number)
    finished: list[int] = []
    outcome: dict[int, list[float]] = {}
    seen_at_plan: dict[int, list[int]] = {}
    stops: dict[int, int | None] = {}
    now, number = 0.0, 0
    while number < len(curves) or running:
        while number < len(curves) and len(running) < 3:
            policy = rule.snapshot(number)
            seen_at_plan[number] = list(finished)
            stops[number] = stop_epoch(policy, curves[number])
            epochs = stops[number] or EPOCHS
            heapq.heappush(running, (now + epochs * rng.uniform(0.2, 3.0), number))
            number += 1
        now, done = heapq.heappop(running)
        stop = stops[done]
        outcome[done] = curves[done][:stop] if stop else curves[done]
        rule.record(outcome[done], "pruned" if stop else "completed", done)
        finished.append(done)
    assert finished != sorted(finished), "trials finished out of order"

    for t, seen in seen_at_plan.items():
        # The reference, by hand: at each rung of its bracket, stop below the 2/3 quantile of
        # the values there of the trials (of its bracket) finished at planning time.
        bracket = rule.bracket(t)
        mates = [u for u in seen if rule.bracket(u) == bracket]
        expected = None
        for r in rule.rungs[bracket:]:
            at_rung = [outcome[u][r - 1] for u in mates if len(outcome[u]) >= r]
            if at_rung and curves[t][r - 1] < np.percentile(at_rung, 100 * 2 / 3):
                expected = r
                break
        assert stops[t] == expected, f"trial {t}"
    assert any(s is not None for s in stops.values()) and any(s is None for s in stops.values())
    unseen = [t for t, seen in seen_at_plan.items() if set(range(t)) - set(seen)]
    assert len(unseen) > len(curves) / 2, "trials planned while earlier ones were still in flight"


@pytest.mark.parametrize("kind", ["asha", "hyperband"])
def test_a_snapshot_does_not_depend_on_the_order_trials_finished_in(kind: str) -> None:
    curves = synthetic_curves(5, seed=5)
    snapshots = set()
    for order in itertools.permutations(range(5)):
        rule = StopRule(kind, metric="val_accuracy", mode="max", min_epochs=1, max_epochs=EPOCHS)
        for i in order:
            rule.record(curves[i][: 1 + i * 4], "pruned" if i < 4 else "completed", i)
        snapshots.add(rule.snapshot(0))
    (snapshot,) = snapshots
    assert sum(map(len, snapshot.rung_values)) >= 4, "the snapshot holds the finished trials' values"


@pytest.mark.parametrize("kind", ["asha", "hyperband"])
@pytest.mark.parametrize("stop_after", [1, 7, 23])
def test_a_rule_rebuilt_from_the_finished_trials_decides_as_before(kind: str, stop_after: int) -> None:
    """What resume does: a fresh rule is told the finished trials (in the order they ended)."""
    curves = synthetic_curves(40, seed=6)

    def new_rule() -> StopRule:
        return StopRule(kind, metric="val_accuracy", mode="max", min_epochs=1, max_epochs=EPOCHS)

    whole = run_sequential(new_rule(), curves)
    first = run_sequential(new_rule(), curves[:stop_after])
    assert first == whole[:stop_after]
    rebuilt = new_rule()
    for number, stop in enumerate(first):
        rebuilt.record(
            curves[number][:stop] if stop else curves[number], "pruned" if stop else "completed", number
        )
    rest = []
    for number in range(stop_after, len(curves)):
        stop = stop_epoch(rebuilt.snapshot(number), curves[number])
        rebuilt.record(
            curves[number][:stop] if stop else curves[number], "pruned" if stop else "completed", number
        )
        rest.append(stop)
    assert first + rest == whole
    assert sum(s is not None for s in whole) > len(curves) / 2


def _toy_objective(params: dict[str, Any], report: Any) -> float:
    value = 0.0
    for epoch in range(params["max_epochs"]):
        value = params["quality"] * (1.0 - np.exp(-params["speed"] * (epoch + 1)))
        report(epoch, float(value))
    return float(value)


def _toy_config(tmp_path: Path, kind: str, n_trials: int, name: str) -> Any:
    return validate_config(
        {
            "name": f"toy-{kind}-{name}",
            "model": {"module": "toy_stopping:objective", "max_epochs": 12},
            "search": {
                "strategy": "random",
                "metric": "score",
                "mode": "max",
                "n_trials": n_trials,
                "space": {"quality": {"low": 0.1, "high": 1.0}, "speed": {"low": 0.05, "high": 1.0}},
            },
            "early_stopping": {"kind": kind, "min_epochs": 1, "reduction_factor": 2},
            "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
        }
    )


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["asha", "hyperband"])
def test_a_resumed_study_decides_as_the_uninterrupted_one(in_tmp: Path, kind: str) -> None:
    """Through MLflow: a study killed between trials and resumed prunes as the uninterrupted one."""
    from mlflow.tracking import MlflowClient

    from hyperflow.components.lifecycle import open_study
    from hyperflow.components.resume import resume_study
    from hyperflow.components.study import Study, execute_trial
    from hyperflow.components.usercode import registered

    def run(study: Study, n: int) -> None:
        for _ in range(n):
            (plan,) = study.plan(limit=1)
            study.record(plan, execute_trial(None, plan, study.spec))

    def decisions(study: Study) -> list[tuple[Any, ...]]:
        client = MlflowClient(study.tracker.uri)
        out = []
        for r in sorted(study.records, key=lambda r: r.number):
            tags = client.get_run(r.run_id).data.tags
            out.append((r.number, r.params, r.state, r.epochs_trained, tags.get("hyperflow.stop_reason")))
        return out

    n = 14
    tmp_path = in_tmp  # the store's artifacts (mlruns/) land in the working directory
    with registered("toy_stopping:objective", _toy_objective):
        whole = open_study(_toy_config(tmp_path, kind, n, "whole"), None)
        run(whole, n)
        whole.abort("interrupted")

        cfg = _toy_config(tmp_path, kind, n, "split")
        first = open_study(cfg, None)
        run(first, 6)
        first.abort("interrupted")  # killed between trials
        resumed = resume_study(cfg, None, first.study_run_id)
        assert [r.number for r in resumed.records] == list(range(6))
        run(resumed, n - 6)
        resumed.abort("interrupted")

    expected, got = decisions(whole), decisions(resumed)
    assert got == expected
    pruned = [d for d in expected if d[2] == "pruned"]
    assert pruned and [d for d in expected[6:] if d[2] == "pruned"], "the resumed part prunes too"
    for _, _, _, epochs, reason in pruned:
        assert reason.startswith(kind) and f"({epochs} epoch" in reason and "cut-off" in reason


# --------------------------------------------------------------------------------------------
# Config


@pytest.mark.parametrize(
    ("early_stopping", "space", "path", "fragment"),
    [
        (
            {"kind": "asha", "reduction_factor": 1},
            {},
            "early_stopping.reduction_factor",
            "greater than or equal to 2",
        ),
        ({"kind": "hyperband", "reduction_factor": 2.5}, {}, "early_stopping.reduction_factor", "integer"),
        ({"kind": "asha", "reduction_factor": "three"}, {}, "early_stopping.reduction_factor", "integer"),
        ({"kind": "successive_halving"}, {}, "early_stopping.kind", "asha"),
        ({"kind": "asha", "min_epochs": 30}, {}, "early_stopping.min_epochs", "model.max_epochs (30)"),
        (
            {"kind": "hyperband", "min_epochs": 40},
            {"max_epochs": {"low": 10, "high": 40}},
            "early_stopping.min_epochs",
            "upper bound of search.space.max_epochs (40)",
        ),
        ({"kind": "asha", "every": 2}, {}, "early_stopping.every", "rungs only"),
        # min_epochs left out: asha's own first rung, 1, which a 1-epoch budget leaves no room for;
        # also when another key fails and the checks read the raw config.
        (
            {"kind": "asha"},
            {"max_epochs": {"choices": [1]}},
            "early_stopping.min_epochs",
            "min_epochs (1) must be below the upper bound of search.space.max_epochs (1)",
        ),
        (
            {"kind": "hyperband", "reduction_factor": "three"},
            {"max_epochs": {"choices": [1]}},
            "early_stopping.min_epochs",
            "min_epochs (1) must be below",
        ),
    ],
)
def test_bad_halving_settings_are_named_by_their_dotted_path(
    early_stopping: dict[str, Any], space: dict[str, Any], path: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as info:
        validate_config({"early_stopping": early_stopping, "search": {"space": space}})
    matching = [m for p, m in info.value.problems if p == path]
    assert matching, info.value.problems
    assert any(fragment in m for m in matching), matching


def test_the_halving_keys_have_defaults_and_are_in_the_readme() -> None:
    asha = validate_config({"early_stopping": {"kind": "asha"}}).early_stopping
    assert (asha.min_epochs, asha.reduction_factor) == (1, 4), "Ray Tune's and Optuna's ASHA defaults"
    hyperband = validate_config({"early_stopping": {"kind": "hyperband"}}).early_stopping
    assert (hyperband.min_epochs, hyperband.reduction_factor) == (1, 3), "Li et al.'s eta for Hyperband"
    long = validate_config(
        {"search": {"space": {"max_epochs": {"low": 50, "high": 450}}}, "early_stopping": {"kind": "asha"}}
    )
    assert long.early_stopping.min_epochs == 4, "a hundredth of the longest trial (Optuna's auto)"
    given = validate_config({"early_stopping": {"kind": "asha", "min_epochs": 5, "reduction_factor": 3}})
    assert (given.early_stopping.min_epochs, given.early_stopping.reduction_factor) == (5, 3)
    curve_fit = validate_config({}).early_stopping
    assert (curve_fit.min_epochs, curve_fit.reduction_factor) == (5, 3), "the other rules keep theirs"
    assert make_stop_rule(validate_config({"early_stopping": {"kind": "asha"}})).rungs == (1, 4, 16)
    rows = {
        line.split("|")[1].strip(): line
        for line in (ROOT / "README.md").read_text().splitlines()
        if line.startswith("| `")
    }
    rf_row = rows["`early_stopping.reduction_factor`"]
    assert "asha: `4`" in rf_row and "hyperband: `3`" in rf_row
    assert "max(1, epochs // 100)" in rows["`early_stopping.min_epochs`"]
    kind_row = rows["`early_stopping.kind`"]
    assert "`asha`" in kind_row and "`hyperband`" in kind_row


def test_studies_recorded_with_the_old_halving_defaults_keep_their_hash() -> None:
    """Before asha took 1 and 4 when left unset, it took the fields' 5 and 3: a study recorded then
    has them in its config.yaml, and must be found (and resumed) by the hash it recorded."""
    import yaml

    from hyperflow.components.fingerprint import config_hash, config_yaml

    recorded = validate_config({}).model_dump(mode="json")  # config.yaml: every key written out
    recorded["search"]["bayes"]["pruned"] = "worst"  # what f8f0872 wrote (its default then)
    # Hashes main's code computed (commit f8f0872) for asha and hyperband with every default.
    for kind, old_hash in (("asha", "8ba5bcae0c1f49d2"), ("hyperband", "6e334f5781845c69")):
        recorded["early_stopping"]["kind"] = kind
        assert (recorded["early_stopping"]["min_epochs"], recorded["early_stopping"]["reduction_factor"]) == (
            5,
            3,
        )
        cfg = validate_config(recorded)
        assert config_hash(cfg) == old_hash, kind
        assert (cfg.early_stopping.min_epochs, cfg.early_stopping.reduction_factor) == (5, 3), (
            "resumed as run"
        )
        new = validate_config({"early_stopping": {"kind": kind}})
        assert config_hash(new) != old_hash, "the new defaults decide otherwise: another study"
        assert config_hash(validate_config(yaml.safe_load(config_yaml(new)))) == config_hash(new)
    spelled = validate_config({"early_stopping": {"kind": "asha", "min_epochs": 1, "reduction_factor": 4}})
    assert config_hash(spelled) == config_hash(validate_config({"early_stopping": {"kind": "asha"}}))
    recorded["early_stopping"]["kind"] = "curve_fit"
    assert config_hash(validate_config(recorded)) == "878b726c27b2d568", "curve_fit studies are untouched"


def test_validate_prints_the_rungs_and_brackets() -> None:
    from hyperflow.components.describe import describe_config

    cfg = validate_config(
        {
            "search": {"space": {"max_epochs": {"low": 10, "high": 60}}},
            "early_stopping": {"kind": "hyperband", "min_epochs": 5},
        }
    )
    assert (
        "rungs at 5, 15, 45 epochs; a trial goes on when in the best 1/3 of the values recorded at its "
        "rung; 3 brackets" in describe_config(cfg, None)
    )
