"""The cross-field checks of a config, on the plain dict, so that they also run when the file has other errors."""

from __future__ import annotations

import math
import posixpath
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, get_args
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from hyperflow.components.architecture import (
    ARCHITECTURE_KEYS,
    DEFAULT_DEPTH,
    DEFAULT_WIDTH,
    DEFAULT_WIDTH_DECAY,
    hidden_layer_sizes,
)
from hyperflow.components.stopping import default_first_rung

__all__ = [
    "BUILTIN_METRICS",
    "BUILTIN_TASKS",
    "FILE_SUFFIXES",
    "NOT_SEARCHABLE",
    "TRIAL_METRICS",
    "ModelFields",
    "coerce_to_fields",
    "credentials_problem",
    "data_file_problem",
    "effective_value",
    "gpus_per_trial_problem",
    "mlflow_name_problem",
    "numeric_field_type",
    "parse_gpus_per_trial",
    "semantic_problems",
]

# The model section's fields by name (`ModelConfig.model_fields`): what the checks test values against.
ModelFields = Mapping[str, FieldInfo]

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

# What every trial records once (not per epoch), usable as a later objective whatever the model logs.
TRIAL_METRICS = ("param_count", "train_seconds", "epochs_trained")

# What `data.path` may name (`source: file`).
FILE_SUFFIXES = (".csv", ".parquet", ".pq", ".npz")

# `package.module:Name` (or `package.module.Name`): user code named in model.module / data.module.
_IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*[:.][^\s:]+$")

# Model fields that are not hyperparameters of the network and can never be searched.
NOT_SEARCHABLE = {"module", "args"}


# As the config's own fields: no bool for an int, no string for a number, no .inf or .nan.
_STRICT = ConfigDict(strict=True, allow_inf_nan=False)
_LAX = ConfigDict(allow_inf_nan=False)


def _field_adapter(fields: ModelFields, name: str, *, strict: bool = True) -> TypeAdapter[Any] | None:
    field = fields.get(name)
    if field is None or field.annotation is None or name in NOT_SEARCHABLE:
        return None
    # With the field's constraints (gt=0, le=1, ...): a searched value is checked as a fixed one is.
    constrained: Any = Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation
    return TypeAdapter(constrained, config=_STRICT if strict else _LAX)


def numeric_field_type(fields: ModelFields, name: str) -> type | None:
    """`int` or `float` for a numeric model field (an optional one too, like `depth`), else None."""
    field = fields.get(name)
    if field is None:
        return None
    annotation = field.annotation
    options = [a for a in get_args(annotation) if a is not type(None)] or [annotation]
    if len(options) == 1 and options[0] in (int, float):
        return options[0]
    return None


def _is_numeric_field(fields: ModelFields, name: str) -> bool:
    return numeric_field_type(fields, name) is not None


def effective_value(fields: ModelFields, model: dict[str, Any], key: str) -> Any:
    """A model value as the built-in MLP uses it: unset architecture keys take their defaults.

    Tolerant of a malformed dict (None where a value cannot be worked out).
    """
    field = fields.get(key)
    value = model.get(key, field.default if field is not None else None)
    if value is not None:
        return value
    if key == "hidden_layers":
        try:
            return hidden_layer_sizes(None, *(model.get(k) for k in ARCHITECTURE_KEYS))
        except (TypeError, ValueError):
            return None
    return {"depth": DEFAULT_DEPTH, "width": DEFAULT_WIDTH, "width_decay": DEFAULT_WIDTH_DECAY}.get(key)


def coerce_to_fields(raw: dict[str, Any], fields: ModelFields) -> dict[str, Any]:
    """`raw` with the search's choices and initial points brought to their model field's type where they fit.

    YAML 1.1 reads 1e-4 as a string; what does not fit is left for `semantic_problems` to name.
    """
    search = raw.get("search")
    model = raw.get("model") if isinstance(raw.get("model"), dict) else {}
    if not isinstance(search, dict) or (isinstance(model, dict) and model.get("module")):
        return raw
    search = dict(search)
    space = search.get("space")
    if isinstance(space, dict):
        new_space: dict[str, Any] = {}
        for key, spec in space.items():
            adapter = _field_adapter(fields, key)
            if adapter is not None and isinstance(spec, dict) and isinstance(spec.get("choices"), list):
                spec = dict(spec)
                spec["choices"] = [_try_coerce(fields, key, c) for c in spec["choices"]]
            new_space[key] = spec
        search["space"] = new_space
    points = search.get("initial_points")
    if isinstance(points, list):
        search["initial_points"] = [
            {k: _try_coerce(fields, k, v) for k, v in p.items()} if isinstance(p, dict) else p for p in points
        ]
    return {**raw, "search": search}


