"""The experiment config: pydantic models, YAML loading, dotted overrides, every problem at once."""

from __future__ import annotations

import contextlib
import json
import math
import re
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    Tag,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from hyperflow.components.architecture import DEFAULT_HIDDEN_LAYERS, hidden_layer_sizes
from hyperflow.components.config_checks import (
    BUILTIN_METRICS,
    BUILTIN_TASKS,
    TRIAL_METRICS,
    coerce_to_fields,
    effective_value,
    gpus_per_trial_problem,
    parse_gpus_per_trial,
    semantic_problems,
)
from hyperflow.components.names import WEIGHT_SUMMARY_EVERY, Mode
from hyperflow.components.stopping import DEFAULT_REDUCTION_FACTOR, HALVING_KINDS, default_first_rung
from hyperflow.components.yamlload import YamlProblem, load_yaml

__all__ = [
    "BUILTIN_METRICS",
    "BUILTIN_TASKS",
    "ChoiceSpec",
    "ConfigError",
    "DataConfig",
    "DimensionSpec",
    "EarlyStoppingConfig",
    "ExperimentConfig",
    "ModelConfig",
    "ObjectiveSpec",
    "RangeSpec",
    "RunnerConfig",
    "SearchConfig",
    "TrackingConfig",
    "apply_overrides",
    "load_config",
    "metric_mode",
    "parse_value",
    "plain_value",
    "validate_config",
]

_MINIMISED = re.compile(r"(loss|rmse|mse|mae|error|perplexity)$")


def metric_mode(metric: str) -> Mode:
    """The natural direction of a metric, from its name: losses and errors fall, the rest rise."""
    return "min" if _MINIMISED.search(metric) else "max"


class ConfigError(ValueError):
    """A config that cannot run; `problems` holds (dotted path, message) pairs, all of them."""

    def __init__(self, problems: list[tuple[str, str]], source: str | None = None) -> None:
        if not problems:  # never an error that names nothing
            problems = [("", "the config was refused, but no problem was named (a bug in hyperflow)")]
        self.problems = problems
        self.source = source
        head = f"invalid config {source}" if source else "invalid config"
        lines = [f"  {path}: {msg}" if path else f"  {msg}" for path, msg in problems]
        super().__init__(
            head + f" ({len(problems)} problem{'s' * (len(problems) != 1)}):\n" + "\n".join(lines)
        )


_CROSS_CHECK = "cross-field problems:\n"


