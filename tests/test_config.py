"""Config loading, overrides, and every config problem reported by dotted path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    # what is recorded of each trial, not what the study is: --resume finds the study either way
    assert config_hash(base) == config_hash(validate_config({"tracking": {"weight_summary_every": 1}}))
    assert config_hash(base) != config_hash(validate_config({"seed": 1}))
    assert config_hash(base) != config_hash(validate_config({"model": {"dropout": 0.1}}))


# --------------------------------------------------------------------------------------------
# The training recipe: schedules, depth and width, the heuristic start

README = Path(__file__).resolve().parents[1] / "README.md"
RECIPE_KEYS = [
    "model.hidden_layers",
    "model.depth",
    "model.width",
    "model.width_decay",
    "model.lr_schedule",
    "model.lr_decay",
    "model.lr_step_epochs",
    "model.momentum_schedule",
    "model.momentum_final",
    "model.l2_schedule",
    "model.l2_final",
    "search.heuristic_start",
]


def test_every_recipe_key_is_in_the_readme_config_table() -> None:
    import re

    table = [line for line in README.read_text().splitlines() if line.startswith("| `")]
    documented = {key for line in table for key in re.findall(r"`([\w.]+)`", line.split("|")[1])}
    assert set(RECIPE_KEYS) <= documented, sorted(set(RECIPE_KEYS) - documented)
    defaults = flatten(validate_config({}))
    for key in RECIPE_KEYS:  # and each has a default
        assert key in defaults


def test_every_config_key_is_in_the_readme_config_table() -> None:
    """Each key of the resolved default config has a row, or sits in a group that has one
    (`search.bayes` lists its members' defaults in one row; `search.space.<field>` is the space)."""
    import re

    table = [line for line in README.read_text().splitlines() if line.startswith("| `")]
    cells = [line.split("|")[1] for line in table]
    documented = {key for cell in cells for key in re.findall(r"`([\w.]+?)(?:\.<\w+>)?`", cell)}
    missing = [
        key
        for key in flatten(validate_config({}))
        if not any(key == d or key.startswith(d + ".") for d in documented)
    ]
    assert missing == []


@pytest.mark.parametrize(
    ("raw", "path", "fragment"),
    [
        (
            {"tracking": {"weight_summary_every": -1}},
            "tracking.weight_summary_every",
            "greater than or equal to 0",
        ),
        ({"model": {"lr_schedule": "linear"}}, "model.lr_schedule", "one_cycle"),
        ({"model": {"lr_decay": 0}}, "model.lr_decay", "greater than 0"),
        ({"model": {"lr_decay": 1.5}}, "model.lr_decay", "less than or equal to 1"),
        ({"model": {"lr_step_epochs": 0}}, "model.lr_step_epochs", "greater than or equal to 1"),
        ({"model": {"momentum_schedule": "step"}}, "model.momentum_schedule", "linear_decay"),
        ({"model": {"momentum_final": 1.0}}, "model.momentum_final", "less than 1"),
        ({"model": {"l2_schedule": "exponential"}}, "model.l2_schedule", "cosine"),
        ({"model": {"l2_final": -0.1}}, "model.l2_final", "greater than or equal to 0"),
        ({"model": {"depth": -1}}, "model.depth", "greater than or equal to 0"),
        ({"model": {"width": 0}}, "model.width", "greater than 0"),
        ({"model": {"width": 12.5}}, "model.width", "integer"),
        ({"model": {"width_decay": 0}}, "model.width_decay", "greater than 0"),
        ({"model": {"hidden_layers": [64, 0]}}, "model.hidden_layers.1", "greater than 0"),
        ({"search": {"heuristic_start": "grid_scan"}}, "search.heuristic_start", "lr_range_test"),
        # searched values validate like fixed ones
        (
            {"search": {"space": {"lr_schedule": {"choices": ["cosine", "linear"]}}}},
            "search.space.lr_schedule.choices.1",
            "'linear' is not a valid model.lr_schedule",
        ),
        ({"search": {"space": {"width": {"low": 16.5, "high": 64}}}}, "search.space.width.low", "integer"),
        (
            {"search": {"space": {"width": {"low": 16, "high": 64, "type": "float"}}}},
            "search.space.width.type",
            "int",
        ),
        ({"search": {"space": {"depth": {"low": -1, "high": 3}}}}, "search.space.depth.low", "not a valid"),
        (
            {"model": {"lr_schedule": "step"}, "search": {"space": {"lr_decay": {"low": 0.5, "high": 2}}}},
            "search.space.lr_decay.high",
            "not a valid model.lr_decay",
        ),
        (
            {"search": {"space": {"momentum_schedule": {"choices": ["constant", "exp"]}}}},
            "search.space.momentum_schedule.choices.1",
            "not a valid",
        ),
        # both ways of giving the architecture
        (
            {"model": {"hidden_layers": [64], "depth": 3}},
            "model.depth",
            "cannot be combined with model.hidden_layers",
        ),
        ({"model": {"hidden_layers": [64], "width_decay": 0.5}}, "model.width_decay", "not both"),
        (
            {"model": {"width": 64}, "search": {"space": {"hidden_layers": {"choices": [[64], [32]]}}}},
            "model.width",
            "search.space.hidden_layers",
        ),
        (
            {"model": {"hidden_layers": [64]}, "search": {"space": {"depth": {"low": 1, "high": 3}}}},
            "search.space.depth",
            "model.hidden_layers: null",
        ),
        # one_cycle brings its own warm-up and momentum cycle
        ({"model": {"lr_schedule": "one_cycle", "warmup_epochs": 2}}, "model.warmup_epochs", "own warm-up"),
        (
            {
                "model": {"warmup_epochs": 2},
                "search": {"space": {"lr_schedule": {"choices": ["none", "one_cycle"]}}},
            },
            "search.space.lr_schedule",
            "own warm-up",
        ),
        (
            {
                "model": {"lr_schedule": "one_cycle"},
                "search": {"space": {"warmup_epochs": {"low": 0, "high": 3}}},
            },
            "search.space.warmup_epochs",
            "own warm-up",
        ),
        (
            {"model": {"lr_schedule": "one_cycle", "momentum_schedule": "cosine"}},
            "model.momentum_schedule",
            "cycles the momentum",
        ),
        (
            {"model": {"optimizer": "adam", "momentum_schedule": "linear_decay"}},
            "model.momentum_schedule",
            "SGD",
        ),
        # a searched value that no trial would use
        (
            {"search": {"space": {"lr_decay": {"low": 0.5, "high": 0.99}}}},
            "search.space.lr_decay",
            "no trial",
        ),
        (
            {
                "model": {"lr_schedule": "exponential"},
                "search": {"space": {"lr_step_epochs": {"low": 2, "high": 9}}},
            },
            "search.space.lr_step_epochs",
            "no trial",
        ),
        (
            {"search": {"space": {"momentum_final": {"low": 0.1, "high": 0.8}}}},
            "search.space.momentum_final",
            "no trial",
        ),
        (
            {"search": {"space": {"l2_final": {"low": 0.0, "high": 0.01}}}},
            "search.space.l2_final",
            "no trial",
        ),
        # the heuristic start needs a learning-rate range on the built-in model
        (
            {
                "search": {
                    "heuristic_start": "lr_range_test",
                    "space": {"momentum": {"low": 0.1, "high": 0.9}},
                }
            },
            "search.heuristic_start",
            "search.space.learning_rate",
        ),
        (
            {
                "search": {
                    "heuristic_start": "lr_range_test",
                    "space": {"learning_rate": {"choices": [0.1, 0.01]}},
                }
            },
            "search.heuristic_start",
            "must be a range",
        ),
        (
            {
                "model": {"module": "examples.digits_cnn.model:DigitsCNN"},
                "search": {
                    "heuristic_start": "lr_range_test",
                    "space": {"learning_rate": {"low": 0.001, "high": 0.1}},
                },
            },
            "search.heuristic_start",
            "built-in model",
        ),
    ],
)
def test_each_recipe_problem_names_its_field(raw: dict, path: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_config(raw)
    matching = [m for p, m in info.value.problems if p == path]
    assert matching, f"no problem at {path}: {info.value.problems}"
    assert any(fragment in m for m in matching), matching


def test_setting_depth_over_a_file_with_hidden_layers_is_refused_by_path(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model": {"hidden_layers": [64, 32]}}))
    with pytest.raises(ConfigError) as info:
        load_config(path, ["model.width=96"])
    assert [p for p, _ in info.value.problems] == ["model.width"]
    cfg = load_config(path, ["model.hidden_layers=null", "model.width=96", "model.depth=3"])
    assert cfg.model.layer_sizes == [96, 48, 24]


def test_every_recipe_field_can_be_searched() -> None:
    from hyperflow.components.search import SearchSpace, make_strategy

    space = {
        "depth": {"low": 1, "high": 4},
        "width": {"low": 16, "high": 256, "log": True},
        "width_decay": {"low": 0.25, "high": 1.0},
        "lr_schedule": {"choices": ["none", "step", "exponential", "cosine", "one_cycle"]},
        "lr_decay": {"low": 0.5, "high": 0.99},
        "lr_step_epochs": {"low": 2, "high": 10},
        "momentum_schedule": {"choices": ["constant", "linear_decay", "cosine"]},
        "momentum_final": {"low": 0.1, "high": 0.8},
        "l2_schedule": {"choices": ["constant", "linear_decay", "cosine"]},
        "l2_final": {"low": 0.0, "high": 1e-3},
    }
    # one_cycle cycles the momentum itself: momentum_schedule is searched in a second config
    momentum = {k: space.pop(k) for k in ("momentum_schedule", "momentum_final")}
    both = {"lr_schedule": {"choices": ["none", "cosine"]}, **momentum}
    assert validate_config({"search": {"space": both}}).search.space.keys() == both.keys()
    cfg = validate_config({"search": {"strategy": "random", "space": space}})
    kinds = {d.name: d.kind for d in SearchSpace.from_config(cfg)}
    assert kinds == {
        "depth": "int",
        "width": "int",
        "width_decay": "real",
        "lr_schedule": "categorical",
        "lr_decay": "real",
        "lr_step_epochs": "int",
        "l2_schedule": "categorical",
        "l2_final": "real",
    }
    for point in make_strategy(cfg).ask(5):
        assert isinstance(point["depth"], int) and isinstance(point["width"], int)
        assert point["lr_schedule"] in space["lr_schedule"]["choices"]
    # an initial point that leaves the architecture out takes the built-in default values
    cfg = validate_config({"search": {"space": {"depth": {"low": 1, "high": 4}}, "initial_points": [{}]}})
    assert make_strategy(cfg).ask(1) == [{"depth": 2}]


def test_the_resolved_config_of_a_deployment_stays_valid() -> None:
    from hyperflow.flows.deploy import deployment_parameters

    for raw in (
        {"model": {"depth": 3, "width": 64}, "search": {"space": {"width_decay": {"low": 0.3, "high": 1.0}}}},
        {"model": {"hidden_layers": [32, 16], "lr_schedule": "one_cycle"}},
        {},
    ):
        cfg = validate_config(raw)
        params = deployment_parameters(cfg)["config"]
        again = validate_config(params)
        assert again == cfg and again.model.layer_sizes == cfg.model.layer_sizes
        assert validate_config(yaml.safe_load(yaml.safe_dump(params))) == cfg


def test_hidden_layers_128_64_hashes_as_left_unset() -> None:
    # [128, 64] was the default before hidden_layers could be unset: studies recorded with it resume.
    assert config_hash(validate_config({"model": {"hidden_layers": [128, 64]}})) == config_hash(
        validate_config({})
    )
    assert config_hash(validate_config({"model": {"hidden_layers": [64]}})) != config_hash(
        validate_config({})
    )
    assert config_hash(validate_config({"model": {"depth": 3}})) != config_hash(validate_config({}))


def test_validate_shows_the_resolved_architecture(digits: Any) -> None:
    from hyperflow.components.describe import describe_config

    cfg = validate_config({"model": {"depth": 3, "width": 96}})
    text = describe_config(cfg, digits)
    resolved = yaml.safe_load(text.split("# search space")[0].removeprefix("# resolved config"))
    assert resolved["model"]["hidden_layers"] is None and resolved["model"]["depth"] == 3
    assert validate_config(resolved) == cfg
    assert "architecture: hidden_layers [96, 48, 24] from depth 3, width 96, width_decay 0.5 (unset)" in text
    assert f"parameters: {(64 + 1) * 96 + 97 * 48 + 49 * 24 + 25 * 10:,}" in text
    searched = validate_config({"search": {"space": {"depth": {"low": 1, "high": 3}}}})
    assert "3 architectures, [128] to [128, 64, 32]" in describe_config(searched, digits)


# --------------------------------------------------------------------------------------------
# The primary objective, and an error that always names its problem


@pytest.mark.parametrize(
    ("objectives", "fragment"),
    [
        (["val_acuracy", "param_count"], "'val_acuracy' is not logged for a classification task"),
        (["val_rmse", "param_count"], "'val_rmse' is not logged for a classification task"),
        (["param_count", "val_accuracy"], "'param_count' is recorded once per trial"),
    ],
)
def test_a_bad_first_objective_is_named_by_its_path(objectives: list[str], fragment: str) -> None:
    # The first objective becomes search.metric: its problem was dropped ("0 problems").
    raw = {"data": {"source": "digits"}, "search": {"objectives": [{"metric": m} for m in objectives]}}
    with pytest.raises(ConfigError) as err:
        validate_config(raw)
    (problem,) = err.value.problems
    assert problem[0] == "search.objectives.0.metric" and fragment in problem[1], problem
    assert "(1 problem)" in str(err.value)


def test_the_cli_names_a_misspelt_first_objective(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from hyperflow.flows.cli import app

    objectives = "search.objectives=[{metric: val_acuracy}, {metric: param_count}]"
    out = CliRunner().invoke(app, ["validate", str(CONF / "random.yaml"), "--set", objectives])
    assert out.exit_code == 2
    assert "0 problems" not in out.output
    assert "search.objectives.0.metric: 'val_acuracy' is not logged" in out.output


def test_a_trial_metric_is_no_primary_for_a_users_model_either() -> None:
    model = {"module": "examples.digits_cnn.model:DigitsCNN"}
    with pytest.raises(ConfigError) as err:
        validate_config({"model": model, "search": {"metric": "param_count"}})
    assert [p for p, _ in err.value.problems] == ["search.metric"]
    assert "logged every epoch" in err.value.problems[0][1]
    ok = validate_config(
        {"model": model, "search": {"objectives": [{"metric": "val_accuracy"}, {"metric": "param_count"}]}}
    )
    assert ok.search.metric == "val_accuracy"


def test_a_config_error_always_names_a_problem() -> None:
    err = ConfigError([], "x.yaml")
    assert len(err.problems) == 1 and "0 problems" not in str(err)


def test_python_override_values_numpy_scalars_as_theirs_and_others_refused_by_key() -> None:
    import numpy as np

    from hyperflow.api import _as_text, _resolve

    cfg = _resolve(
        {"search": {"n_trials": np.int64(3)}},
        _as_text({"seed": np.int64(2), "search.n_parallel": np.int32(1), "model.dropout": np.float32(0.5)}),
        None,
    )
    assert (cfg.seed, cfg.search.n_trials, cfg.search.n_parallel, cfg.model.dropout) == (2, 3, 1, 0.5)
    with pytest.raises(ConfigError) as err:
        _as_text({"search.n_trials": object()})
    assert err.value.problems == [
        (
            "search.n_trials",
            "a value of type object cannot be a config value (give text, a number, a bool, None, or a "
            "list or mapping of them)",
        )
    ]