def _try_coerce(fields: ModelFields, key: str, value: Any) -> Any:
    # Only a string is converted (a YAML 1.1 reader's "1e-4"); `true` stays a bool, refused for an int.
    adapter = _field_adapter(fields, key, strict=not isinstance(value, str))
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


def semantic_problems(cfg: dict[str, Any], fields: ModelFields) -> list[tuple[str, str]]:
    """Problems that involve more than one field; tolerant of a malformed dict.

    `fields` are the model section's fields: what may be searched, and the type of each value.
    """
    problems: list[tuple[str, str]] = []
    data = cfg.get("data") if isinstance(cfg.get("data"), dict) else {}
    model = cfg.get("model") if isinstance(cfg.get("model"), dict) else {}
    search = cfg.get("search") if isinstance(cfg.get("search"), dict) else {}
    assert isinstance(data, dict) and isinstance(model, dict) and isinstance(search, dict)
    custom_model = bool(model.get("module"))

    # names and the store: what MLflow would refuse only after every trial trained, and credentials
    # that would be stored in plain text as the Prefect flow run's parameters
    name = cfg.get("name")
    if isinstance(name, str) and (name_problem := mlflow_name_problem(name)) is not None:
        problems.append(("name", name_problem))
    tracking = cfg.get("tracking") if isinstance(cfg.get("tracking"), dict) else {}
    assert isinstance(tracking, dict)
    if isinstance(tracking.get("uri"), str) and (uri_problem := credentials_problem(tracking["uri"])):
        problems.append(("tracking.uri", uri_problem))
    for section, entry in (("model", model), ("data", data)):
        if entry.get("args") and not entry.get("module"):
            problems.append(
                (
                    f"{section}.args",
                    f"only used with {section}.module (keyword arguments of your own class); "
                    + (
                        "the built-in MLP takes none: set model fields directly"
                        if section == "model"
                        else "the built-in data sets take none"
                    ),
                )
            )

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
            problem = data_file_problem(data.get("path"), data.get("target"))
            if problem is not None:
                problems.append(problem)
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

    # the primary metric against the task (the first objective where search.objectives is given)
    problems.extend(_primary_metric_problems(data, search, custom_model))

    # space against the model fields
    space = search.get("space")
    if isinstance(space, dict):
        for key, spec in space.items():
            problems.extend(_dimension_problems(fields, key, spec, custom_model))
        if search.get("strategy") == "grid" and not space:
            problems.append(("search.space", "grid search needs at least one dimension"))
    elif space is not None:
        problems.append(("search.space", "must be a mapping of model field to dimension"))

    problems.extend(_halving_problems(cfg, model, space))

    # initial points
    points = search.get("initial_points")
    if isinstance(points, list) and isinstance(space, dict):
        for i, point in enumerate(points):
            problems.extend(_initial_point_problems(fields, i, point, space, model, custom_model))

    # the built-in model's architecture and schedules; the heuristic start
    if not custom_model:
        space_dict = {k: _spec_dict(v) for k, v in space.items()} if isinstance(space, dict) else {}
        problems.extend(_architecture_problems(model, space_dict))
        problems.extend(_schedule_problems(fields, model, space_dict))
    problems.extend(_heuristic_start_problems(search, custom_model))
    problems.extend(_multi_objective_problems(search, custom_model))

    return problems


