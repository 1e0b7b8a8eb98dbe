"""Resume a study from MLflow alone: replay its finished trials, requeue the interrupted ones."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from mlflow.exceptions import MlflowException

from hyperflow.components.budget import apply_param_budget, param_counts
from hyperflow.components.config import ConfigError, validate_config
from hyperflow.components.curves import make_stop_rule
from hyperflow.components.fingerprint import config_hash, config_yaml, flatten, legacy_config_hash
from hyperflow.components.heuristic import start_config
from hyperflow.components.lifecycle import threads_per_trial
from hyperflow.components.names import (
    COMPLETED,
    FAILED,
    FINISHED_STATES,
    INTERRUPTED,
    ROLE_STUDY,
    RUNNING,
    TAG_CONFIG_HASH,
    TAG_ERROR,
    TAG_FLOW_RUN_ID,
    TAG_PARAMS,
    TAG_PARENT,
    TAG_PREVIOUS_FLOW_RUN_IDS,
    TAG_RESUMED,
    TAG_ROLE,
    TAG_SEED,
    TAG_STATE,
    TAG_TRIAL,
)
from hyperflow.components.scratch import scratch_dir
from hyperflow.components.search import SearchSpace, make_strategy
from hyperflow.components.study import Study, TrialRecord, objective_values
from hyperflow.components.tracking import StudyTracker, resolve_tracking_uri
from hyperflow.components.trial import TrialSpec

if TYPE_CHECKING:
    from mlflow.entities import Run

    from hyperflow.components.config import ExperimentConfig
    from hyperflow.components.data import Dataset

__all__ = [
    "ResumeError",
    "check_resumable",
    "find_unfinished_study",
    "load_study_config",
    "recorded_trials",
    "resume_study",
]


class ResumeError(RuntimeError):
    """A study that cannot be resumed (unknown run id, not a study, a different config)."""


def find_unfinished_study(cfg: ExperimentConfig) -> str | None:
    """The latest study run of this config (same config hash) that did not finish, or None."""
    tracker = StudyTracker(resolve_tracking_uri(cfg.tracking.uri))
    exp = tracker.client.get_experiment_by_name(cfg.name)
    if exp is None:
        return None
    runs = tracker.client.search_runs(
        [exp.experiment_id],
        f"tags.`{TAG_ROLE}` = '{ROLE_STUDY}' and tags.`{TAG_CONFIG_HASH}` = '{config_hash(cfg)}'",
        order_by=["attributes.start_time DESC"],
        max_results=50,
    )
    for run in runs:
        if run.info.status in ("RUNNING", "KILLED", "SCHEDULED"):
            return str(run.info.run_id)
    return None


def load_study_config(
    tracking_uri: str | None, study_run_id: str, n_trials: int | None = None
) -> ExperimentConfig:
    """The config a study ran with, from its `config.yaml` artifact (optionally a new n_trials)."""
    tracker = StudyTracker(resolve_tracking_uri(tracking_uri))
    tracker.check()
    run = _study_run(tracker, study_run_id)
    raw = _recorded_config(tracker, study_run_id)
    if raw is None:
        raise ResumeError(
            f"study {study_run_id} has no config.yaml (its process was killed as it started); "
            "resume it with `hyperflow run CONFIG --resume`"
        )
    if n_trials is not None:
        raw.setdefault("search", {})["n_trials"] = n_trials
    # The store the study lives in is where it resumes, whatever the saved config said.
    raw.setdefault("tracking", {})["uri"] = tracker.uri
    cfg = validate_config(raw, f"config.yaml of study {study_run_id}")
    if run.data.tags.get(TAG_CONFIG_HASH) is not None and not _same_study(tracker, run, cfg):
        raise ResumeError(f"study {study_run_id}: its config.yaml does not match its recorded config hash")
    _check_new_total(tracker, cfg, run, given=n_trials is not None)
    return cfg


def _check_new_total(tracker: StudyTracker, cfg: ExperimentConfig, run: Run, *, given: bool) -> None:
    """A total below what the study has (or, finished, equal to it) would only test and register
    the same best model again: a new total (`given`) or, with none, the study's own."""
    n_trials = cfg.search.n_trials
    finished = sum(
        t.state in FINISHED_STATES and t.status != "RUNNING" for t in recorded_trials(tracker, cfg, run)
    )
    if n_trials < finished or (n_trials == finished and run.info.status == "FINISHED"):
        what = f"--n-trials {n_trials}" if given else f"study {run.info.run_id} is finished"
        raise ResumeError(
            f"{what}: the study already has {finished} finished trials; "
            f"give a larger total (e.g. --n-trials {finished + 10}) to extend it"
        )