class _CrossFieldProblems(ValueError):
    """`semantic_problems` of a config whose fields all validated, carried through pydantic."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__(_CROSS_CHECK + "\n".join(f"{p}: {m}" for p, m in problems))
        self.problems = problems


class _Strict(BaseModel):
    # strict: `true` is no integer and `"3"` no number (every int, bool and float field);
    # allow_inf_nan=False: every float field refuses .inf and .nan by its dotted path.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True, allow_inf_nan=False)


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
    categorical: Literal["auto"] | list[str] = Field(
        "auto", description="one-hot encoded columns: auto (string, boolean, category) or their names"
    )
    missing: Literal["impute", "drop", "error"] = Field(
        "impute",
        description="gaps in the features: train-split median / most frequent, drop the rows, or refuse",
    )


class ModelConfig(_Strict):
    """Fixed model and training values; any of them may also be searched."""

    module: str | None = Field(
        None, description="import path 'package.module:ClassName' of a LightningModule"
    )
    args: dict[str, Any] = Field(
        default_factory=dict, description="further fixed keyword arguments of model.module"
    )
    hidden_layers: list[Annotated[int, Field(gt=0)]] | None = Field(
        None, description="widths of the hidden layers; null: from depth / width / width_decay"
    )
    depth: int | None = Field(None, ge=0, description="hidden layers (null: 2, unless hidden_layers is set)")
    width: int | None = Field(None, gt=0, description="units of the first hidden layer (null: 128)")
    width_decay: float | None = Field(
        None, gt=0, description="hidden layer i has round(width * width_decay**i) units (null: 0.5)"
    )
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
    lr_schedule: Literal["none", "step", "exponential", "cosine", "one_cycle"] = "none"
    lr_decay: float = Field(
        0.9, gt=0, le=1, description="step: x lr_decay every lr_step_epochs; exponential: every epoch"
    )
    lr_step_epochs: int = Field(10, ge=1)
    momentum_schedule: Literal["constant", "linear_decay", "cosine"] = "constant"
    momentum_final: float = Field(0.5, ge=0, lt=1)
    l2_schedule: Literal["constant", "linear_decay", "cosine"] = "constant"
    l2_final: float = Field(0.0, ge=0)

    def fixed_values(self) -> dict[str, Any]:
        """The values every trial starts from (its sampled ones override them).

        Unset architecture keys (None) are left out, so that a searched `depth` or `width` composes
        with the defaults of the others; a user's module still gets the default `hidden_layers`.
        """
        fixed = self.model_dump(exclude={"module", "args"}, exclude_none=True)
        if self.module and "hidden_layers" not in fixed:
            fixed["hidden_layers"] = list(DEFAULT_HIDDEN_LAYERS)
        return fixed

    def point_defaults(self) -> dict[str, Any]:
        """What a partial initial point is completed with: every value as a trial would train it."""
        values = self.model_dump()
        return {key: effective_value(ModelConfig.model_fields, values, key) for key in values}

    @property
    def layer_sizes(self) -> list[int]:
        """The hidden layers the built-in MLP gets from these values."""
        return hidden_layer_sizes(self.hidden_layers, self.depth, self.width, self.width_decay)


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


# One entry of `search.space` as written in the config (the search's own is `search.Dimension`).
DimensionSpec = Annotated[
    Annotated[RangeSpec, Tag("range")] | Annotated[ChoiceSpec, Tag("choices")],
    Discriminator(_dimension_kind),
]


class BayesConfig(_Strict):
    surrogate: Literal["GP", "RF", "ET", "GBRT"] = "GP"
    acquisition: Literal["logEI", "gp_hedge", "EI", "PI", "LCB"] = Field(
        "logEI", description="logEI: ours on skopt's GP (RF/ET take gp_hedge); the rest: skopt's"
    )
    n_initial_points: int = Field(8, ge=1)
    acq_optimizer: Literal["auto", "sampling", "lbfgs"] = Field(
        "auto", description="skopt's acquisitions: lbfgs for GP while the history is short, sampling after"
    )
    pruned: Literal["last", "worst", "omit", "predicted", "discounted"] = Field(
        "predicted",
        description="what the GP is told for a pruned trial (logEI): its last value, the worst, nothing, "
        "the stop rule's predicted final value, or its last value discounted by the epochs it did not train",
    )
    multi_objective: Literal["auto", "ehvi", "parego"] = Field(
        "auto",
        description="with search.objectives: ehvi (two objectives, the second param_count, built-in model: "
        "expected hypervolume improvement with the count known), parego (any objectives), auto: ehvi where it applies",
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


class ObjectiveSpec(_Strict):
    """One objective of a multi-objective search: a logged metric and its direction."""

    metric: str = Field(min_length=1, description="any metric a trial logs, or param_count")
    mode: Mode | None = Field(
        None,
        description="null: min for the costs param_count, train_seconds and epochs_trained, and for "
        "losses and errors; else max",
    )

    @model_validator(mode="after")
    def _resolve(self) -> ObjectiveSpec:
        if self.mode is None:
            # What a trial records once is a cost (TRIAL_METRICS): fewer parameters, seconds, epochs.
            self.__dict__["mode"] = "min" if self.metric in TRIAL_METRICS else metric_mode(self.metric)
        return self


class SearchConfig(_Strict):
    strategy: Literal["grid", "random", "bayes", "genetic"] = "bayes"
    metric: str = "val_accuracy"
    # null (or left out): min for losses and errors, by the metric's name, max otherwise. Validation
    # resolves it (`_resolve_mode`): a validated config's `mode` is never None, as typed for mypy.
    if TYPE_CHECKING:
        mode: Mode = "max"
    else:
        mode: Mode | None = Field(
            None, description="null: min for losses and errors (by the metric's name), max otherwise"
        )
    n_trials: int = Field(30, ge=1)
    n_parallel: int = Field(1, ge=1)
    lookahead: bool = Field(
        True,
        description="prepare the next suggestions while trials train (suggestion k from the trials "
        "before k - n_parallel); false: ask after each result",
    )
    max_failures: int | None = Field(None, ge=0)
    timeout_minutes: float | None = Field(None, gt=0)
    trial_timeout_minutes: float | None = Field(None, gt=0)
    initial_points: list[dict[str, Any]] = Field(default_factory=list)
    space: dict[str, DimensionSpec] = Field(default_factory=dict)
    heuristic_start: Literal["none", "lr_range_test"] = Field(
        "none",
        description="lr_range_test: run the LR range test once, narrow search.space.learning_rate, "
        "evaluate its suggestion first",
    )
    objectives: list[ObjectiveSpec] = Field(
        default_factory=list,
        description="two or more {metric, mode}; the first is the primary (search.metric), the study keeps "
        "the Pareto front",
    )
    select: Literal["primary", "knee"] = Field(
        "primary", description="the front member registered as champion: the best primary, or the knee"
    )
    max_param_count: int | None = Field(
        None, ge=1, description="architectures with more parameters are never trained"
    )
    bayes: BayesConfig = Field(default_factory=BayesConfig)
    grid: GridConfig = Field(default_factory=GridConfig)
    genetic: GeneticConfig = Field(default_factory=GeneticConfig)

    # The mode inferred from the metric while `mode` is left out (None: `mode` was given).
    _inferred_mode: Mode | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _resolve_objectives(self) -> SearchConfig:
        # Runs before _resolve_mode: the first objective is the primary, so it sets metric and mode.
        if not self.objectives:
            if self.select != "primary":
                raise ValueError(f"at select: {self.select!r} needs search.objectives (two or more)")
            return self
        if len(self.objectives) < 2:
            raise ValueError("at objectives: give two or more objectives (one is search.metric)")
        names = [o.metric for o in self.objectives]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ValueError(
                    f"at objectives.{i}.metric: {name!r} is already objective {names.index(name)}"
                )
        primary = self.objectives[0]
        if "metric" in self.model_fields_set and self.metric != primary.metric:
            raise ValueError(
                f"at objectives.0.metric: the first objective is the primary, so it must be search.metric "
                f"({self.metric!r}), not {primary.metric!r}; or leave search.metric out"
            )
        if self.mode is not None and self._inferred_mode is None and self.mode != primary.mode:
            if "mode" in primary.model_fields_set:
                raise ValueError(
                    f"at objectives.0.mode: {primary.mode!r} contradicts search.mode ({self.mode!r})"
                )
            primary.__dict__["mode"] = self.mode
        self.__dict__["metric"] = primary.metric
        self.__dict__["mode"] = primary.mode
        return self

    @model_validator(mode="after")
    def _resolve_mode(self) -> SearchConfig:
        # After validation `mode` is always the direction: the metric's natural one when left out.
        if self.mode is None or self.mode == self._inferred_mode:
            inferred = metric_mode(self.metric)
            self.__dict__["mode"] = inferred  # no validate_assignment: this validator would run again
            self._inferred_mode = inferred
        else:
            self._inferred_mode = None
        return self

    @model_serializer(mode="wrap")
    def _as_given(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> Any:
        # An inferred mode is written as it was given, null (or left out): config.yaml, the study's
        # params and the config hash stay what they were before the mode was resolved here.
        data = handler(self)
        if self._inferred_mode is not None and isinstance(data, dict) and "mode" in data:
            if info.exclude_defaults:
                del data["mode"]
            else:
                data["mode"] = None
        return data


class EarlyStoppingConfig(_Strict):
    kind: Literal["none", "median", "curve_fit", "asha", "hyperband"] = "curve_fit"
    min_epochs: int = Field(
        5,
        ge=1,
        description="epochs before a trial may be stopped; asha, hyperband: the first rung "
        "(left out: max(1, epochs // 100))",
    )
    threshold: float = Field(0.05, gt=0, lt=1)
    every: int = Field(1, ge=1, description="ask the rule every k epochs")
    # 3 is the field's default (what a recorded study's hash leaves out); asha left without one
    # takes 4, see ExperimentConfig._halving_defaults.
    reduction_factor: int = Field(
        3,
        ge=2,
        description="asha, hyperband: rungs at min_epochs * reduction_factor^i; the best "
        "1/reduction_factor go on (left out: 4 for asha, 3 for hyperband)",
    )


class TrackingConfig(_Strict):
    uri: str | None = None
    register_model: bool = True
    promote: Literal["if_better", "always"] = "if_better"
    weight_summary_every: int = Field(
        WEIGHT_SUMMARY_EVERY,
        ge=0,
        description="a trial logs its layers' weight summaries every N epochs (from epoch 0) and at its last; 0: at its last only",
    )


class RunnerConfig(_Strict):
    kind: Literal["local", "dask"] = "local"
    address: str | None = None
    threads_per_trial: int | None = Field(
        None, ge=1, description="torch threads of each trial; null: 1 (small models train fastest on one)"
    )
    accelerator: Literal["auto", "cpu", "gpu"] = Field(
        "auto", description="where trials and the best model's test train: auto is a GPU when torch sees one"
    )
    gpus_per_trial: float = Field(
        1.0, description="GPUs each trial holds: 1/k (0.5, 0.25, '1/3') lets k trials share one GPU"
    )
    precision: Literal["32", "16-mixed", "bf16-mixed"] = Field(
        "32", description="Lightning's precision; 16-mixed needs a GPU"
    )

    @field_validator("gpus_per_trial", mode="before")
    @classmethod
    def _fraction(cls, value: Any) -> Any:
        return parse_gpus_per_trial(value)

    @field_validator("gpus_per_trial")
    @classmethod
    def _one_over_k(cls, value: float) -> float:
        problem = gpus_per_trial_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_text(cls, value: Any) -> Any:
        # YAML reads `precision: 32` as a number.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


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
            return coerce_to_fields(raw, ModelConfig.model_fields)
        return raw

    def epoch_budget(self) -> int:
        """The most epochs a trial trains: the space's upper bound of a searched ``max_epochs``,
        else ``model.max_epochs``."""
        spec = self.search.space.get("max_epochs")
        if spec is None:
            return int(self.model.max_epochs)
        if isinstance(spec, ChoiceSpec):
            return int(max(spec.choices))
        return int(spec.high)

    @model_validator(mode="after")
    def _halving_defaults(self) -> ExperimentConfig:
        # asha and hyperband left without min_epochs or reduction_factor take their own defaults
        # (stopping.default_first_rung, stopping.DEFAULT_REDUCTION_FACTOR), not curve_fit's 5 and
        # the field's 3. Written into the config, so config.yaml, the study's params and the hash
        # carry them; the fields' defaults stay what recorded studies were hashed against (a study
        # recorded with asha's 5 and 3 keeps its hash, and one with the new defaults gets its own).
        es = self.early_stopping
        if es.kind not in HALVING_KINDS:
            return self
        unset: dict[str, int] = {}
        if "reduction_factor" not in es.model_fields_set:
            unset["reduction_factor"] = DEFAULT_REDUCTION_FACTOR[es.kind]
        if "min_epochs" not in es.model_fields_set:
            # A malformed max_epochs choice is left for the cross-checks to name.
            with contextlib.suppress(TypeError, ValueError):
                unset["min_epochs"] = default_first_rung(self.epoch_budget())
        if unset:
            # A copy, so that an EarlyStoppingConfig shared by several configs is not changed;
            # no validate_assignment: this validator would run again.
            self.__dict__["early_stopping"] = es.model_copy(update=unset)
        return self

    @model_validator(mode="after")
    def _cross_checks(self) -> ExperimentConfig:
        problems = semantic_problems(self.model_dump(mode="python"), ModelConfig.model_fields)
        if problems:
            raise _CrossFieldProblems(problems)
        return self


# --------------------------------------------------------------------------------------------
# Loading


def parse_value(text: str) -> Any:
    """Parse an override value as a YAML scalar or list (`[64,32]`, `1e-3`, `true`, `null`)."""
    return load_yaml(text)


def plain_value(value: Any) -> Any:
    """`json.dumps`' `default`: a numpy scalar or array as the Python value it holds, a path as text.

    Raises:
        TypeError: naming the type of anything else, which cannot be a config value.
    """
    if type(value).__module__ == "numpy":
        ndim: Any = getattr(value, "ndim", 0)
        if ndim:
            return value.tolist()  # an array: a list of plain values
        return value.item()  # a scalar: np.int64(2) -> 2, np.float32, np.bool_, np.str_
    if isinstance(value, PurePath):
        return str(value)
    kind = type(value).__qualname__
    if type(value).__module__ != "builtins":
        kind = f"{type(value).__module__}.{kind}"
    raise TypeError(
        f"a value of type {kind} cannot be a config value "
        "(give text, a number, a bool, None, or a list or mapping of them)"
    )


def _plain_or_text(value: Any) -> Any:
    try:
        return plain_value(value)
    except TypeError:
        return str(value)


def apply_overrides(raw: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Return a copy of `raw` with dotted `KEY=VALUE` overrides applied."""
    out = json.loads(json.dumps(raw, default=_plain_or_text)) if raw else {}
    problems: list[tuple[str, str]] = []
    for item in overrides or []:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(("--set", f"{item!r} is not KEY=VALUE (e.g. search.n_trials=20)"))
            continue
        if any(not part.strip() for part in key.split(".")):
            problems.append(("--set", f"{key!r}: a dotted key has an empty part (e.g. search.n_trials)"))
            continue
        try:
            value = parse_value(text)
        except YamlProblem as exc:
            problems.append((".".join(filter(None, [key, exc.path])), exc.message))
            continue
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