def _primary_metric_problems(
    data: dict[str, Any], search: dict[str, Any], custom_model: bool
) -> list[tuple[str, str]]:
    """The search metric, or the first of `search.objectives` (the primary, which becomes it).

    Checked by the key the user wrote: with objectives, `search.metric` is copied from the first.
    """
    objectives = search.get("objectives")
    if isinstance(objectives, list) and objectives:
        first = objectives[0]
        metric = first.get("metric") if isinstance(first, dict) else None
        path, is_objective = "search.objectives.0.metric", True
    else:
        metric, path, is_objective = search.get("metric", "val_accuracy"), "search.metric", False
    if not isinstance(metric, str) or not metric:
        return []  # named by the field's own check
    if metric in TRIAL_METRICS:
        where = (
            "give it as a later objective, after a metric logged every epoch"
            if is_objective
            else "to search it, give search.objectives with it after the primary metric"
        )
        return [
            (
                path,
                f"{metric!r} is recorded once per trial, after training, but the primary"
                f"{' (the first objective, search.metric)' if is_objective else ''} must be a metric "
                f"logged every epoch (early stopping judges it); {where}",
            )
        ]
    task = _task_of(data)
    if custom_model or task is None:
        return []
    allowed = BUILTIN_METRICS[task]
    if metric in allowed:
        return []
    primary = " (the first objective is the primary, search.metric)" if is_objective else ""
    return [(path, f"{metric!r} is not logged for a {task} task{primary}; use one of {', '.join(allowed)}")]


def _multi_objective_problems(search: dict[str, Any], custom_model: bool) -> list[tuple[str, str]]:
    """`search.bayes.multi_objective: ehvi` where it cannot run (auto falls back to ParEGO instead)."""
    bayes = search.get("bayes") or {}
    if not isinstance(bayes, dict) or bayes.get("multi_objective") != "ehvi":
        return []
    key = "search.bayes.multi_objective"
    objectives = search.get("objectives") or []
    metrics = [o.get("metric") if isinstance(o, dict) else None for o in objectives]
    if search.get("strategy", "bayes") != "bayes" or len(metrics) != 2 or metrics[1] != "param_count":
        return [
            (
                key,
                "ehvi needs strategy bayes and exactly two search.objectives, the second param_count "
                f"(objectives: {metrics or 'none'}); use parego or auto",
            )
        ]
    if custom_model:
        return [
            (
                key,
                "ehvi counts the built-in model's parameters at every candidate; a user's model is only "
                "counted by building it, so use parego or auto",
            )
        ]
    if bayes.get("surrogate", "GP") != "GP" or bayes.get("acquisition", "logEI") != "logEI":
        return [(key, "ehvi runs on the GP with logEI (search.bayes.surrogate, acquisition); use parego")]
    return []


# MLflow's limit on an experiment's name; a registered model's name may hold no '/' or ':' and must
# be its own normalised path (mlflow.utils.validation: importing it costs all of mlflow, ~1.3 s, so
# the rules are repeated here and a test holds them to MLflow's).
MAX_NAME_LENGTH = 500


def mlflow_name_problem(name: str) -> str | None:
    """Why MLflow would refuse `name` as an experiment or registered model name (None: it would not)."""
    if not name.strip():
        return "must not be blank"
    if len(name) > MAX_NAME_LENGTH:
        return f"is {len(name)} characters long; MLflow allows at most {MAX_NAME_LENGTH}"
    bad = sorted({c for c in name if c in "/:"})
    if bad:
        return (
            f"{name!r} contains {' and '.join(repr(c) for c in bad)}, which MLflow refuses in a registered "
            "model's name (the best model is registered under the experiment's name)"
        )
    norm = posixpath.normpath(name)
    if norm != name or norm == "." or norm.startswith(".."):
        return f"{name!r} would resolve to {norm!r} as a path, which MLflow refuses in a model's name"
    return None


