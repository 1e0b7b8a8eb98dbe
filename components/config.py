"""The experiment config: pydantic models, YAML loading, dotted overrides, every problem at once."""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    model_validator,
)

__all__ = [
    "BUILTIN_TASKS",
    "ChoiceSpec",
    "ConfigError",
    "DataConfig",
    "EarlyStoppingConfig",
    "ExperimentConfig",
    "ModelConfig",
    "RangeSpec",
    "RunnerConfig",
    "SearchConfig",
    "TrackingConfig",
    "apply_overrides",
    "config_hash",
    "flatten",
    "legacy_config_hash",
    "load_config",
    "metric_mode",
    "parse_value",
    "semantic_problems",
    "validate_config",
]

# Built-in data sets and the task each one is (diabetes has whole-number targets but is regression).
BUILTIN_TASKS: dict[str, str] = {
    "digits": "classification",
    "breast_cancer": "classification",
    "wine": "classification",
    "iris": "classification",
    "diabetes": "regression",
}

# Metrics the built-in model logs, by task.
BUILTIN_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("val_accuracy", "val_loss", "train_loss"),
    "regression": ("val_rmse", "val_loss", "train_loss"),
}

_MINIMISED = re.compile(r"(loss|rmse|mse|mae|error|perplexity)$")

# `package.module:Name` (or `package.module.Name`): user code named in model.module / data.module.
_IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*[:.][^\s:]+$")


def metric_mode(metric: str) -> Literal["min", "max"]:
    """The natural direction of a metric, from its name: losses and errors fall, the rest rise."""
    return "min" if _MINIMISED.search(metric) else "max"


