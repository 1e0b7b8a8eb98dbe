"""Lookahead: suggestions prepared in the background are the same whatever order trials finish in,
never repeat a pending point, and a resumed study goes on with the sequence it would have had."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import make_study, small_config

from hyperflow.components.search import make_strategy
from hyperflow.components.search._lookahead import Lookahead, Outcome, StrategyProcess
from hyperflow.components.search._space import params_key
from hyperflow.components.study import Study, TrialRecord
from hyperflow.components.trial import TrialResult

STRATEGIES = {
    "genetic": {"strategy": "genetic", "genetic": {"population_size": 4, "elite": 1}},
    "bayes": {"strategy": "bayes", "bayes": {"surrogate": "ET", "n_initial_points": 3}},
}


def cfg_for(tmp_path: Path, strategy: str, store: str | None = None, **search: Any) -> Any:
    return small_config(
        tmp_path,
        **({"tracking": {"uri": store}} if store else {}),
        search={
            **STRATEGIES[strategy],
            "n_trials": 10,
            "space": {
                "learning_rate": {"low": 1e-3, "high": 0.5, "log": True},
                "momentum": {"low": 0.0, "high": 0.99},
            },
            **search,
        },
    )


def objective(params: dict[str, Any]) -> float:
    """A made-up validation accuracy: best at learning_rate 0.05, momentum 0.6."""
    return 1.0 - (math.log10(params["learning_rate"]) + 1.3) ** 2 / 4 - (params["momentum"] - 0.6) ** 2


def pick(order: str, rng: random.Random) -> Callable[[list[int]], int]:
    return {
        "oldest first": min,
        "newest first": max,
        "shuffled": lambda numbers: rng.choice(sorted(numbers)),
    }[order]


def simulate(cfg: Any, order: str, seed: int = 0) -> list[dict[str, Any]]:
    """The search loop's use of a Lookahead, finishing in-flight trials in `order`.

    Checks on the way that no suggestion repeats a point still in flight.
    """
    n, p = cfg.search.n_trials, cfg.search.n_parallel
    lookahead = Lookahead(make_strategy(cfg), p, limit=n).start()
    choose = pick(order, random.Random(seed))
    in_flight: dict[int, dict[str, Any]] = {}
    asked: list[dict[str, Any]] = []
    try:
        while len(asked) < n or in_flight:
            while len(in_flight) < p and len(asked) < n:
                ready, params = lookahead.take(len(asked))
                if not ready:
                    break  # it needs a result still training: the loop waits for one
                assert params is not None
                keys = {params_key(q) for q in in_flight.values()}
                assert params_key(params) not in keys, "a suggestion repeated a pending point"
                in_flight[len(asked)] = params
                asked.append(params)
            assert in_flight, "the loop waited although nothing was training"
            number = choose(list(in_flight))
            params = in_flight.pop(number)
            lookahead.tell(number, Outcome(params, objective(params)))
    finally:
        lookahead.close()
    return asked


# Bayes refits its surrogate for every suggestion: seconds under load, so it runs with the slow tests.
@pytest.mark.parametrize("strategy", ["genetic", pytest.param("bayes", marks=pytest.mark.slow)])
@pytest.mark.parametrize("n_parallel", [1, 3])
def test_the_same_seed_gives_the_same_suggestions_in_any_finish_order(
    tmp_path: Path, strategy: str, n_parallel: int
) -> None:
    cfg = cfg_for(tmp_path, strategy, n_parallel=n_parallel)
    runs = {order: simulate(cfg, order, seed=7) for order in ("oldest first", "newest first", "shuffled")}
    first = runs["oldest first"]
    assert len({params_key(p) for p in first}) == len(first)
    for order, asked in runs.items():
        assert asked == first, f"{order} asked otherwise"
    other_seed = cfg_for(tmp_path, strategy, n_parallel=n_parallel).model_copy(update={"seed": 1})
    assert simulate(other_seed, "oldest first") != first, "the seed matters"


def test_suggestion_k_learns_from_the_trials_before_k_minus_n_parallel(tmp_path: Path) -> None:
    """Trial k - n_parallel's result, arriving early, is held back until k is asked."""
    cfg = cfg_for(tmp_path, "genetic", n_parallel=1, n_trials=8)
    lookahead = Lookahead(make_strategy(cfg), 1, limit=8).start()
    try:
        seen: list[int] = []
        for k in range(8):
            ready, params = lookahead.take(k)
            assert ready and params is not None
            with lookahead.lock:
                seen.append(lookahead.strategy.n_told)
            lookahead.tell(k, Outcome(params, objective(params)))
    finally:
        lookahead.close()
    # When trial k is taken, at least trials < k - 1 were told and trial k - 1 never was before k was asked.
    assert all(told >= k - 1 for k, told in enumerate(seen))


