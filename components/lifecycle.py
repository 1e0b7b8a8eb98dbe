"""Opening a study (checks, tracking, strategy, stop rule) and finishing it (best model, plots)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hyperflow.components.adapters import adapter_for
from hyperflow.components.budget import apply_param_budget, param_counts
from hyperflow.components.curves import make_stop_rule
from hyperflow.components.fingerprint import config_hash, config_yaml, flatten
from hyperflow.components.heuristic import start_config
from hyperflow.components.importance import study_importances
from hyperflow.components.names import (
    COMPLETED,
    FAILED,
    PRUNED,
    TAG_BEST_RUN_ID,
    TAG_BEST_TRIAL,
    TAG_CHAMPION_TRIAL,
    TAG_PARETO,
    test_metric_name,
)
from hyperflow.components.plots import (
    CurveRecord,
    draw_importance,
    draw_learning_curves,
    draw_optimization_history,
    draw_parallel_coordinates,
    draw_pareto_front,
)
from hyperflow.components.registry import load_state_dict_artifact, log_best_model, register_best_model
from hyperflow.components.scratch import scratch_dir
from hyperflow.components.search import SearchSpace, make_strategy, multi_objective_method
from hyperflow.components.study import Study, StudyResult, TrialRecord
from hyperflow.components.tracking import StudyTracker, resolve_tracking_uri
from hyperflow.components.trial import TrialSpec

if TYPE_CHECKING:
    from hyperflow.components.config import ExperimentConfig
    from hyperflow.components.data import Dataset

__all__ = ["finish_study", "open_study", "served_inputs", "threads_per_trial"]


def threads_per_trial(cfg: ExperimentConfig) -> int:
    """torch threads for each trial: `runner.threads_per_trial`, else 1.

    Measured here (2 cores): the built-in MLPs and the example CNN train no faster on 2 threads
    than on 1, and 3-10x slower when another process keeps the other core busy (threads wait
    for each other). A larger model on a larger machine should set `runner.threads_per_trial`.
    """
    return int(cfg.runner.threads_per_trial or 1)


def open_study(
    cfg: ExperimentConfig,
    data: Dataset | None,
    *,
    flow_run_id: str | None = None,
) -> Study:
    """Check the tracking store, build the strategy and stop rule, create the study run."""
    tracker = StudyTracker(resolve_tracking_uri(cfg.tracking.uri))
    tracker.check()
    spec = TrialSpec.from_config(cfg, num_threads=threads_per_trial(cfg))
    counts = param_counts(cfg, spec, data)
    strategy = make_strategy(cfg, param_counts=counts)
    stop_rule = make_stop_rule(cfg) if cfg.early_stopping.kind != "none" else None
    experiment_id, run_id = tracker.start_study(
        cfg,
        data,
        config_hash=config_hash(cfg),
        flow_run_id=flow_run_id,
        config_yaml=config_yaml(cfg),
        flat_config=flatten(cfg),
        multi_objective=multi_objective_method(strategy) if cfg.search.objectives else None,
    )
    if data is not None and data.preparation is not None and data.preparation.spec["layout"] == "table":
        # What the preparation did to the table: columns, treatment, gaps filled, categories.
        tracker.client.log_dict(run_id, data.preparation.spec, "data/preparation.json")
    if cfg.search.heuristic_start != "none":  # e.g. the LR range test narrows the learning rate
        strategy = make_strategy(start_config(cfg, data, tracker, run_id), param_counts=counts)
    apply_param_budget(strategy, cfg, spec, data)
    return Study(
        cfg,
        strategy=strategy,
        stop_rule=stop_rule,
        tracker=tracker,
        experiment_id=experiment_id,
        study_run_id=run_id,
        spec=spec,
    )


def finish_study(study: Study, data: Dataset | None) -> StudyResult:
    """Evaluate and log the best model, register it, draw the study plots and end the study run."""
    cfg, tracker, run_id = study.cfg, study.tracker, study.study_run_id
    metric = cfg.search.metric
    study.close()  # no more suggestions
    write_errors = study.flush_writes()  # the last trials' records, written behind the search loop
    result = StudyResult(
        study_run_id=run_id,
        experiment_id=study.experiment_id,
        tracking_uri=tracker.uri,
        metric=metric,
        mode=cfg.search.mode,
        status="FINISHED",
        n_completed=study.count(COMPLETED),
        n_pruned=study.count(PRUNED),
        n_failed=study.count(FAILED),
        stop_reason=study.stop_reason,
        errors=[f"trial {r.number}: {r.error}" for r in study.records if r.state == FAILED and r.error]
        + write_errors,
    )
    metrics: dict[str, float] = {
        "n_trials_completed": result.n_completed,
        "n_trials_pruned": result.n_pruned,
        "n_trials_failed": result.n_failed,
    }
    if cfg.search.max_param_count is not None:
        metrics["n_candidates_infeasible"] = study.n_infeasible
    best, champion = study.best, study.champion
    # A resumed study's champion before this finish (a fresh study has none yet).
    previous_champion = tracker.client.get_run(run_id).data.tags.get(TAG_CHAMPION_TRIAL)
    if cfg.search.objectives:
        metrics["pareto_size"] = _tag_front(study)
    if best is not None and best.value is not None and champion is not None:
        study.log_final_best()
        result.best_params, result.best_value = best.params, best.value
        result.best_trial, result.best_run_id = best.number, best.run_id
        result.champion_trial = champion.number
        result.champion_params = champion.params
        if champion.objectives is not None:
            names = [o.metric for o in cfg.search.objectives]
            result.champion_objectives = dict(zip(names, champion.objectives, strict=True))
        tracker.set_tags(
            run_id,
            {
                TAG_BEST_TRIAL: str(best.number),
                TAG_BEST_RUN_ID: best.run_id,
                TAG_CHAMPION_TRIAL: str(champion.number),
            },
        )
        # A training function has no model to test or register: its best value and parameters only.
        if adapter_for(study.spec).exports_model:
            _test_export_register(study, data, champion, result, previous_champion=previous_champion)
            metrics.update(result.test_metrics)
    else:
        result.status = "FAILED"
    importances = study_importances(study.cfg, study.records, result.errors)
    metrics.update({f"importance_{name}": value for name, value in importances.items()})
    tracker.log_metrics(run_id, metrics)
    _log_study_plots(study, importances)
    result.errors.extend(study.flush_writes())
    tracker.end_run(run_id, result.status)
    return result


def _test_export_register(
    study: Study,
    data: Dataset | None,
    best: TrialRecord,
    result: StudyResult,
    *,
    previous_champion: str | None,
) -> None:
    """Test the best trial's stored weights, log them as `best_model`, register it (into `result`).

    A resumed study whose champion is the trial it already registered (extended by trials that did
    not beat it) is tested again but not logged or registered again: no second, identical version.
    """
    cfg, tracker, run_id = study.cfg, study.tracker, study.study_run_id
    adapter = adapter_for(study.spec)
    state_dict = best.state_dict or load_state_dict_artifact(tracker.client, best.run_id)
    module = adapter.rebuild(data, best.params, state_dict)
    result.test_metrics = adapter.evaluate(module, data, best.params)
    registered = _registered_version(study) if previous_champion == str(best.number) else None
    if registered is not None:
        result.model_name, result.model_version, result.promoted = cfg.name, registered, False
        result.promotion_reason = (
            f"the study's champion is still trial {best.number}, registered as version {registered}: "
            "no new version"
        )
        return
    model, example = adapter.export(module, data, best.params)
    model_uri = log_best_model(model, example, tracker.client, run_id, **served_inputs(data))
    if cfg.tracking.register_model:
        name = test_metric_name(cfg.search.metric)
        reg = register_best_model(
            tracker.client,
            name=cfg.name,
            model_uri=model_uri,
            run_id=run_id,
            test_metric=name,
            test_value=result.test_metrics[name],
            mode=cfg.search.mode,
            promote=cfg.tracking.promote,
        )
        result.model_name, result.model_version = reg.name, reg.version
        result.promoted, result.promotion_reason = reg.promoted, reg.reason


def _registered_version(study: Study) -> str | None:
    """The latest version of the study's model registered from its own run (None: none was)."""
    if not study.cfg.tracking.register_model:
        return None
    versions = study.tracker.client.search_model_versions(f"run_id = '{study.study_run_id}'")
    mine = [int(v.version) for v in versions if v.name == study.cfg.name]
    return str(max(mine)) if mine else None