class ConfigError(ValueError):
    """A config that cannot run; `problems` holds (dotted path, message) pairs, all of them."""

    def __init__(self, problems: list[tuple[str, str]], source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        head = f"invalid config {source}" if source else "invalid config"
        lines = [f"  {path}: {msg}" if path else f"  {msg}" for path, msg in problems]
        super().__init__(
            head + f" ({len(problems)} problem{'s' * (len(problems) != 1)}):\n" + "\n".join(lines)
        )


_CROSS_CHECK = "cross-field problems:\n"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------------------------
# Sections


class DataConfig(_Strict):
    """Where the data comes from and how it is split."""

    source: Literal["digits", "breast_cancer", "wine", "iris", "diabetes", "file"] = "digits"
    path: str | None = None
    target: str | None = None
    task: Literal["auto", "classification", "regression"] = "auto"
    val_fraction: float = Field(0.2, gt=0, lt=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    module: str | None = Field(
        None, description="import path 'package.module:ClassName' of a LightningDataModule"
    )
    args: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of data.module")


class ModelConfig(_Strict):
    """Fixed model and training values; any of them may also be searched."""

    module: str | None = Field(
        None, description="import path 'package.module:ClassName' of a LightningModule"
    )
    args: dict[str, Any] = Field(
        default_factory=dict, description="further fixed keyword arguments of model.module"
    )
    hidden_layers: list[Annotated[int, Field(gt=0)]] = Field(default_factory=lambda: [128, 64])
    activation: Literal["relu", "tanh", "sigmoid", "gelu", "leaky_relu", "elu", "selu"] = "relu"
    dropout: float = Field(0.0, ge=0, lt=1)
    batch_norm: bool = False
    init: Literal["kaiming", "xavier", "default"] = "kaiming"
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    learning_rate: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    l1: float = Field(0.0, ge=0)
    l2: float = Field(0.0, ge=0)
    batch_size: int = Field(64, gt=0)
    max_epochs: int = Field(30, gt=0)
    warmup_epochs: int = Field(0, ge=0)


# Model fields that are not hyperparameters of the network and can never be searched.
_NOT_SEARCHABLE = {"module", "args"}


class RangeSpec(_Strict):
    """A numeric dimension: `{low, high, log, type}`."""

    low: float
    high: float
    log: bool = False
    type: Literal["int", "float"] | None = None

    @model_validator(mode="after")
    def _bounds(self) -> RangeSpec:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError("low and high must be finite numbers")
        if self.low > self.high:
            raise ValueError(f"low ({self.low:g}) must not exceed high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError(f"low ({self.low:g}) must be > 0 for a log scale")
        if self.type == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError("low and high of an int range must be whole numbers")
        return self


class ChoiceSpec(_Strict):
    """A categorical dimension: `{choices: [...]}`."""

    choices: list[Any] = Field(min_length=1)

    @model_validator(mode="after")
    def _distinct(self) -> ChoiceSpec:
        seen = [json.dumps(c, sort_keys=True, default=str) for c in self.choices]
        if len(set(seen)) != len(seen):
            raise ValueError("choices must be distinct")
        return self


def _dimension_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "choices" if "choices" in value else "range"
    return "choices" if isinstance(value, ChoiceSpec) else "range"


Dimension = Annotated[
    Annotated[RangeSpec, Tag("range")] | Annotated[ChoiceSpec, Tag("choices")],
    Discriminator(_dimension_kind),
]


class BayesConfig(_Strict):
    surrogate: Literal["GP", "RF", "ET", "GBRT"] = "GP"
    acquisition: Literal["gp_hedge", "EI", "PI", "LCB"] = "gp_hedge"
    n_initial_points: int = Field(8, ge=1)
    acq_optimizer: Literal["auto", "sampling", "lbfgs"] = Field(
        "auto", description="auto: lbfgs for GP while the history is short, sampling after"
    )


class GridConfig(_Strict):
    points_per_dimension: int = Field(3, ge=2)


class GeneticConfig(_Strict):
    population_size: int = Field(12, ge=2)
    crossover_rate: float = Field(0.8, ge=0, le=1)
    mutation_rate: float = Field(0.2, ge=0, le=1)
    elite: int = Field(2, ge=0)
    tournament_size: int = Field(3, ge=2)

    @model_validator(mode="after")
    def _elite_fits(self) -> GeneticConfig:
        if self.elite >= self.population_size:
            raise ValueError(
                f"elite ({self.elite}) must be smaller than population_size ({self.population_size})"
            )
        return self


class SearchConfig(_Strict):
    strategy: Literal["grid", "random", "bayes", "genetic"] = "bayes"
    metric: str = "val_accuracy"
    mode: Literal["max", "min"] | None = Field(
        None, description="null: min for losses and errors (by the metric's name), max otherwise"
    )
    n_trials: int = Field(30, ge=1)
    n_parallel: int = Field(1, ge=1)
    max_failures: int | None = Field(None, ge=0)
    timeout_minutes: float | None = Field(None, gt=0)
    trial_timeout_minutes: float | None = Field(None, gt=0)
    initial_points: list[dict[str, Any]] = Field(default_factory=list)
    space: dict[str, Dimension] = Field(default_factory=dict)
    bayes: BayesConfig = Field(default_factory=BayesConfig)
    grid: GridConfig = Field(default_factory=GridConfig)
    genetic: GeneticConfig = Field(default_factory=GeneticConfig)

    @property
    def direction(self) -> Literal["max", "min"]:
        """The mode, inferred from the metric name when not given."""
        return self.mode or metric_mode(self.metric)


class EarlyStoppingConfig(_Strict):
    kind: Literal["none", "median", "curve_fit", "asha", "hyperband"] = "curve_fit"
    min_epochs: int = Field(5, ge=1)
    threshold: float = Field(0.05, gt=0, lt=1)
    every: int = Field(1, ge=1, description="ask the rule every k epochs")
    reduction_factor: int = Field(
        3,
        ge=2,
        description="asha, hyperband: rungs at min_epochs * reduction_factor^i; the top 1/reduction_factor go on",
    )


class TrackingConfig(_Strict):
    uri: str | None = None
    register_model: bool = True
    promote: Literal["if_better", "always"] = "if_better"


class RunnerConfig(_Strict):
    kind: Literal["local", "dask"] = "local"
    address: str | None = None
    threads_per_trial: int | None = Field(
        None, ge=1, description="torch threads of each trial; null: 1 (small models train fastest on one)"
    )


class ExperimentConfig(_Strict):
    """One experiment: the Prefect flow's only parameter."""

    name: str = Field("hyperflow", min_length=1)
    seed: int = Field(0, ge=0)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    runner: RunnerConfig = Field(default_factory=RunnerConfig)

    @model_validator(mode="before")
    @classmethod
    def _coerce_choices(cls, raw: Any) -> Any:
        # YAML 1.1 reads 1e-4 as a string: bring choices and initial points to their field's type.
        if isinstance(raw, dict):
            return _coerce_to_fields(raw)
        return raw

    @model_validator(mode="after")
    def _cross_checks(self) -> ExperimentConfig:
        problems = semantic_problems(self.model_dump(mode="python"))
        if problems:
            raise ValueError(_CROSS_CHECK + "\n".join(f"{p}: {m}" for p, m in problems))
        return self


# --------------------------------------------------------------------------------------------
# Cross-field checks on plain dicts, so that they also run when the file has other errors.


def _field_adapter(name: str) -> TypeAdapter[Any] | None:
    field = ModelConfig.model_fields.get(name)
    if field is None or field.annotation is None or name in _NOT_SEARCHABLE:
        return None
    return TypeAdapter(field.annotation)


def _is_numeric_field(name: str) -> bool:
    field = ModelConfig.model_fields.get(name)
    return field is not None and field.annotation in (int, float)


def _coerce_to_fields(raw: dict[str, Any]) -> dict[str, Any]:
    search = raw.get("search")
    model = raw.get("model") if isinstance(raw.get("model"), dict) else {}
    if not isinstance(search, dict) or (isinstance(model, dict) and model.get("module")):
        return raw
    search = dict(search)
    space = search.get("space")
    if isinstance(space, dict):
        new_space: dict[str, Any] = {}
        for key, spec in space.items():
            adapter = _field_adapter(key)
            if adapter is not None and isinstance(spec, dict) and isinstance(spec.get("choices"), list):
                spec = dict(spec)
                spec["choices"] = [_try_coerce(adapter, c) for c in spec["choices"]]
            new_space[key] = spec
        search["space"] = new_space
    points = search.get("initial_points")
    if isinstance(points, list):
        search["initial_points"] = [
            {k: _try_coerce(_field_adapter(k), v) for k, v in p.items()} if isinstance(p, dict) else p
            for p in points
        ]
    return {**raw, "search": search}


def _try_coerce(adapter: TypeAdapter[Any] | None, value: Any) -> Any:
    if adapter is None:
        return value
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return value  # reported by semantic_problems with the field's name


def _task_of(data: dict[str, Any]) -> str | None:
    task = data.get("task", "auto")
    if task in ("classification", "regression"):
        return str(task)
    if data.get("module"):
        return None
    return BUILTIN_TASKS.get(str(data.get("source", "digits")))


def semantic_problems(cfg: dict[str, Any]) -> list[tuple[str, str]]:
    """Problems that involve more than one field; tolerant of a malformed dict."""
    problems: list[tuple[str, str]] = []
    data = cfg.get("data") if isinstance(cfg.get("data"), dict) else {}
    model = cfg.get("model") if isinstance(cfg.get("model"), dict) else {}
    search = cfg.get("search") if isinstance(cfg.get("search"), dict) else {}
    assert isinstance(data, dict) and isinstance(model, dict) and isinstance(search, dict)
    custom_model = bool(model.get("module"))

    # user code: only the form of its import path here; preflight imports it and checks signatures
    for section, entry in (("model", model), ("data", data)):
        path = entry.get("module")
        if isinstance(path, str) and not _IMPORT_PATH.match(path):
            problems.append(
                (f"{section}.module", f"{path!r} is not an import path 'package.module:ClassName'")
            )
    if data.get("module") and not custom_model:
        problems.append(
            (
                "data.module",
                "a DataModule needs a model.module too (the built-in MLP trains on the built-in data sets)",
            )
        )

    # data
    if not data.get("module"):
        if data.get("source") == "file":
            if not data.get("path"):
                problems.append(("data.path", "required when data.source is 'file'"))
            else:
                path = Path(str(data["path"]))
                if path.suffix.lower() not in (".csv", ".parquet", ".pq", ".npz"):
                    problems.append(
                        ("data.path", f"{path}: unsupported file type (use .csv, .parquet or .npz)")
                    )
                elif not path.exists():
                    problems.append(("data.path", f"{path}: no such file"))
                elif path.suffix.lower() != ".npz" and not data.get("target"):
                    problems.append(("data.target", "required for a .csv or .parquet file"))
        elif data.get("path") is not None:
            problems.append(("data.path", f"only used with source 'file' (source is {data.get('source')!r})"))
    vf, tf = data.get("val_fraction", 0.2), data.get("test_fraction", 0.2)
    if isinstance(vf, int | float) and isinstance(tf, int | float) and vf + tf >= 1:
        problems.append(
            (
                "data",
                f"val_fraction + test_fraction = {vf + tf:g} leaves no training data (must be < 1)",
            )
        )

    # metric against task
    task = _task_of(data)
    metric = search.get("metric", "val_accuracy")
    if not custom_model and task is not None and isinstance(metric, str):
        allowed = BUILTIN_METRICS[task]
        if metric not in allowed:
            problems.append(
                (
                    "search.metric",
                    f"{metric!r} is not logged for a {task} task; use one of {', '.join(allowed)}",
                )
            )

    # space against the model fields
    space = search.get("space")
    if isinstance(space, dict):
        for key, spec in space.items():
            problems.extend(_dimension_problems(key, spec, custom_model))
        if search.get("strategy") == "grid" and not space:
            problems.append(("search.space", "grid search needs at least one dimension"))
    elif space is not None:
        problems.append(("search.space", "must be a mapping of model field to dimension"))

    problems.extend(_halving_problems(cfg, model, space))

    # initial points
    points = search.get("initial_points")
    if isinstance(points, list) and isinstance(space, dict):
        for i, point in enumerate(points):
            problems.extend(_initial_point_problems(i, point, space, model, custom_model))

    return problems


def _halving_problems(cfg: dict[str, Any], model: dict[str, Any], space: Any) -> list[tuple[str, str]]:
    """asha and hyperband need a rung before the last epoch, and judge at their rungs only."""
    es = cfg.get("early_stopping") if isinstance(cfg.get("early_stopping"), dict) else {}
    assert isinstance(es, dict)
    kind = es.get("kind")
    if kind not in ("asha", "hyperband"):
        return []
    problems: list[tuple[str, str]] = []
    every = es.get("every", 1)
    if isinstance(every, int) and every != 1:
        problems.append(
            (
                "early_stopping.every",
                f"{kind} decides at its rungs only (min_epochs * reduction_factor^i); leave every at 1",
            )
        )
    min_epochs = es.get("min_epochs", 5)
    budget: Any = model.get("max_epochs", 30)
    where = "model.max_epochs"
    spec = _spec_dict(space.get("max_epochs")) if isinstance(space, dict) else None
    if spec is not None:
        # A searched max_epochs: rungs go up to the space's upper bound, and a trial whose own
        # budget ends before a rung simply completes.
        numbers = [c for c in spec.get("choices") or [] if isinstance(c, int | float)]
        budget = spec.get("high") if "choices" not in spec else max(numbers, default=None)
        where = "the upper bound of search.space.max_epochs"
    if isinstance(min_epochs, int) and isinstance(budget, int | float) and min_epochs >= budget:
        problems.append(
            (
                "early_stopping.min_epochs",
                f"{kind} needs a rung before the last epoch: min_epochs ({min_epochs}) must be below "
                f"{where} ({budget:g})",
            )
        )
    return problems


def _spec_dict(spec: Any) -> dict[str, Any] | None:
    if isinstance(spec, BaseModel):
        return spec.model_dump()
    return spec if isinstance(spec, dict) else None


def _dimension_problems(key: str, spec: Any, custom_model: bool) -> list[tuple[str, str]]:
    path = f"search.space.{key}"
    spec = _spec_dict(spec)
    if spec is None:
        return [(path, "must be {low, high[, log, type]} or {choices: [...]}")]
    if key in _NOT_SEARCHABLE:
        return [(path, f"model.{key} cannot be searched")]
    if custom_model:
        return []  # checked against the module's constructor when it is imported
    if key not in ModelConfig.model_fields:
        fields = ", ".join(k for k in ModelConfig.model_fields if k not in _NOT_SEARCHABLE)
        return [(path, f"unknown model field {key!r} (searchable: {fields})")]
    adapter = _field_adapter(key)
    assert adapter is not None
    problems: list[tuple[str, str]] = []
    if "choices" in spec:
        for i, choice in enumerate(spec.get("choices") or []):
            try:
                adapter.validate_python(choice)
            except ValidationError as exc:
                msg = exc.errors()[0]["msg"]
                problems.append((f"{path}.choices.{i}", f"{choice!r} is not a valid model.{key}: {msg}"))
    else:
        if not _is_numeric_field(key):
            problems.append((path, f"model.{key} is not numeric: search it with {{choices: [...]}}"))
            return problems
        field_type = ModelConfig.model_fields[key].annotation
        if spec.get("type") == "float" and field_type is int:
            problems.append((f"{path}.type", f"model.{key} is an integer; use type: int"))
        for bound in ("low", "high"):
            value = spec.get(bound)
            if isinstance(value, int | float):
                as_type = int(value) if field_type is int and value == int(value) else value
                if field_type is int and value != int(value):
                    problems.append((f"{path}.{bound}", f"model.{key} is an integer; {value!r} is not"))
                    continue
                try:
                    adapter.validate_python(as_type)
                except ValidationError as exc:
                    msg = exc.errors()[0]["msg"]
                    problems.append((f"{path}.{bound}", f"{value!r} is not a valid model.{key}: {msg}"))
    return problems


def _in_dimension(value: Any, spec: dict[str, Any]) -> bool:
    if "choices" in spec:
        return any(value == c for c in spec["choices"])
    try:
        return bool(spec["low"] <= value <= spec["high"])
    except TypeError:
        return False


def _initial_point_problems(
    i: int, point: Any, space: dict[str, Any], model: dict[str, Any], custom_model: bool
) -> list[tuple[str, str]]:
    path = f"search.initial_points.{i}"
    if not isinstance(point, dict):
        return [(path, "must be a mapping of searched field to value")]
    problems: list[tuple[str, str]] = []
    for key, value in point.items():
        spec = _spec_dict(space.get(key))
        if spec is None:
            problems.append((f"{path}.{key}", f"{key!r} is not in search.space"))
            continue
        if not _in_dimension(value, spec):
            problems.append((f"{path}.{key}", f"{value!r} is outside search.space.{key}"))
    for key, raw_spec in space.items():
        spec = _spec_dict(raw_spec)
        if key in point or spec is None:
            continue
        fixed = (model.get("args") or {}).get(key, model.get(key)) if custom_model else model.get(key)
        if fixed is None or not _in_dimension(fixed, spec):
            problems.append(
                (
                    f"{path}.{key}",
                    f"missing, and the fixed value {fixed!r} is not in search.space.{key}",
                )
            )
    return problems


# --------------------------------------------------------------------------------------------
# Loading


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads 1e-4 (no dot) as a float, as YAML 1.2 and every user expect."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_value(text: str) -> Any:
    """Parse an override value as a YAML scalar or list (`[64,32]`, `1e-3`, `true`, `null`)."""
    return yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader


def apply_overrides(raw: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Return a copy of `raw` with dotted `KEY=VALUE` overrides applied."""
    out = json.loads(json.dumps(raw, default=str)) if raw else {}
    problems: list[tuple[str, str]] = []
    for item in overrides or []:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(("--set", f"{item!r} is not KEY=VALUE (e.g. search.n_trials=20)"))
            continue
        try:
            value = parse_value(text)
        except yaml.YAMLError as exc:
            problems.append((key, f"cannot parse {text!r}: {exc}"))
            continue
        node = out
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                problems.append(
                    (".".join(parts[: depth + 1]), "is not a section; cannot set a key inside it")
                )
                break
            node = child
        else:
            node[parts[-1]] = value
    if problems:
        raise ConfigError(problems, "overrides")
    return out


def _problems_from_validation(exc: ValidationError) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        # The dimension's discriminator tag follows its key: search.space.<key>.<tag>....
        if loc[:2] == ["search", "space"] and len(loc) > 3 and loc[3] in ("range", "choices"):
            del loc[3]
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        if msg.startswith(_CROSS_CHECK):
            continue  # validate_config adds semantic_problems() itself, also when fields fail
        problems.append((".".join(loc), msg))
    return problems


def validate_config(raw: Any, source: str | None = None) -> ExperimentConfig:
    """Validate a plain dict; raise ConfigError listing every problem by dotted path."""
    if not isinstance(raw, dict):
        raise ConfigError([("", "the config must be a YAML mapping")], source)
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        problems = _problems_from_validation(exc)
        for extra in semantic_problems(_coerce_to_fields(raw)):
            if extra not in problems:
                problems.append(extra)
        raise ConfigError(_dedupe(problems), source) from None


def _dedupe(problems: list[tuple[str, str]]) -> list[tuple[str, str]]:
    seen: set[tuple[str, str]] = set()
    out = []
    for p in problems:
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load a YAML config, apply dotted overrides and validate it.

    Args:
        path: the YAML file.
        overrides: `KEY=VALUE` strings with dotted keys; values parse as YAML.

    Raises:
        ConfigError: naming every problem by its dotted path.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError([("", f"{path}: no such config file")], str(path))
    try:
        raw = yaml.load(path.read_text(), Loader=_Loader)  # a SafeLoader
    except yaml.YAMLError as exc:
        raise ConfigError([("", f"not valid YAML: {exc}")], str(path)) from None
    if raw is None:
        raise ConfigError([("", "the file is empty")], str(path))
    if not isinstance(raw, dict):
        raise ConfigError([("", "the config must be a YAML mapping")], str(path))
    raw = _resolve_relative_paths(raw, path.parent)
    return validate_config(apply_overrides(raw, overrides), str(path))


def _resolve_relative_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    # A data file named relative to the config's folder is found when run from anywhere;
    # one that exists relative to the working directory is kept as written.
    data = raw.get("data")
    if isinstance(data, dict) and isinstance(data.get("path"), str):
        p = Path(data["path"])
        if not p.is_absolute() and not p.exists() and (base / p).exists():
            raw = {**raw, "data": {**data, "path": str(base / p)}}
    return raw


# --------------------------------------------------------------------------------------------
# Helpers over a valid config


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts with dots: {'model': {'optimizer': 'sgd'}} -> {'model.optimizer': 'sgd'}."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    out: dict[str, Any] = {}
    if isinstance(value, dict) and value:
        for key, child in value.items():
            out.update(flatten(child, f"{prefix}.{key}" if prefix else str(key)))
    else:
        out[prefix] = value
    return out


# Fields that change how long or where a study runs, not what it is: excluded from the hash so
# that `--resume` and `--n-trials` find the same study.
_HASH_EXCLUDED = {
    "search.n_trials",
    "search.n_parallel",
    "search.max_failures",
    "search.timeout_minutes",
    "tracking.uri",
    "tracking.register_model",
    "tracking.promote",
    "runner.kind",
    "runner.address",
}


def config_hash(cfg: ExperimentConfig) -> str:
    """A short stable hash of what defines the study (not its budget or where it runs).

    Only values that differ from their defaults count, at every level (a dimension's `log: false`
    as much as `model.dropout`), so that a key added to the schema later, with a default, leaves
    the hash of every recorded study as it was.
    """
    flat = flatten(cfg.model_dump(mode="json", exclude_defaults=True))
    # An empty section flattens to {"": {}} or {"model.args": {}}: nothing that defines a study.
    return _hash_flat({k: v for k, v in flat.items() if v != {}})


def legacy_config_hash(recorded: dict[str, Any]) -> str:
    """The hash studies recorded before 0.2 carry: every key of their `config.yaml`, defaults included."""
    return _hash_flat(flatten(recorded))


def _hash_flat(flat: dict[str, Any]) -> str:
    kept = {k: v for k, v in flat.items() if k not in _HASH_EXCLUDED}
    blob = json.dumps(kept, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