# ------------------------------------------------------------------- through the study


def run_study(study: Study) -> list[dict[str, Any]]:
    """Plan and record trials one at a time (values from `objective`) until the study is done."""
    asked = []
    try:
        while not study.done:
            for plan in study.plan():
                asked.append(plan.params)
                value = objective(plan.params)
                study.record(
                    plan,
                    TrialResult(plan.params, plan.seed, "completed", value, curve=[value], epochs_trained=1),
                )
    finally:
        study.close()
    return asked


def test_lookahead_false_asks_what_the_strategy_asks_after_each_result(
    tmp_path: Path, sqlite_store: str
) -> None:
    cfg = cfg_for(tmp_path, "genetic", sqlite_store, n_trials=8, lookahead=False)
    strategy = make_strategy(cfg)
    today = []
    for _ in range(8):
        (params,) = strategy.ask(1)
        strategy.tell(params, objective(params))
        today.append(params)
    assert run_study(make_study(cfg)) == today
    ahead = cfg.model_copy(update={"search": cfg.search.model_copy(update={"lookahead": True})})
    assert run_study(make_study(ahead)) != today, "lookahead changes which results each suggestion sees"


@pytest.mark.parametrize("n_parallel", [1, 2])
def test_a_resumed_study_continues_the_sequence_it_would_have_had(
    tmp_path: Path, sqlite_store: str, n_parallel: int
) -> None:
    cfg = cfg_for(tmp_path, "genetic", sqlite_store, n_trials=9, n_parallel=n_parallel)
    whole = run_study(make_study(cfg))
    first = make_study(cfg.model_copy(update={"search": cfg.search.model_copy(update={"n_trials": 4})}))
    assert run_study(first) == whole[:4]
    history = [TrialRecord(**{**vars(r), "state_dict": None}) for r in first.records]
    resumed = make_study(cfg, history=history, next_number=4)
    assert run_study(resumed) == whole[4:], "the resumed study asked what the whole one did"


@pytest.mark.slow
def test_bayes_thinks_in_its_own_process_and_resumes_the_same(tmp_path: Path, sqlite_store: str) -> None:
    cfg = cfg_for(tmp_path, "bayes", sqlite_store, n_trials=6)
    study = make_study(cfg)
    assert study.lookahead is not None and isinstance(study.lookahead.strategy, StrategyProcess)
    whole = run_study(study)
    assert not study.lookahead.strategy._process.is_alive(), "the strategy's process ended with the study"
    first = make_study(cfg.model_copy(update={"search": cfg.search.model_copy(update={"n_trials": 3})}))
    assert run_study(first) == whole[:3]
    history = [TrialRecord(**{**vars(r), "state_dict": None}) for r in first.records]
    assert run_study(make_study(cfg, history=history, next_number=3)) == whole[3:]


