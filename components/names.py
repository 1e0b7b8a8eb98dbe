"""The one vocabulary: trial states, the optimisation mode, MLflow tag names, the champion alias."""

from __future__ import annotations

from typing import Final, Literal

__all__ = [
    "CHAMPION",
    "COMPLETED",
    "EXPERIMENT_KIND",
    "FAILED",
    "FINISHED_STATES",
    "INTERRUPTED",
    "PRUNED",
    "ROLE_LR_RANGE_TEST",
    "ROLE_STUDY",
    "ROLE_TRIAL",
    "RUNNING",
    "RUN_STATUS",
    "SHARED_VIEW",
    "TAG_BEST_RUN_ID",
    "TAG_BEST_TRIAL",
    "TAG_CHAMPION_TRIAL",
    "TAG_CONFIG_HASH",
    "TAG_ERROR",
    "TAG_EXPERIMENT_KIND",
    "TAG_FLOW_RUN_ID",
    "TAG_GIT_COMMIT",
    "TAG_HOST",
    "TAG_MULTI_OBJECTIVE",
    "TAG_PARAMS",
    "TAG_PARENT",
    "TAG_PARETO",
    "TAG_PID",
    "TAG_PREVIOUS_FLOW_RUN_IDS",
    "TAG_RESUMED",
    "TAG_ROLE",
    "TAG_RUN_NAME",
    "TAG_SEED",
    "TAG_STATE",
    "TAG_STOP_REASON",
    "TAG_STRATEGY",
    "TAG_STUDY_RUN",
    "TAG_TEST_METRIC",
    "TAG_TEST_VALUE",
    "TAG_TRIAL",
    "WEIGHT_HISTOGRAMS",
    "WEIGHT_NEAR_ZERO",
    "WEIGHT_SUMMARY_EVERY",
    "FinishedState",
    "Mode",
    "TrialState",
    "champion_uri",
    "test_metric_name",
    "trial_run_name",
]

# ---------------------------------------------------------------------------- trial states

# What a trial ended as; `running` is only ever a tag on a trial run that has not ended yet.
TrialState = Literal["completed", "pruned", "failed", "interrupted"]
# The states a study counts (an interrupted trial is asked again, never counted).
FinishedState = Literal["completed", "pruned", "failed"]

COMPLETED: Final = "completed"
PRUNED: Final = "pruned"
FAILED: Final = "failed"
INTERRUPTED: Final = "interrupted"
RUNNING: Final = "running"
FINISHED_STATES: Final[tuple[FinishedState, ...]] = (COMPLETED, PRUNED, FAILED)

# The MLflow run status of each trial state.
RUN_STATUS: Final[dict[str, str]] = {
    COMPLETED: "FINISHED",
    PRUNED: "FINISHED",
    FAILED: "FAILED",
    INTERRUPTED: "KILLED",
}

# ---------------------------------------------------------------------------- the direction

# `search.mode`: whether the search metric is maximised or minimised (one name everywhere).
Mode = Literal["max", "min"]

# ---------------------------------------------------------------------------- MLflow tags

# experiments: MLflow 3's UI opens an experiment of this kind as model training, not GenAI.
TAG_EXPERIMENT_KIND: Final = "mlflow.experimentKind"
EXPERIMENT_KIND: Final = "custom_model_development"
# An experiment tag `mlflow.sharedViewState.<key>` holds a run-list view (columns, sort, expanded
# rows) that the UI opens at `#/experiments/<id>?viewStateShareKey=<key>`.
SHARED_VIEW: Final = "mlflow.sharedViewState."

TAG_RUN_NAME: Final = "mlflow.runName"
TAG_ROLE: Final = "hyperflow.role"
ROLE_STUDY: Final = "study"
ROLE_TRIAL: Final = "trial"
ROLE_LR_RANGE_TEST: Final = "lr_range_test"  # `hyperflow lr-find`'s run

# study runs
TAG_STRATEGY: Final = "hyperflow.strategy"
# With several objectives: how the strategy searches them (ehvi, parego, nsga2, random, grid).
TAG_MULTI_OBJECTIVE: Final = "hyperflow.multi_objective"
TAG_CONFIG_HASH: Final = "hyperflow.config_hash"
TAG_FLOW_RUN_ID: Final = "hyperflow.flow_run_id"
TAG_PREVIOUS_FLOW_RUN_IDS: Final = "hyperflow.previous_flow_run_ids"
TAG_RESUMED: Final = "hyperflow.resumed"
TAG_BEST_TRIAL: Final = "hyperflow.best_trial"
TAG_BEST_RUN_ID: Final = "hyperflow.best_run_id"
TAG_CHAMPION_TRIAL: Final = "hyperflow.champion_trial"  # the trial registered (search.select)
TAG_GIT_COMMIT: Final = "mlflow.source.git.commit"

# trial runs
TAG_PARENT: Final = "mlflow.parentRunId"
TAG_TRIAL: Final = "hyperflow.trial"
TAG_SEED: Final = "hyperflow.seed"
TAG_PARAMS: Final = "hyperflow.params"  # a trial's params as JSON, written when its run is created
TAG_STATE: Final = "hyperflow.state"
TAG_STOP_REASON: Final = "hyperflow.stop_reason"
TAG_ERROR: Final = "hyperflow.error"
TAG_PARETO: Final = "hyperflow.pareto"  # true on the trials of the study's Pareto front
TAG_HOST: Final = "hyperflow.host"
TAG_PID: Final = "hyperflow.pid"

# A weight whose magnitude is below this counts as near zero (trial metric weights/<name>/near_zero).
WEIGHT_NEAR_ZERO: Final = 1e-3
# `tracking.weight_summary_every`'s default: a trial's weight summaries at epochs 0, 5, 10, ... and its
# last. Every epoch's made 270 of a default digits trial's 420 metric rows, whose ORM work holds the
# GIL the training needs: ~15 ms (SQLite) / ~35 ms (HTTP) more overhead a ~175 ms trial (bench/overhead.py).
WEIGHT_SUMMARY_EVERY: Final = 5

# A trial's histogram figure, at the root of its run (MLflow's compare view shows root files only).
WEIGHT_HISTOGRAMS: Final = "weight_histograms.png"

# registered model versions
TAG_TEST_METRIC: Final = "hyperflow.test_metric"
TAG_TEST_VALUE: Final = "hyperflow.test_value"
TAG_STUDY_RUN: Final = "hyperflow.study_run_id"

# ---------------------------------------------------------------------------- the registry

# The alias that marks the registered version to serve.
CHAMPION: Final = "champion"


def champion_uri(model_name: str) -> str:
    """The model URI of a registered model's champion: `models:/NAME@champion`."""
    return f"models:/{model_name}@{CHAMPION}"


def trial_run_name(number: int, state: str | None = None) -> str:
    """A trial run's name: `trial-7` while it runs, `trial-7 · pruned` once it ended (the run list shows it)."""
    return f"trial-{number}" if state is None else f"trial-{number} · {state}"


def test_metric_name(metric: str) -> str:
    """The test-split counterpart of the search metric: val_accuracy -> test_accuracy."""
    return "test_" + metric.removeprefix("val_")