def _problems_from_validation(exc: ValidationError) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The field problems by dotted path, and the cross-field ones found on the validated config
    (`validate_config` checks the raw dict for those again, also when fields fail)."""
    problems: list[tuple[str, str]] = []
    cross: list[tuple[str, str]] = []
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
        elif err["type"].endswith("_type") or err["type"] == "finite_number":
            msg += f", not {json.dumps(err['input'], default=repr)}"  # `true`, `"3"`, `Infinity`
        error = (err.get("ctx") or {}).get("error")
        if isinstance(error, _CrossFieldProblems):
            cross.extend(error.problems)
            continue
        if (at := re.match(r"at ([\w.]+): ", msg)) is not None:  # a section's check naming its key
            loc, msg = (
                [*loc, *at.group(1).split(".")],
                msg[at.end() :],
            )
        problems.append((".".join(loc), msg))
    return problems, cross


def validate_config(raw: Any, source: str | None = None) -> ExperimentConfig:
    """Validate a plain dict; raise ConfigError listing every problem by dotted path."""
    if not isinstance(raw, dict):
        raise ConfigError([("", "the config must be a YAML mapping")], source)
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        problems, cross = _problems_from_validation(exc)
        fields = ModelConfig.model_fields
        for extra in semantic_problems(coerce_to_fields(raw, fields), fields):
            if extra not in problems:
                problems.append(extra)
        # What the validated config showed beyond the raw dict (values that validation resolved).
        problems.extend(p for p in cross if p not in problems)
        if not problems:
            problems = [("", str(exc))]
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
    if path.is_dir():
        raise ConfigError([("", f"{path}: is a folder, not a config file")], str(path))
    if not path.is_file():
        raise ConfigError([("", f"{path}: no such config file")], str(path))
    try:
        raw = load_yaml(path.read_text())
    except YamlProblem as exc:
        raise ConfigError([(exc.path, exc.message)], str(path)) from None
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