@pytest.mark.slow
@pytest.mark.parametrize("switch_at", [0, 3, 11])
def test_the_strategy_process_serves_calls_here_until_it_is_ready_and_then_agrees(
    tmp_path: Path, sqlite_store: str, switch_at: int
) -> None:
    """Calls made before the child is ready are replayed into it: whenever the switch happens, the
    suggestions are those of the strategy asked directly (bayes: the GP's fits from point 8 on)."""
    cfg = cfg_for(tmp_path, "bayes", sqlite_store)
    direct, proxied = make_strategy(cfg), StrategyProcess(make_strategy(cfg), wait_for_switch=True)
    try:
        asked: dict[str, list[dict[str, Any]]] = {"direct": [], "proxied": []}
        for i in range(14):
            if i == switch_at:
                proxied.switch()
            for name, strategy in (("direct", direct), ("proxied", proxied)):
                (params,) = strategy.ask(1)
                if i == 5:
                    strategy.tell_failed(params)
                else:
                    strategy.tell(params, objective(params), pruned=i == 6)
                asked[name].append(params)
        assert proxied.switched
        assert asked["proxied"] == asked["direct"]
        assert proxied.n_told == direct.n_told == 14, "read from the child after the switch"
    finally:
        proxied.close()


def test_a_pruned_trial_reaches_the_strategy_with_its_prediction_and_epochs(
    tmp_path: Path, sqlite_store: str
) -> None:
    """What bayes's `pruned` policy reads (the predicted final value, epochs trained, max_epochs)
    goes from the study's record through the lookahead's thread into the strategy's history."""
    cfg = cfg_for(tmp_path, "genetic", sqlite_store, n_trials=5, n_parallel=1)
    study = make_study(cfg)
    assert study.lookahead is not None
    expected: dict[int, tuple[float | None, int, int]] = {}
    try:
        for k in range(4):  # planning trial 3 tells trials 0 and 1 (2 too, if the thread went on)
            (plan,) = study.plan()
            if k == 3:
                break
            value = objective(plan.params)
            result = TrialResult(
                plan.params,
                plan.seed,
                "pruned" if k == 1 else "completed",
                value,
                curve=[value],
                epochs_trained=1 + k,
            )
            result.predicted_final = value + 0.25 if k == 1 else None
            study.record(plan, result)
            expected[k] = (result.predicted_final, 1 + k, study.spec.max_epochs(plan.params))
        with study.lookahead.lock:
            told = [(o.predicted, o.epochs, o.max_epochs) for o in study.lookahead.strategy.history]
    finally:
        study.close()
    assert len(told) >= 2 and told == [expected[k] for k in range(len(told))]
    assert expected[1][0] is not None and expected[1][2] > 0


@pytest.mark.slow
def test_the_strategy_process_passes_the_prediction_on(tmp_path: Path) -> None:
    """bayes (GP, `pruned: predicted`) in its own process asks what the same strategy asks here
    when a pruned trial is told its prediction, and something else when it is told none."""
    cfg = cfg_for(tmp_path, "bayes", bayes={"surrogate": "GP", "n_initial_points": 3, "pruned": "predicted"})
    here, without, proxied = make_strategy(cfg), make_strategy(cfg), StrategyProcess(make_strategy(cfg))
    try:
        asked: dict[str, list[dict[str, Any]]] = {"here": [], "without": [], "proxied": []}
        for i in range(6):
            for name, strategy in (("here", here), ("without", without), ("proxied", proxied)):
                (params,) = strategy.ask(1)
                pruned = i in (1, 2)
                prediction = {"predicted": 0.99, "epochs": 2, "max_epochs": 10} if name != "without" else {}
                strategy.tell(
                    params, objective(params) - 0.5 * pruned, pruned=pruned, **(prediction if pruned else {})
                )
                asked[name].append(params)
        assert asked["proxied"] == asked["here"]
        assert asked["without"] != asked["here"], "the prediction changes what the GP asks"
    finally:
        proxied.close()


def test_the_key_validates_and_is_documented(tmp_path: Path) -> None:
    from hyperflow.components.config import ConfigError

    assert cfg_for(tmp_path, "genetic").search.lookahead is True
    with pytest.raises(ConfigError, match=r"search\.lookahead"):
        cfg_for(tmp_path, "genetic", lookahead="sometimes")
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "| `search.lookahead` | `true` |" in readme