def _recorded_config(tracker: StudyTracker, study_run_id: str) -> dict[str, Any] | None:
    """The study's `config.yaml` as a dict, None when it was never written."""
    with scratch_dir("resume") as tmp:
        try:
            path = tracker.client.download_artifacts(study_run_id, "config.yaml", tmp)
        except (MlflowException, OSError):
            return None
        raw = yaml.safe_load(Path(path).read_text())
    return raw if isinstance(raw, dict) else None


def _same_study(tracker: StudyTracker, run: Run, cfg: ExperimentConfig) -> bool:
    """Whether `cfg` is the study's config: its hash, or (a study recorded before 0.2) the old hash."""
    recorded = run.data.tags.get(TAG_CONFIG_HASH)
    if recorded == config_hash(cfg):
        return True
    raw = _recorded_config(tracker, run.info.run_id)
    if raw is None or recorded != legacy_config_hash(raw):
        return False
    # The old hash covered every key: the config must be the recorded one but for what is not hashed.
    try:
        return config_hash(validate_config(raw)) == config_hash(cfg)
    except ConfigError:
        return False


def check_resumable(cfg: ExperimentConfig, study_run_id: str) -> tuple[StudyTracker, Run]:
    """The study run `cfg` may continue, with its store's tracker; ResumeError naming why not
    (no such run, not a study run, a study of another config)."""
    tracker = StudyTracker(resolve_tracking_uri(cfg.tracking.uri))
    tracker.check()
    run = _study_run(tracker, study_run_id)
    if not _same_study(tracker, run, cfg):
        raise ResumeError(
            f"study {study_run_id} was run with a different config (hash {run.data.tags.get(TAG_CONFIG_HASH)}, "
            f"this config {config_hash(cfg)}); only search.n_trials, n_parallel, timeouts and where it runs may change"
        )
    return tracker, run


def _study_run(tracker: StudyTracker, study_run_id: str) -> Run:
    try:
        run = tracker.client.get_run(study_run_id)
    except MlflowException:
        raise ResumeError(f"no run {study_run_id!r} in the tracking store {tracker.uri}") from None
    if run.data.tags.get(TAG_ROLE) != ROLE_STUDY:
        raise ResumeError(
            f"run {study_run_id} is not a hyperflow study run (tag {TAG_ROLE} is not '{ROLE_STUDY}')"
        )
    return run


@dataclass(frozen=True)
class RecordedTrial:
    """A trial run as found in MLflow."""

    number: int
    run_id: str
    state: str  # completed / pruned / failed / interrupted / running
    status: str
    params: dict[str, Any]
    seed: int
    value: float | None
    end_time: int | None
    error: str | None
    metrics: dict[str, float] = field(default_factory=dict)  # the run's latest value of each metric


def recorded_trials(tracker: StudyTracker, cfg: ExperimentConfig, study_run: Run) -> list[RecordedTrial]:
    """Every trial run of a study, in trial-number order, with params decoded to the space's types."""
    space = SearchSpace.from_config(cfg)
    runs = tracker.client.search_runs(
        [study_run.info.experiment_id], f"tags.`{TAG_PARENT}` = '{study_run.info.run_id}'", max_results=50000
    )
    out = []
    for run in runs:
        tags = run.data.tags
        if TAG_TRIAL not in tags:
            continue
        params = _recorded_params(run, space)
        out.append(
            RecordedTrial(
                number=int(tags[TAG_TRIAL]),
                run_id=run.info.run_id,
                state=tags.get(TAG_STATE, RUNNING),
                status=run.info.status,
                params=params,
                seed=int(tags.get(TAG_SEED, "0")),
                value=run.data.metrics.get(cfg.search.metric),
                end_time=run.info.end_time,
                error=tags.get(TAG_ERROR),
                metrics=dict(run.data.metrics),
            )
        )
    return sorted(out, key=lambda t: t.number)


def _recorded_params(run: Run, space: SearchSpace) -> dict[str, Any]:
    """A trial's params: from its creation tag (always there), else its MLflow params (older runs)."""
    tagged = run.data.tags.get(TAG_PARAMS)
    if tagged is not None:
        raw = json.loads(tagged)
    else:
        raw = {d.name: _decode(run.data.params[d.name]) for d in space if d.name in run.data.params}
    params = {d.name: raw[d.name] for d in space if d.name in raw}
    return space.coerce(params) if len(params) == len(space) else params


