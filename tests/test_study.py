"""The study and its ledger, without Prefect and without starting a process: plan, record, best, stop."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from conftest import make_study, small_config
from mlflow.tracking import MlflowClient

from hyperflow.components.names import TAG_ROLE, TAG_STATE
from hyperflow.components.study import TrialPlan, TrialRecord
from hyperflow.components.tracking import StudyTracker
from hyperflow.components.trial import TrialResult, TrialSpec


def config(tmp_path: Path, store: str, **search: Any) -> Any:
    return small_config(
        tmp_path,
        search={
            "n_trials": 6,
            "space": {"learning_rate": {"choices": [0.01, 0.02, 0.05, 0.1, 0.2, 0.3]}},
            **search,
        },
        early_stopping={"kind": "median", "min_epochs": 1},
        tracking={"uri": store},
    )


def result(plan: TrialPlan, state: str, value: float | None, epochs: int = 3, **extra: Any) -> TrialResult:
    curve = [] if value is None else [value * (e + 1) / epochs for e in range(epochs)]
    return TrialResult(
        params=plan.params,
        seed=plan.seed,
        state=state,
        value=value,
        curve=curve,
        epochs_trained=len(curve),
        **extra,
    )  # type: ignore[arg-type]


def test_plan_keeps_within_n_parallel_and_n_trials_and_creates_running_trial_runs(
    tmp_path: Path, sqlite_store: str
) -> None:
    study = make_study(config(tmp_path, sqlite_store, n_parallel=4, n_trials=5))
    first = study.plan()
    assert [p.number for p in first] == [0, 1, 2, 3] and study.plan() == []
    client = MlflowClient(sqlite_store)
    run = client.get_run(first[0].run_id)
    assert (
        run.info.status == "RUNNING"
        and run.data.tags[TAG_ROLE] == "trial"
        and run.data.tags[TAG_STATE] == "running"
    )
    assert len({params_key(p.params) for p in first}) == 4, "parallel asks never repeat a point"
    study.record(first[0], result(first[0], "completed", 0.5))
    (fifth,) = study.plan()
    assert fifth.number == 4 and study.plan() == [], "never past n_trials"


def params_key(params: dict[str, Any]) -> str:
    return repr(sorted(params.items()))


def test_record_tells_the_strategy_and_the_stop_rule_and_keeps_the_best(
    tmp_path: Path, sqlite_store: str
) -> None:
    # Told at once (without lookahead, which tells in trial-number order: tests/search/test_lookahead.py).
    study = make_study(config(tmp_path, sqlite_store, n_parallel=6, lookahead=False))
    plans = study.plan()
    weights = {"w": torch.ones(2)}
    study.record(plans[0], result(plans[0], "completed", 0.6, state_dict=weights, histograms={"w": {}}))
    study.record(plans[1], result(plans[1], "pruned", 0.9))  # higher, but pruned: never the best
    study.record(plans[2], result(plans[2], "failed", None, error="boom"))
    study.record(plans[3], result(plans[3], "completed", math.nan))  # not finite: failed
    assert [r.state for r in study.records] == ["completed", "pruned", "failed", "failed"]
    assert [o.state for o in study.strategy.history] == ["completed", "pruned", "failed", "failed"]
    assert study.strategy.history[1].value == 0.9 and study.strategy.history[2].value is None
    assert study.stop_rule is not None and study.stop_rule.best_completed == 0.6, "only completed trials"
    best = study.best
    assert best is not None and best.number == 0 and best.state_dict is weights
    assert (study.count("completed"), study.count("pruned"), study.count("failed")) == (1, 1, 2)

    better = {"w": torch.zeros(2)}
    study.record(plans[4], result(plans[4], "completed", 0.7, state_dict=better))
    assert study.best is not None and study.best.number == 4 and study.best.state_dict is better
    assert study.records[0].state_dict is None, "only the best trial's weights are kept"
    assert study.flush_writes() == []  # written behind the search loop
    history = MlflowClient(sqlite_store).get_metric_history(study.study_run_id, "best_val_accuracy")
    assert [(m.step, m.value) for m in history] == [(0, 0.6), (4, 0.7)], "the running best, by trial number"


def test_an_equal_value_leaves_the_earlier_trial_best(tmp_path: Path, sqlite_store: str) -> None:
    study = make_study(config(tmp_path, sqlite_store, n_parallel=2))
    first, second = study.plan()
    study.record(second, result(second, "completed", 0.8))
    study.record(first, result(first, "completed", 0.8))
    assert study.best is not None and study.best.number == first.number


def test_min_mode_picks_the_lowest(tmp_path: Path, sqlite_store: str) -> None:
    study = make_study(config(tmp_path, sqlite_store, n_parallel=2, metric="val_loss"))
    assert study.mode == "min" and study.strategy.mode == "min"
    first, second = study.plan()
    study.record(first, result(first, "completed", 0.3))
    study.record(second, result(second, "completed", 0.2))
    assert study.best is not None and study.best.number == second.number


def test_an_interrupted_trial_is_not_counted_and_is_asked_again(tmp_path: Path, sqlite_store: str) -> None:
    study = make_study(config(tmp_path, sqlite_store, lookahead=False))
    (plan,) = study.plan()
    assert study.record(plan, result(plan, "interrupted", 0.5, error="interrupted")) is None
    assert study.n_finished == 0 and not study.in_flight
    (again,) = study.plan()
    assert again.params == plan.params and again.number == plan.number + 1


def test_more_failures_than_max_failures_end_the_study_once_nothing_is_in_flight(
    tmp_path: Path, sqlite_store: str
) -> None:
    study = make_study(config(tmp_path, sqlite_store, n_trials=3, max_failures=1, n_parallel=3))
    plans = study.plan()
    study.record(plans[0], result(plans[0], "failed", None))
    assert study.check_stop() is None
    study.record(plans[1], result(plans[1], "failed", None))
    assert study.check_stop() == "2 failed trials exceed search.max_failures (1)"
    assert study.plan() == [] and not study.done, "a trial is still in flight"
    study.record(plans[2], result(plans[2], "completed", 0.5))
    assert study.done


def test_a_grid_ends_exhausted_and_a_budget_spent(tmp_path: Path, sqlite_store: str) -> None:
    grid = make_study(config(tmp_path, sqlite_store, strategy="grid", n_trials=20, n_parallel=6))
    for plan in grid.plan():
        grid.record(plan, result(plan, "completed", 0.5))
    assert grid.check_stop() == "exhausted" and grid.n_finished == 6
    budget = make_study(config(tmp_path / "budget", sqlite_store, n_trials=1))
    (plan,) = budget.plan()
    budget.record(plan, result(plan, "completed", 0.5))
    assert budget.check_stop() == "budget"


def test_a_crash_and_an_abort_leave_nothing_running(tmp_path: Path, sqlite_store: str) -> None:
    study = make_study(config(tmp_path, sqlite_store, n_parallel=2))
    crashed, running = study.plan()
    record = study.record_crash(crashed, "BrokenProcessPool: the worker died")
    assert record.state == "failed" and record.error == "BrokenProcessPool: the worker died"
    study.abort("interrupted")
    client = MlflowClient(sqlite_store)
    assert client.get_run(crashed.run_id).info.status == "FAILED"
    assert client.get_run(running.run_id).data.tags[TAG_STATE] == "interrupted"
    assert client.get_run(running.run_id).info.status == "KILLED"
    assert client.get_run(study.study_run_id).info.status == "KILLED"
    assert not study.in_flight


def test_records_replayed_into_a_new_study_tell_what_live_results_told(
    tmp_path: Path, sqlite_store: str
) -> None:
    """What resume does: the same records, through the same ledger, give the same strategy and stop rule."""
    cfg = config(
        tmp_path,
        sqlite_store,
        strategy="genetic",
        n_parallel=3,
        lookahead=False,
        genetic={"population_size": 2, "elite": 1},
    )
    live = make_study(cfg)
    for plan, (state, value) in zip(
        live.plan(), [("completed", 0.4), ("failed", None), ("pruned", 0.2)], strict=True
    ):
        live.record(plan, result(plan, state, value))
    replayed = make_study(cfg, history=[TrialRecord(**{**vars(r), "state_dict": None}) for r in live.records])
    assert replayed.strategy.history == live.strategy.history
    assert replayed.stop_rule is not None and live.stop_rule is not None
    assert replayed.stop_rule.snapshot() == live.stop_rule.snapshot()
    assert replayed.strategy.ask(2) == live.strategy.ask(2), (
        "the rebuilt strategy asks what the live one does"
    )
    assert replayed.best is not None and replayed.best.number == 0


def test_the_study_best_is_the_latest_value_when_parallel_trials_finish_out_of_order(
    tmp_path: Path, sqlite_store: str
) -> None:
    from hyperflow.components.lifecycle import finish_study
    from hyperflow.components.usercode import registered

    def objective(params: dict[str, Any], report: Any) -> float:
        return 0.0  # never called: the results are given

    with registered("study_fn:objective", objective):
        cfg = small_config(
            tmp_path,
            model={"module": "study_fn:objective"},
            search={
                "metric": "score",
                "n_parallel": 2,
                "n_trials": 2,
                "space": {"quality": {"low": 0.0, "high": 1.0}},
            },
            tracking={"uri": sqlite_store},
        )
        study = make_study(cfg)
    first, second = study.plan()
    study.record(second, result(second, "completed", 0.7))  # the later trial number finishes first
    study.record(first, result(first, "completed", 0.8))
    outcome = finish_study(study, None)
    run = MlflowClient(sqlite_store).get_run(study.study_run_id)
    assert outcome.best_value == 0.8 and run.data.metrics["best_score"] == 0.8
    assert run.info.status == "FINISHED" and outcome.model_uri is None


def test_a_pruned_trials_prediction_and_epochs_reach_the_strategy_live_and_from_its_recorded_run(
    tmp_path: Path, sqlite_store: str
) -> None:
    """Resume tells what the live study told (`search.bayes.pruned: predicted | discounted` need
    it): the prediction and the epochs come back from the trial runs' metrics."""
    from hyperflow.components.resume import _record, recorded_trials

    cfg = config(
        tmp_path,
        sqlite_store,
        strategy="bayes",
        n_parallel=3,
        bayes={"pruned": "predicted", "n_initial_points": 2},
        lookahead=False,  # the strategy read here directly (the lookahead path: tests/search/test_lookahead.py)
    )
    live = make_study(cfg)
    outcomes = [("completed", 0.4, 4, None), ("pruned", 0.3, 2, 0.55), ("completed", 0.5, 4, None)]
    for plan, (state, value, epochs, predicted) in zip(live.plan(), outcomes, strict=True):
        res = result(plan, state, value, epochs=epochs, predicted_final=predicted)
        for epoch, v in enumerate(res.curve):
            plan.logger.on_epoch(epoch, {"val_accuracy": v})
        plan.logger.finish(res, "val_accuracy")
        live.record(plan, res)
    told = live.strategy.history[1]
    assert (told.state, told.predicted, told.epochs, told.max_epochs) == ("pruned", 0.55, 2, 4)
    assert live.tracker.flush_writes() == [], "the trials' writes landed"
    tracker = StudyTracker(sqlite_store)
    runs = recorded_trials(tracker, cfg, tracker.client.get_run(live.study_run_id))
    spec = TrialSpec.from_config(cfg)
    records = [_record(tracker, cfg, t, curve=True, max_epochs=spec.max_epochs(t.params)) for t in runs]
    replayed = make_study(cfg, history=records)
    assert replayed.strategy.history == live.strategy.history
    assert replayed.strategy.ask(2) == live.strategy.ask(2)
