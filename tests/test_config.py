"""Config loading, overrides, and every config problem reported by dotted path."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hyperflow.components.config import (
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    load_config,
    metric_mode,
    validate_config,
)
from hyperflow.components.fingerprint import config_hash, flatten

CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.mark.parametrize("path", sorted(CONF.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.search.space, "a shipped config searches something"
    assert cfg.name


def test_shipped_configs_cover_every_strategy_and_a_regression() -> None:
    configs = [load_config(p) for p in CONF.glob("*.yaml")]
    assert {c.search.strategy for c in configs} == {"grid", "random", "bayes", "genetic"}
    assert any(c.data.source == "diabetes" and c.search.mode == "min" for c in configs)
    assert load_config(CONF / "digits.yaml").search.strategy == "bayes"


def test_overrides_parse_yaml_values_into_dotted_keys(tmp_path: Path) -> None:
    cfg = load_config(
        CONF / "digits.yaml",
        [
            "search.n_trials=7",
            "search.strategy=random",
            "model.hidden_layers=[256,128]",
            "model.learning_rate=1e-3",
            "model.batch_norm=true",
            "search.timeout_minutes=null",
        ],
    )
    assert cfg.search.n_trials == 7
    assert cfg.search.strategy == "random"
    assert cfg.model.hidden_layers == [256, 128]
    assert cfg.model.learning_rate == pytest.approx(1e-3)
    assert cfg.model.batch_norm is True


def test_override_creates_missing_sections() -> None:
    assert apply_overrides({}, ["search.bayes.surrogate=RF"]) == {"search": {"bayes": {"surrogate": "RF"}}}


@pytest.mark.parametrize("bad", ["search.n_trials", "=3", "model.hidden_layers.0=1"])
def test_malformed_overrides_are_errors(bad: str) -> None:
    with pytest.raises(ConfigError):
        load_config(CONF / "digits.yaml", [bad])


def test_unknown_override_key_is_named() -> None:
    with pytest.raises(ConfigError, match=r"search\.n_trails: unknown key"):
        load_config(CONF / "digits.yaml", ["search.n_trails=3"])


def test_every_problem_is_reported_at_once() -> None:
    raw = {
        "bogus": 1,
        "data": {"val_fraction": 0.6, "test_fraction": 0.5},
        "model": {"learning_rate": "fast"},
        "search": {
            "n_trials": 0,
            "space": {
                "learning_rate": {"low": 0.0, "high": 1.0, "log": True},
                "momentum": {"low": 0.9, "high": 0.1},
                "batch_size": {"choices": []},
                "hidden_layers": {"choices": [[64], "wide"]},
                "colour": {"choices": ["red"]},
            },
        },
    }
    with pytest.raises(ConfigError) as info:
        validate_config(raw)
    paths = {p for p, _ in info.value.problems}
    assert {
        "bogus",
        "data",
        "model.learning_rate",
        "search.n_trials",
        "search.space.learning_rate",
        "search.space.momentum",
        "search.space.batch_size.choices",
        "search.space.hidden_layers.choices.1",
        "search.space.colour",
    } <= paths
    text = str(info.value)
    assert "must be > 0 for a log scale" in text
    assert "must not exceed high" in text


def test_choices_are_coerced_to_the_field_type() -> None:
    # YAML 1.1 reads 1e-4 as a string; the model field says float.
    cfg = validate_config({"search": {"space": {"learning_rate": {"choices": ["1e-4", 0.1]}}}})
    choices = cfg.search.space["learning_rate"].choices  # type: ignore[union-attr]
    assert choices == [1e-4, 0.1]
    assert all(isinstance(c, float) for c in choices)


def test_yaml_reads_exponents_without_a_dot_as_floats(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "model: {learning_rate: 1e-3}\nsearch: {space: {l2: {low: 1e-6, high: 1e-2, log: true}}}\n"
    )
    cfg = load_config(path)
    assert cfg.model.learning_rate == pytest.approx(1e-3)


@pytest.mark.parametrize(
    ("raw", "path", "fragment"),
    [
        (
            {"search": {"space": {"activation": {"low": 0, "high": 1}}}},
            "search.space.activation",
            "not numeric",
        ),
        (
            {"search": {"space": {"batch_size": {"low": 8.5, "high": 64}}}},
            "search.space.batch_size.low",
            "integer",
        ),
        (
            {"search": {"space": {"optimizer": {"choices": ["sgd", "lbfgs"]}}}},
            "search.space.optimizer.choices.1",
            "lbfgs",
        ),
        ({"search": {"space": {"module": {"choices": ["x"]}}}}, "search.space.module", "cannot be searched"),
        ({"search": {"space": {"dropout": {"choices": [0.1, 0.1]}}}}, "search.space.dropout", "distinct"),
        ({"search": {"strategy": "anneal"}}, "search.strategy", "grid"),
        ({"search": {"bayes": {"surrogate": "XGB"}}}, "search.bayes.surrogate", "GP"),
        ({"search": {"n_parallel": 0}}, "search.n_parallel", "greater than or equal to 1"),
        ({"search": {"genetic": {"population_size": 4, "elite": 4}}}, "search.genetic", "elite"),
        ({"data": {"source": "diabetes"}}, "search.metric", "regression"),
        ({"data": {"source": "mnist"}}, "data.source", "digits"),
        ({"data": {"source": "file"}}, "data.path", "required"),
        (
            {"data": {"source": "file", "path": "/nonexistent/x.csv", "target": "y"}},
            "data.path",
            "no such file",
        ),
        ({"data": {"source": "file", "path": "x.xlsx"}}, "data.path", "unsupported"),
        ({"data": {"val_fraction": 0.5, "test_fraction": 0.5}}, "data", "no training data"),
        ({"search": {"strategy": "grid", "space": {}}}, "search.space", "at least one"),
        (
            {
                "search": {
                    "space": {"learning_rate": {"low": 0.01, "high": 0.1}},
                    "initial_points": [{"learning_rate": 0.5}],
                }
            },
            "search.initial_points.0.learning_rate",
            "outside",
        ),
        (
            {"search": {"space": {"l2": {"low": 1e-6, "high": 0.1, "log": True}}, "initial_points": [{}]}},
            "search.initial_points.0.l2",
            "missing",
        ),
        (
            {"search": {"space": {"l2": {"low": 1e-6, "high": 0.1}}, "initial_points": [{"momentum": 0.5}]}},
            "search.initial_points.0.momentum",
            "not in search.space",
        ),
    ],
)
def test_each_config_problem_names_its_field(raw: dict, path: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_config(raw)
    matching = [m for p, m in info.value.problems if p == path]
    assert matching, f"no problem at {path}: {info.value.problems}"
    assert any(fragment in m for m in matching), matching


def test_a_missing_or_empty_or_broken_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="empty"):
        load_config(empty)
    broken = tmp_path / "broken.yaml"
    broken.write_text("search: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)


def test_relative_data_path_is_found_next_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("a,b,y\n1,2,0\n")
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump({"data": {"source": "file", "path": "d.csv", "target": "y"}}))
    cfg = load_config(cfg_path)
    assert Path(cfg.data.path or "") == tmp_path / "d.csv"


def test_config_model_is_the_flow_parameter_schema() -> None:
    schema = ExperimentConfig.model_json_schema()
    assert set(schema["properties"]) >= {"name", "seed", "data", "model", "search", "early_stopping"}
    with pytest.raises(ValueError):
        ExperimentConfig.model_validate({"search": {"n_trials": -1}})


def test_mode_defaults_from_the_metric_name() -> None:
    assert metric_mode("val_loss") == "min"
    assert metric_mode("val_rmse") == "min"
    assert metric_mode("val_accuracy") == "max"
    cfg = validate_config({"search": {"metric": "val_loss"}})
    assert cfg.search.mode == "min"
    assert validate_config({"search": {"metric": "val_loss", "mode": "max"}}).search.mode == "max"


def test_flatten_uses_dots() -> None:
    flat = flatten(validate_config({}))
    assert flat["model.optimizer"] == "sgd"
    assert flat["search.n_trials"] == 30
    assert flat["search.bayes.surrogate"] == "GP"


def test_config_hash_ignores_budget_but_not_the_search() -> None:
    base = validate_config({})
    assert config_hash(base) == config_hash(validate_config({}))
    assert config_hash(base) == config_hash(validate_config({"search": {"n_trials": 99, "n_parallel": 2}}))
    assert config_hash(base) != config_hash(validate_config({"seed": 1}))
    assert config_hash(base) != config_hash(validate_config({"model": {"dropout": 0.1}}))