def _decode(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _complete_study_records(
    tracker: StudyTracker, run: Run, cfg: ExperimentConfig, data: Dataset | None
) -> None:
    """Write what a kill right after the study run's creation left out (params, config.yaml, ...)."""
    artifacts = {a.path for a in tracker.client.list_artifacts(run.info.run_id)}
    if "environment.txt" in artifacts:  # the last of the study's records
        return
    recorded = run.data.params
    tracker.log_study_records(
        run.info.run_id,
        None if run.inputs is not None and run.inputs.dataset_inputs else data,
        config_yaml=config_yaml(cfg),
        flat_config={k: v for k, v in flatten(cfg).items() if k not in recorded},
    )


def resume_study(
    cfg: ExperimentConfig, data: Dataset | None, study_run_id: str, *, flow_run_id: str | None = None
) -> Study:
    """Rebuild a study from MLflow and reopen its study run.

    Finished trials (completed, pruned, failed) enter the study's ledger in the order they
    finished, as `Study.record` put them there, and are never re-run; trial runs a killed process
    left RUNNING are marked interrupted (KILLED), not counted, and their parameters are asked
    again first; trial numbers continue after the highest recorded one.
    """
    tracker, run = check_resumable(cfg, study_run_id)
    _complete_study_records(tracker, run, cfg, data)
    trials = recorded_trials(tracker, cfg, run)
    # The heuristic start as recorded in the study run (a range test is never run again).
    spec = TrialSpec.from_config(cfg, num_threads=threads_per_trial(cfg))
    strategy = make_strategy(
        start_config(cfg, data, tracker, study_run_id), param_counts=param_counts(cfg, spec, data)
    )
    apply_param_budget(strategy, cfg, spec, data)
    stop_rule = make_stop_rule(cfg) if cfg.early_stopping.kind != "none" else None
    finished = [t for t in trials if t.state in FINISHED_STATES and t.status != "RUNNING"]
    finished.sort(key=lambda t: (t.end_time or 0, t.number))
    history = [
        _record(tracker, cfg, trial, curve=stop_rule is not None, max_epochs=spec.max_epochs(trial.params))
        for trial in finished
    ]
    study = Study(
        cfg,
        strategy=strategy,
        stop_rule=stop_rule,
        tracker=tracker,
        experiment_id=run.info.experiment_id,
        study_run_id=study_run_id,
        spec=spec,
        next_number=max((t.number for t in trials), default=-1) + 1,
        history=history,
    )
    unfinished = [t for t in trials if t not in finished]
    for trial in reversed(unfinished):
        if trial.status == "RUNNING" or trial.state in (RUNNING, INTERRUPTED):
            if trial.status == "RUNNING":
                tracker.mark_trial(
                    trial.run_id,
                    INTERRUPTED,
                    "the study's process ended while this trial ran",
                    number=trial.number,
                )
            if len(trial.params) == len(study.strategy.space):
                study.requeue(trial.params)
    _reopen(tracker, run, cfg, flow_run_id)
    return study


def _record(
    tracker: StudyTracker, cfg: ExperimentConfig, trial: RecordedTrial, *, curve: bool, max_epochs: int
) -> TrialRecord:
    """A finished trial run as the ledger takes it; its curve is read where the stop rule or the
    plots need it (with a stop rule, or a completed trial). What the live study told the strategy
    comes back from the run: the value, `epochs_trained` and `predicted_final_<metric>`."""
    values: list[float] = []
    if curve or trial.state == COMPLETED:
        history = tracker.client.get_metric_history(trial.run_id, cfg.search.metric)
        values = [m.value for m in sorted(history, key=lambda m: m.step)]
    return TrialRecord.finished(
        number=trial.number,
        params=trial.params,
        seed=trial.seed,
        run_id=trial.run_id,
        state=trial.state,
        value=trial.value if trial.state != FAILED else None,
        curve=values,
        epochs_trained=int(trial.metrics.get("epochs_trained", len(values))),
        error=trial.error,
        objectives=objective_values(cfg, None, {**trial.metrics, cfg.search.metric: trial.value})
        if trial.value is not None
        else None,
        predicted=trial.metrics.get(f"predicted_final_{cfg.search.metric}"),
        max_epochs=max_epochs,
    )


def _reopen(tracker: StudyTracker, run: Run, cfg: ExperimentConfig, flow_run_id: str | None) -> None:
    """The study run RUNNING again, counting its resumptions and the flow runs that ran it."""
    study_run_id = run.info.run_id
    tracker.client.update_run(study_run_id, status="RUNNING")
    previous = run.data.tags.get(TAG_FLOW_RUN_ID)
    tags = {
        TAG_RESUMED: str(int(run.data.tags.get(TAG_RESUMED, "0")) + 1),
        TAG_CONFIG_HASH: config_hash(cfg),  # a study recorded with the old hash is found by the new one
    }
    if flow_run_id:
        tags[TAG_FLOW_RUN_ID] = flow_run_id
        if previous:
            tags[TAG_PREVIOUS_FLOW_RUN_IDS] = ",".join(
                filter(None, [run.data.tags.get(TAG_PREVIOUS_FLOW_RUN_IDS), previous])
            )
    tracker.set_tags(study_run_id, tags)