def served_inputs(data: Dataset | None) -> dict[str, Any]:
    """What makes `best_model` a pyfunc over raw rows: the preparation's spec and a few raw test rows.

    Empty for a user's DataModule (no Dataset): the network alone is logged.
    """
    if data is None or data.preparation is None or data.test_rows is None:
        return {}
    # Rows without gaps where there are some (MLflow writes a gap as NaN, which strict JSON lacks),
    # and any gap left as None (`null` in the example's JSON).
    complete = data.test_rows.dropna()
    rows = (complete if len(complete) >= 2 else data.test_rows).iloc[:5]
    if data.preparation.spec["layout"] != "table":
        return {"preparation": data.preparation.spec, "raw_example": rows.to_numpy(dtype=np.float64)}
    example = rows.astype(object).where(rows.notna(), None) if rows.isna().any().any() else rows
    return {"preparation": data.preparation.spec, "raw_example": example}


def _tag_front(study: Study) -> int:
    """Tag each completed trial `hyperflow.pareto` true or false (a resumed study's front moves);
    return the front's size."""
    front = {r.number for r in study.front}
    for r in study.records:
        if r.state == COMPLETED and (r.objectives is not None or r.number in front):
            study.tracker.set_tags(r.run_id, {TAG_PARETO: "true" if r.number in front else "false"})
    return len(front)


def _log_study_plots(study: Study, importances: dict[str, float]) -> None:
    records = [CurveRecord(r.number, r.state, r.value, r.curve) for r in study.records]
    metric = study.cfg.search.metric
    with scratch_dir("plots") as tmp:
        draw_optimization_history(
            records, metric, study.cfg.search.mode, Path(tmp) / "optimization_history.png"
        )
        draw_learning_curves(records, metric, Path(tmp) / "learning_curves.png")
        objectives = study.cfg.search.objectives
        if objectives:
            champion = study.champion
            draw_pareto_front(
                [(r.number, r.objectives) for r in study.records if r.state == COMPLETED and r.objectives],
                [r.number for r in study.front],
                [o.metric for o in objectives],
                study.objective_modes,
                Path(tmp) / "pareto_front.png",
                champion=champion.number if champion is not None else None,
            )
        if importances:
            draw_importance(importances, metric, Path(tmp) / "importance.png")
            draw_parallel_coordinates(
                SearchSpace.from_config(study.cfg),
                [(r.params, r.value, r.state) for r in study.records if r.value is not None],
                metric,
                study.cfg.search.mode,
                Path(tmp) / "parallel_coordinates.png",
            )
        study.tracker.client.log_artifacts(study.study_run_id, tmp, "plots")