def credentials_problem(uri: str) -> str | None:
    """Why a URI must not be in the config: it carries a user or password (None: it carries neither)."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return None  # not a URL: MLflow names the problem when the store is checked
    if parts.username is None and parts.password is None:
        return None
    return (
        "must not carry credentials (user:password@): the config is stored as the Prefect flow run's "
        "parameter and in MLflow. Put them in the environment instead: MLFLOW_TRACKING_USERNAME and "
        "MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN"
    )


def data_file_problem(
    path_text: Any, target: Any, columns: Callable[[Path], str] | None = None
) -> tuple[str, str] | None:
    """What keeps `data.path` (with `data.target`) of `source: file` from loading, by key; None: nothing.

    `columns(path)` may add the file's columns to a missing target's message.
    """
    if not path_text:
        return ("data.path", "required when data.source is 'file'")
    path = Path(str(path_text)).expanduser()
    suffix = path.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        return (
            "data.path",
            f"{path}: unsupported file type {suffix or '(none)'!r} (use .csv, .parquet or .npz)",
        )
    if not path.exists():
        return ("data.path", f"{path}: no such file")
    if not path.is_file():
        return ("data.path", f"{path}: not a file")
    if suffix != ".npz" and not target:
        hint = columns(path) if columns is not None else ""
        return ("data.target", f"required for a {suffix} file (the label column{hint})")
    return None


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
    min_epochs = es.get("min_epochs")
    budget: Any = model.get("max_epochs", 30)
    where = "model.max_epochs"
    spec = _spec_dict(space.get("max_epochs")) if isinstance(space, dict) else None
    if spec is not None:
        # A searched max_epochs: rungs go up to the space's upper bound, and a trial whose own
        # budget ends before a rung simply completes.
        numbers = [c for c in spec.get("choices") or [] if isinstance(c, int | float)]
        budget = spec.get("high") if "choices" not in spec else max(numbers, default=None)
        where = "the upper bound of search.space.max_epochs"
    if min_epochs is None and isinstance(budget, int | float):
        min_epochs = default_first_rung(int(budget))
    if isinstance(min_epochs, int) and isinstance(budget, int | float) and min_epochs >= budget:
        problems.append(
            (
                "early_stopping.min_epochs",
                f"{kind} needs a rung before the last epoch: min_epochs ({min_epochs}) must be below "
                f"{where} ({budget:g})",
            )
        )
    return problems


def _architecture_problems(model: dict[str, Any], space: dict[str, Any]) -> list[tuple[str, str]]:
    """hidden_layers, or depth / width / width_decay: one way of giving the architecture, not both."""
    layers_fixed = model.get("hidden_layers") is not None
    layers_searched = "hidden_layers" in space
    if not (layers_fixed or layers_searched):
        return []
    given = [k for k in ARCHITECTURE_KEYS if k in space or model.get(k) is not None]
    problems = []
    for key in given:
        path = f"search.space.{key}" if key in space else f"model.{key}"
        other = "search.space.hidden_layers" if layers_searched else "model.hidden_layers"
        hint = (
            "remove it from the space"
            if layers_searched
            else "unset it (model.hidden_layers: null, or --set model.hidden_layers=null)"
        )
        problems.append(
            (
                path,
                f"cannot be combined with {other}: give the layer list, or depth / width / width_decay, "
                f"not both ({hint})",
            )
        )
    return problems


def _possible(
    fields: ModelFields, key: str, model: dict[str, Any], space: dict[str, Any]
) -> tuple[str, list[Any] | None]:
    """Where a model value comes from (its dotted path) and the values it can take (None: a range)."""
    spec = space.get(key)
    if isinstance(spec, dict):
        if "choices" in spec:
            return f"search.space.{key}", list(spec.get("choices") or [])
        return f"search.space.{key}", None
    default = fields[key].default
    return f"model.{key}", [model.get(key, default)]


def _schedule_problems(
    fields: ModelFields, model: dict[str, Any], space: dict[str, Any]
) -> list[tuple[str, str]]:
    """Schedules that cannot combine, and searched schedule values that no trial would use."""
    problems: list[tuple[str, str]] = []
    lr_path, lr_values = _possible(fields, "lr_schedule", model, space)
    lr_can = set(lr_values) if lr_values is not None else set()
    warm_path, warm_values = _possible(fields, "warmup_epochs", model, space)
    mom_path, mom_values = _possible(fields, "momentum_schedule", model, space)
    opt_path, opt_values = _possible(fields, "optimizer", model, space)

    if "one_cycle" in lr_can:
        warm_spec = space.get("warmup_epochs")
        warms = (
            warm_values is None and isinstance(warm_spec, dict) and _number(warm_spec.get("high")) > 0
        ) or any(_number(w) > 0 for w in warm_values or [])
        if warms:
            problems.append(
                (
                    _blame(lr_path, warm_path),
                    "lr_schedule one_cycle brings its own warm-up (the first 30% of the steps); "
                    "model.warmup_epochs must be 0 for it",
                )
            )
        if any(m != "constant" for m in mom_values or []):
            problems.append(
                (
                    _blame(lr_path, mom_path),
                    "lr_schedule one_cycle cycles the momentum itself (down to 0.85/0.95 of "
                    "model.momentum at the peak learning rate); model.momentum_schedule must be constant for it",
                )
            )
    if (
        opt_values is not None
        and all(o in ("adam", "adamw") for o in opt_values)
        and any(m != "constant" for m in mom_values or [])
    ):
        problems.append(
            (
                mom_path,
                f"schedules SGD's momentum; {opt_path} is {', '.join(map(str, opt_values))}, which has none",
            )
        )
    problems.extend(_warmup_problems(fields, model, space, lr_values))
    # A searched value that only a schedule uses, while that schedule is fixed to one that does not.
    used_by = {
        "lr_decay": ("lr_schedule", ("step", "exponential")),
        "lr_step_epochs": ("lr_schedule", ("step",)),
        "momentum_final": ("momentum_schedule", ("linear_decay", "cosine")),
        "l2_final": ("l2_schedule", ("linear_decay", "cosine")),
    }
    for key, (schedule, users) in used_by.items():
        if key not in space:
            continue
        path, values = _possible(fields, schedule, model, space)
        if values is not None and not any(v in users for v in values):
            problems.append(
                (
                    f"search.space.{key}",
                    f"no trial would use it: it applies to {schedule} {' or '.join(users)}, and {path} is "
                    f"{', '.join(map(str, values))}",
                )
            )
    return problems


def _blame(first: str, second: str) -> str:
    """Which of two paths a problem names: the searched one is what to change; between two fixed
    values (or two searched), the second."""
    return first if first.startswith("search.") and not second.startswith("search.") else second


def _extremes(
    fields: ModelFields, model: dict[str, Any], space: dict[str, Any], key: str
) -> tuple[str, Any, Any]:
    """Where a model value comes from (`_possible`) and the smallest and largest a trial can get
    (None: not a number)."""
    path, values = _possible(fields, key, model, space)
    if values is None:  # a range
        values = [space[key].get("low"), space[key].get("high")]
        low, high = (v if _is_real(v) else None for v in values)
        return path, low, high
    numbers = [v for v in values if _is_real(v)]
    return path, min(numbers, default=None), max(numbers, default=None)


def _is_real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _warmup_problems(
    fields: ModelFields, model: dict[str, Any], space: dict[str, Any], lr_values: list[Any] | None
) -> list[tuple[str, str]]:
    """A warm-up as long as a trial's training: the rate reaches model.learning_rate at the last step only,
    and the lr_schedule never applies. Refused where a trial can get one: the longest warm-up against
    the shortest max_epochs."""
    if lr_values is not None and all(v == "one_cycle" for v in lr_values):
        return []  # its own warm-up; model.warmup_epochs must be 0 for it (_schedule_problems)
    warm_path, _, warm = _extremes(fields, model, space, "warmup_epochs")
    epochs_path, epochs, _ = _extremes(fields, model, space, "max_epochs")
    if warm is None or epochs is None or warm <= 0 or epochs <= 0 or warm < epochs:
        return []
    path = _blame(epochs_path, warm_path)
    warm_where = f"the largest value of {warm_path}" if warm_path.startswith("search.") else warm_path
    epochs_where = (
        f"the smallest value of {epochs_path}" if epochs_path.startswith("search.") else epochs_path
    )
    return [
        (
            path,
            f"{warm_where} ({warm:g}) must be below {epochs_where} ({epochs:g}): a trial would warm up "
            "for all its epochs, its learning rate reaching model.learning_rate only at its last step, "
            "and its lr_schedule would never apply",
        )
    ]


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _heuristic_start_problems(search: dict[str, Any], custom_model: bool) -> list[tuple[str, str]]:
    if search.get("heuristic_start", "none") != "lr_range_test":
        return []
    if custom_model:
        return [
            ("search.heuristic_start", "lr_range_test runs on the built-in model only (model.module is set)")
        ]
    space = search.get("space") if isinstance(search.get("space"), dict) else {}
    assert isinstance(space, dict)
    spec = _spec_dict(space.get("learning_rate"))
    if spec is None or "choices" in spec:
        return [
            (
                "search.heuristic_start",
                "lr_range_test narrows search.space.learning_rate, which must be a range {low, high[, log]}",
            )
        ]
    return []


def _spec_dict(spec: Any) -> dict[str, Any] | None:
    if isinstance(spec, BaseModel):
        return spec.model_dump()
    return spec if isinstance(spec, dict) else None


def _dimension_problems(
    fields: ModelFields, key: str, spec: Any, custom_model: bool
) -> list[tuple[str, str]]:
    path = f"search.space.{key}"
    spec = _spec_dict(spec)
    if spec is None:
        return [(path, "must be {low, high[, log, type]} or {choices: [...]}")]
    if key in NOT_SEARCHABLE:
        return [(path, f"model.{key} cannot be searched")]
    if custom_model:
        return []  # checked against the module's constructor when it is imported
    if key not in fields:
        searchable = ", ".join(k for k in fields if k not in NOT_SEARCHABLE)
        return [(path, f"unknown model field {key!r} (searchable: {searchable})")]
    adapter = _field_adapter(fields, key)
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
        if not _is_numeric_field(fields, key):
            problems.append((path, f"model.{key} is not numeric: search it with {{choices: [...]}}"))
            return problems
        field_type = numeric_field_type(fields, key)
        if spec.get("type") == "float" and field_type is int:
            problems.append((f"{path}.type", f"model.{key} is an integer; use type: int"))
        for bound in ("low", "high"):
            value = spec.get(bound)
            if isinstance(value, int | float):
                if field_type is int and value != int(value):
                    problems.append((f"{path}.{bound}", f"model.{key} is an integer; {value!r} is not"))
                    continue
                # As the field's type: the same text for the bound as written (0) and as the
                # validated RangeSpec holds it (0.0), which are both checked.
                as_type = (
                    value if isinstance(value, bool) else int(value) if field_type is int else float(value)
                )
                try:
                    adapter.validate_python(as_type)
                except ValidationError as exc:
                    msg = exc.errors()[0]["msg"]
                    problems.append((f"{path}.{bound}", f"{as_type!r} is not a valid model.{key}: {msg}"))
    return problems


def _in_dimension(value: Any, spec: dict[str, Any]) -> bool:
    if "choices" in spec:
        return any(value == c for c in spec["choices"])
    try:
        return bool(spec["low"] <= value <= spec["high"])
    except TypeError:
        return False


def _initial_point_problems(
    fields: ModelFields, i: int, point: Any, space: dict[str, Any], model: dict[str, Any], custom_model: bool
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
        adapter = None if custom_model else _field_adapter(fields, key)
        if adapter is not None:
            try:
                adapter.validate_python(value)
            except ValidationError as exc:
                msg = exc.errors()[0]["msg"]
                problems.append((f"{path}.{key}", f"{value!r} is not a valid model.{key}: {msg}"))
                continue
        if not _in_dimension(value, spec):
            problems.append((f"{path}.{key}", f"{value!r} is outside search.space.{key}"))
    for key, raw_spec in space.items():
        spec = _spec_dict(raw_spec)
        if key in point or spec is None:
            continue
        fixed = (
            (model.get("args") or {}).get(key, model.get(key))
            if custom_model
            else effective_value(fields, model, key)
        )
        if fixed is None or not _in_dimension(fixed, spec):
            problems.append(
                (
                    f"{path}.{key}",
                    f"missing, and the fixed value {fixed!r} is not in search.space.{key}",
                )
            )
    return problems


# `runner.gpus_per_trial`: 1/k written with a few digits (0.333 for 1/3) is read as 1/k; 0.33 is not.
_FRACTION_TOLERANCE = 1e-3


def parse_gpus_per_trial(value: Any) -> Any:
    """`"1/4"` (a string: YAML has no fractions) as 0.25; anything else as it is, for the field to check."""
    if isinstance(value, str) and "/" in value:
        top, _, bottom = value.partition("/")
        try:
            return float(top) / float(bottom)
        except (ValueError, ZeroDivisionError):
            return value
    return value


def gpus_per_trial_problem(value: float) -> str | None:
    """Why `runner.gpus_per_trial` is not 1/k (k = 2, 3, ...) or a whole number, or None when it is."""
    if not math.isfinite(value) or value <= 0:
        return f"must be > 0 (1/k such as 0.5 or 0.25, or a whole number), not {value:g}"
    if value >= 1:
        if value != int(value):
            return f"a number of GPUs above 1 must be whole, not {value:g}"
        return None
    k = round(1 / value)
    if k >= 2 and abs(value * k - 1) <= _FRACTION_TOLERANCE:
        return None
    lower, upper = math.floor(1 / value), math.ceil(1 / value)
    near = ", ".join(f"1/{n} = {1 / n:.4g}" for n in sorted({lower, upper}) if n >= 2)
    return f"a fraction of a GPU must be 1/k so that k trials share one GPU, not {value:g} (nearest: {near})"
