"""Resume without Prefect: what the study run records is enough, and new config keys do not break it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import small_config
from mlflow.tracking import MlflowClient

from hyperflow.components.config import validate_config
from hyperflow.components.data import load_dataset
from hyperflow.components.fingerprint import config_hash, legacy_config_hash
from hyperflow.components.lifecycle import open_study
from hyperflow.components.names import TAG_CONFIG_HASH
from hyperflow.components.resume import ResumeError, load_study_config, resume_study
from hyperflow.components.study import Study, execute_trial


def run_trials(study: Study, data: Any, n: int) -> None:
    """The search loop without Prefect: plan, train, record, one trial at a time."""
    for _ in range(n):
        (plan,) = study.plan(limit=1)
        study.record(plan, execute_trial(data, plan, study.spec))


def interrupted_study(tmp_path: Path, store: str) -> tuple[Any, Any, str]:
    # The session's store: creating one per test costs seconds.
    cfg = small_config(tmp_path, model={"max_epochs": 2}, search={"n_trials": 3}, tracking={"uri": store})
    data = load_dataset(cfg.data, cfg.seed)
    study = open_study(cfg, data)
    run_trials(study, data, 1)
    study.abort("interrupted")
    return cfg, data, study.study_run_id


def rewrite_config(client: MlflowClient, run_id: str, edit: Any) -> None:
    path = Path(client.download_artifacts(run_id, "config.yaml"))
    raw = yaml.safe_load(path.read_text())
    edit(raw)
    client.log_text(run_id, yaml.safe_dump(raw), "config.yaml")


def test_the_hash_covers_only_values_that_differ_from_their_defaults(tmp_path: Path) -> None:
    cfg = small_config(tmp_path)
    raw = cfg.model_dump(mode="json", exclude_defaults=True)
    spelled_out = cfg.model_dump(mode="json")  # every default written down
    assert config_hash(validate_config(raw)) == config_hash(validate_config(spelled_out)) == config_hash(cfg)
    changed = cfg.model_dump(mode="json")
    changed["model"]["dropout"] = 0.25
    assert config_hash(validate_config(changed)) != config_hash(cfg)
    budget = cfg.model_dump(mode="json")
    budget["search"]["n_trials"], budget["search"]["n_parallel"] = 50, 2
    budget["tracking"]["uri"] = "http://elsewhere:5000"
    assert config_hash(validate_config(budget)) == config_hash(cfg), "the budget and the store are not hashed"


def test_a_key_added_to_the_schema_with_a_default_keeps_every_hash(tmp_path: Path) -> None:
    from pydantic import Field

    from hyperflow.components.config import ExperimentConfig, ModelConfig, RangeSpec

    class NewerModel(ModelConfig):
        new_knob: float = 0.5

    class NewerRange(RangeSpec):
        step: float | None = None

    class Newer(ExperimentConfig):
        model: NewerModel = Field(default_factory=NewerModel)

    raw = small_config(tmp_path).model_dump(mode="json")
    assert config_hash(Newer.model_validate(raw)) == config_hash(ExperimentConfig.model_validate(raw))
    newer = Newer.model_validate(raw)
    newer.search.space["learning_rate"] = NewerRange(**raw["search"]["space"]["learning_rate"])
    assert config_hash(newer) == config_hash(ExperimentConfig.model_validate(raw))


def test_a_study_recorded_without_a_key_the_code_now_has_resumes(tmp_path: Path, sqlite_store: str) -> None:
    cfg, data, run_id = interrupted_study(tmp_path, sqlite_store)
    client = MlflowClient(cfg.tracking.uri)

    def drop_keys(raw: dict[str, Any]) -> None:
        # As if recorded by a version without these keys: the code now gives them their defaults.
        del raw["early_stopping"]["every"]
        del raw["runner"]["threads_per_trial"]
        del raw["search"]["bayes"]["acq_optimizer"]

    rewrite_config(client, run_id, drop_keys)
    # The hash that version recorded: the old scheme's (every key it had), which resume still takes.
    raw = yaml.safe_load(Path(client.download_artifacts(run_id, "config.yaml")).read_text())
    client.set_tag(run_id, TAG_CONFIG_HASH, legacy_config_hash(raw))
    resumed_cfg = load_study_config(cfg.tracking.uri, run_id)
    study = resume_study(resumed_cfg, data, run_id)
    assert len(study.records) == 1
    run_trials(study, data, 2)
    assert study.n_finished == 3


def test_a_study_with_the_old_hash_resumes_and_gets_the_new_one(tmp_path: Path, sqlite_store: str) -> None:
    cfg, data, run_id = interrupted_study(tmp_path, sqlite_store)
    client = MlflowClient(cfg.tracking.uri)
    raw = yaml.safe_load(Path(client.download_artifacts(run_id, "config.yaml")).read_text())
    client.set_tag(run_id, TAG_CONFIG_HASH, legacy_config_hash(raw))
    study = resume_study(load_study_config(cfg.tracking.uri, run_id), data, run_id)
    assert len(study.records) == 1
    assert client.get_run(run_id).data.tags[TAG_CONFIG_HASH] == config_hash(cfg)
    study.abort("interrupted")

    other = cfg.model_dump(mode="json")
    other["model"]["dropout"] = 0.5
    with pytest.raises(ResumeError, match="different config"):
        resume_study(validate_config(other), data, run_id)


def test_the_old_hash_is_what_the_first_version_recorded(tmp_path: Path) -> None:
    import hashlib
    import json

    from hyperflow.components.fingerprint import config_yaml, flatten

    cfg = small_config(tmp_path, search={"initial_points": [{"learning_rate": 0.02}]})
    # The first version's formula, on the config object; resume has only its config.yaml.
    excluded = {"search.n_trials", "search.n_parallel", "search.max_failures", "search.timeout_minutes"}
    excluded |= {
        "tracking.uri",
        "tracking.register_model",
        "tracking.promote",
        "runner.kind",
        "runner.address",
    }
    flat = {k: v for k, v in flatten(cfg).items() if k not in excluded}
    first = hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:16]
    assert legacy_config_hash(yaml.safe_load(config_yaml(cfg))) == first
