"""Bring your own model: a user's LightningModule, LightningDataModule or training function by import path."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import inspect
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch

from hyperflow.components.config import ConfigError, ModelConfig
from hyperflow.components.training import TrialFailed, TrialInterrupted, TrialResult

if TYPE_CHECKING:
    import lightning.pytorch as pl
    from mlflow.tracking import MlflowClient

    from hyperflow.components.config import ExperimentConfig
    from hyperflow.components.curves import StopPolicy
    from hyperflow.components.data import Dataset
    from hyperflow.components.training import EpochCallback, TrialSpec

__all__ = [
    "Reporter",
    "TrialPruned",
    "UserCodeError",
    "UserSpec",
    "build_datamodule",
    "build_user_module",
    "check_user_code",
    "describe_user_code",
    "evaluate_user_module",
    "export_user_module",
    "exports_model",
    "fit_user_module",
    "import_object",
    "registered",
    "run_objective",
    "user_spec",
    "uses_builtin_data",
]

Kind = Literal["module", "datamodule", "function"]
_NAMESPACES = ("lightning.pytorch", "pytorch_lightning")

# Objects the Python API passes in directly (a function defined in a notebook, a closure), found
# by the import path it writes into the config. Only the search loop's process looks here: the
# trial's spec carries such a function to worker processes by value (cloudpickle).
_REGISTERED: dict[str, Any] = {}


class UserCodeError(ConfigError):
    """The config names user code that cannot be imported or would not accept its arguments."""


class TrialPruned(Exception):
    """Raised by `report` when the early-stopping rule stops the trial; let it propagate."""


# --------------------------------------------------------------------------------------------
# Importing and inspecting


def import_object(path: str, *, key: str = "model.module") -> Any:
    """The object an import path `package.module:Name` (or `package.module.Name`) names.

    The working directory is importable, as with `python -m`: a user's package next to the
    config is found without installing it.

    Raises:
        UserCodeError: naming the config key, the path and why it failed.
    """
    if path in _REGISTERED:
        return _REGISTERED[path]
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise UserCodeError([(key, f"{path!r} is not an import path 'package.module:Name'")])
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        if module_name == missing or module_name.startswith(missing + "."):
            raise UserCodeError(
                [
                    (
                        key,
                        f"cannot import {path!r}: no module named {missing!r} (run hyperflow from the folder "
                        f"that holds the package, {cwd} now, or install the package)",
                    )
                ]
            ) from None
        raise UserCodeError(
            [(key, f"importing {module_name!r} failed: ModuleNotFoundError: {exc}")]
        ) from None
    except Exception as exc:  # the user's module raised while importing
        raise UserCodeError(
            [(key, f"importing {module_name!r} failed: {type(exc).__name__}: {exc}")]
        ) from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UserCodeError([(key, f"module {module_name!r} has no attribute {attr!r}")]) from None
    return obj


@contextlib.contextmanager
def registered(path: str, obj: Any) -> Iterator[None]:
    """Make `import_object(path)` return `obj` in this process while the block runs."""
    previous = _REGISTERED.get(path)
    _REGISTERED[path] = obj
    try:
        yield
    finally:
        if previous is None:
            _REGISTERED.pop(path, None)
        else:
            _REGISTERED[path] = previous


def lightning_namespace(cls: type, base: str = "LightningModule") -> str | None:
    """`lightning.pytorch` or `pytorch_lightning`: which package's `base` class `cls` derives from."""
    for klass in cls.__mro__:
        if klass.__name__ == base:
            for ns in _NAMESPACES:
                if klass.__module__ == ns or klass.__module__.startswith(ns + "."):
                    return ns
    return None


def kind_of(obj: Any) -> Kind | None:
    """What a user object is: a LightningModule or LightningDataModule class, or a function."""
    if inspect.isclass(obj):
        if lightning_namespace(obj, "LightningModule"):
            return "module"
        if lightning_namespace(obj, "LightningDataModule"):
            return "datamodule"
        return None
    return "function" if callable(obj) else None


@dataclass(frozen=True)
class _Signature:
    """The keyword arguments a constructor takes."""

    owner: str
    names: tuple[str, ...]
    required: tuple[str, ...]
    var_keyword: bool

    def accepts(self, name: str) -> bool:
        return name in self.names or self.var_keyword

    def text(self) -> str:
        args = [*self.names, *(["**kwargs"] if self.var_keyword else [])]
        return f"{self.owner}({', '.join(args)})"


@functools.cache
def _signature(cls: type) -> _Signature:
    try:
        sig = inspect.signature(cls)
    except (TypeError, ValueError):
        return _Signature(cls.__name__, (), (), True)
    names, required, var_kw = [], [], False
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
        elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            names.append(p.name)
            if p.default is p.empty:
                required.append(p.name)
    return _Signature(cls.__name__, tuple(names), tuple(required), var_kw)


# --------------------------------------------------------------------------------------------
# What the trials need to know, and which value goes where


@dataclass(frozen=True)
class UserSpec:
    """The user code of a study, sent with every trial (it pickles).

    Attributes:
        module: import path of the LightningModule (None for a training function).
        data_module: import path of the LightningDataModule (None: the built-in data set).
        data_args: `data.args`, keyword arguments of the DataModule.
        model_args: the keys of `model.args` (they go to the module even through `**kwargs`).
        seed: the study seed, given to a DataModule that takes `seed` (the same split for all trials).
        objective: a training function `fn(params, report) -> value`, carried as an object so that
            one defined in a notebook or a script reaches worker processes.
        objective_path: where the function came from, for messages.
    """

    module: str | None = None
    data_module: str | None = None
    data_args: dict[str, Any] = field(default_factory=dict)
    model_args: tuple[str, ...] = ()
    seed: int = 0
    objective: Callable[..., Any] | None = None
    objective_path: str | None = None


def user_spec(cfg: ExperimentConfig) -> UserSpec | None:
    """The UserSpec of a config, None when it uses the built-in model and data."""
    if not cfg.model.module and not cfg.data.module:
        return None
    spec = UserSpec(
        module=cfg.model.module,
        data_module=cfg.data.module,
        data_args=dict(cfg.data.args),
        model_args=tuple(cfg.model.args),
        seed=cfg.seed,
    )
    if cfg.model.module and kind_of(import_object(cfg.model.module)) == "function":
        spec = dataclasses.replace(
            spec, module=None, objective=import_object(cfg.model.module), objective_path=cfg.model.module
        )
    return spec


def uses_builtin_data(cfg: ExperimentConfig) -> bool:
    """Whether the study trains on a built-in data set (no DataModule, no training function)."""
    if cfg.data.module:
        return False
    return not (cfg.model.module and kind_of(import_object(cfg.model.module)) == "function")


def exports_model(spec: TrialSpec) -> bool:
    """Whether the study's best trial becomes `best_model` (not for a training function)."""
    return spec.user is None or spec.user.objective is None


def _module_kwargs(
    cls: type, params: Mapping[str, Any], spec: TrialSpec, data: Dataset | None
) -> dict[str, Any]:
    """The module's constructor arguments: the fixed model values it names, model.args, the sampled values."""
    sig = _signature(cls)
    user = spec.user
    args = set(user.model_args) if user else set()
    values = spec.resolve(params)
    kwargs = {
        k: v for k, v in values.items() if k in sig.names or (sig.var_keyword and (k in args or k in params))
    }
    if data is not None:
        derived = {"in_features": data.n_features, "out_features": data.n_outputs, "task": data.task}
        kwargs.update({k: v for k, v in derived.items() if k in sig.names and k not in kwargs})
    return kwargs


def _datamodule_kwargs(cls: type, params: Mapping[str, Any], spec: TrialSpec) -> dict[str, Any]:
    """The DataModule's constructor arguments: fixed model values it names < data.args < sampled values."""
    sig = _signature(cls)
    assert spec.user is not None
    kwargs = {k: v for k, v in spec.fixed.items() if k in sig.names}
    if "seed" in sig.names:
        kwargs["seed"] = spec.user.seed
    kwargs.update(spec.user.data_args)
    kwargs.update({k: v for k, v in params.items() if k in sig.names})
    return kwargs


def build_user_module(data: Dataset | None, params: Mapping[str, Any], spec: TrialSpec) -> pl.LightningModule:
    """The user's LightningModule for a parameter set, before training (data None: a DataModule's study)."""
    assert spec.user is not None and spec.user.module is not None
    cls = import_object(spec.user.module)
    module: pl.LightningModule = cls(**_module_kwargs(cls, params, spec, data))
    return module


def build_datamodule(params: Mapping[str, Any], spec: TrialSpec) -> Any:
    """The user's LightningDataModule for a trial (its batch size or other data values may be searched)."""
    assert spec.user is not None and spec.user.data_module is not None
    cls = import_object(spec.user.data_module, key="data.module")
    return cls(**_datamodule_kwargs(cls, params, spec))


# --------------------------------------------------------------------------------------------
# Checks before anything runs (hyperflow validate, hyperflow run, the Python API)


def check_user_code(cfg: ExperimentConfig) -> None:
    """Import the user's module, DataModule or function and check the config against their signatures.

    Every searched hyperparameter must be an argument of the module's (or the DataModule's)
    constructor, `model.args` must be arguments of the module, `data.args` of the DataModule,
    and every required constructor argument must get a value.

    Raises:
        UserCodeError: listing every problem by its config key.
    """
    problems: list[tuple[str, str]] = []
    model_obj = import_object(cfg.model.module, key="model.module") if cfg.model.module else None
    data_obj = import_object(cfg.data.module, key="data.module") if cfg.data.module else None
    model_kind = kind_of(model_obj) if model_obj is not None else None
    if model_obj is not None and model_kind not in ("module", "function"):
        problems.append(
            (
                "model.module",
                f"{cfg.model.module!r} is {_what(model_obj)}, not a LightningModule subclass "
                "or a training function fn(params, report)",
            )
        )
    if data_obj is not None and kind_of(data_obj) != "datamodule":
        problems.append(
            ("data.module", f"{cfg.data.module!r} is {_what(data_obj)}, not a LightningDataModule subclass")
        )
    if problems:
        raise UserCodeError(problems)
    if model_kind == "function":
        problems.extend(_function_problems(cfg, model_obj))
    elif model_kind == "module":
        assert model_obj is not None
        problems.extend(_module_problems(cfg, model_obj, data_obj))
    if problems:
        raise UserCodeError(problems)


def _what(obj: Any) -> str:
    return f"the class {obj.__name__}" if inspect.isclass(obj) else f"a {type(obj).__name__}"


def _function_problems(cfg: ExperimentConfig, fn: Any) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    try:
        inspect.signature(fn).bind({}, None)
    except TypeError:
        problems.append(("model.module", f"{cfg.model.module!r} must take two arguments: fn(params, report)"))
    except ValueError:
        pass  # a builtin without a signature: trust it
    if cfg.data.module:
        problems.append(
            ("data.module", "a training function brings its own data; data.module is for a LightningModule")
        )
    return problems


def _module_problems(cfg: ExperimentConfig, cls: type, data_cls: type | None) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    sig = _signature(cls)
    dsig = _signature(data_cls) if data_cls is not None else None
    for key in cfg.search.space:
        if sig.accepts(key) or (dsig is not None and key in dsig.names):
            continue
        if key == "max_epochs" or (key == "batch_size" and dsig is None):
            continue  # hyperflow's own: the Trainer's epochs, the built-in data's batches
        where = sig.text() + (f" nor {dsig.text()}" if dsig is not None else "")
        problems.append(
            (
                f"search.space.{key}",
                f"{key!r} is not an argument of {where}; add it to the constructor or remove it from search.space",
            )
        )
    for key in cfg.model.args:
        if not sig.accepts(key):
            problems.append((f"model.args.{key}", f"{key!r} is not an argument of {sig.text()}"))
    if dsig is not None:
        for key in cfg.data.args:
            if not dsig.accepts(key):
                problems.append((f"data.args.{key}", f"{key!r} is not an argument of {dsig.text()}"))
    given = set(ModelConfig.model_fields) | set(cfg.model.args) | set(cfg.search.space)
    if data_cls is None:
        given |= {"in_features", "out_features", "task"}
    for name in sig.required:
        if name not in given:
            problems.append(
                ("model.args", f"{sig.text()} requires {name!r}: give it in model.args or search it")
            )
    if dsig is not None:
        data_given = set(ModelConfig.model_fields) | set(cfg.data.args) | set(cfg.search.space) | {"seed"}
        for name in dsig.required:
            if name not in data_given:
                problems.append(("data.args", f"{dsig.text()} requires {name!r}: give it in data.args"))
    return problems


def describe_user_code(cfg: ExperimentConfig) -> list[str]:
    """Lines for `hyperflow validate`: the user code and which values each constructor receives."""
    lines: list[str] = []
    if cfg.model.module:
        obj = import_object(cfg.model.module)
        if kind_of(obj) == "function":
            lines.append(f"objective: {cfg.model.module} (a training function fn(params, report))")
            lines.append(f"  params: {', '.join([*cfg.search.space, *cfg.model.args, 'max_epochs'])}")
        else:
            sig = _signature(obj)
            lines.append(f"model: {cfg.model.module} (a {lightning_namespace(obj)} LightningModule)")
            fixed = [k for k in ModelConfig.model_fields if k in sig.names and k not in cfg.search.space]
            lines.append(f"  {sig.text()}")
            searched = [k for k in cfg.search.space if sig.accepts(k)]
            lines.append(f"  searched: {', '.join(searched) or '-'}")
            lines.append(f"  fixed: {', '.join([*fixed, *cfg.model.args]) or '-'}")
    if cfg.data.module:
        dsig = _signature(import_object(cfg.data.module, key="data.module"))
        lines.append(f"data: {cfg.data.module} (a LightningDataModule)")
        lines.append(f"  {dsig.text()}")
        searched = [k for k in cfg.search.space if k in dsig.names]
        fixed = [k for k in ModelConfig.model_fields if k in dsig.names and k not in cfg.search.space]
        lines.append(f"  searched: {', '.join(searched) or '-'}")
        lines.append(
            f"  fixed: {', '.join([*fixed, *cfg.data.args, *(['seed'] if 'seed' in dsig.names else [])]) or '-'}"
        )
    return lines


# --------------------------------------------------------------------------------------------
# Training a user's LightningModule


@functools.cache
def _control_class(base: Any, namespace: str) -> type:
    """The trial's control callback as a `namespace` EarlyStopping, so that its Trainer orders it last."""
    callbacks = importlib.import_module(namespace + ".callbacks")
    return type(base.__name__, (base, callbacks.EarlyStopping), {})


def _overrides(obj: Any, namespace: str, base: str, method: str) -> bool:
    base_cls = getattr(importlib.import_module(namespace), base)
    return getattr(type(obj), method, None) is not getattr(base_cls, method, None)


def _trainer(namespace: str, **kwargs: Any) -> Any:
    trainer_cls = importlib.import_module(namespace).Trainer
    return trainer_cls(
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def fit_user_module(
    module: pl.LightningModule,
    data: Dataset | None,
    params: Mapping[str, Any],
    spec: TrialSpec,
    *,
    seed: int,
    max_epochs: int,
    control: Any,
    callbacks: list[Any],
) -> None:
    """Train a user's module with the Trainer of its own Lightning package; the module ends on the CPU.

    Its data comes from the user's DataModule, else from the built-in data set as (x, y) batches
    of `batch_size` (train shuffled by the trial's seed, val in order).
    """
    from hyperflow.components.training import TensorBatches, _tensors

    namespace = lightning_namespace(type(module)) or "lightning.pytorch"
    if namespace != "lightning.pytorch":
        # Lightning calls "monitoring" callbacks after the module's epoch-end hook only when they
        # are EarlyStopping instances of the Trainer's own package.
        base: Any = type(control)
        control.__class__ = _control_class(base, namespace)
    trainer = _trainer(
        namespace,
        max_epochs=max_epochs,
        accelerator="auto",
        num_sanity_val_steps=0,
        callbacks=[control, *callbacks],
    )
    if spec.user is not None and spec.user.data_module:
        trainer.fit(module, datamodule=build_datamodule(params, spec))
    else:
        if data is None:
            raise ValueError("a LightningModule without data.module needs the built-in data set")
        x_tr, y_tr, x_va, y_va = _tensors(data)
        batch_size = int(spec.resolve(params).get("batch_size", 64))
        train = TensorBatches(x_tr, y_tr, batch_size, shuffle=True, seed=seed)
        val = TensorBatches(x_va, y_va, max(batch_size, 512), shuffle=False)
        has_validation = _overrides(module, namespace, "LightningModule", "validation_step")
        trainer.fit(module, train_dataloaders=train, val_dataloaders=val if has_validation else None)
    module.cpu()


def evaluate_user_module(
    module: pl.LightningModule, data: Dataset | None, spec: TrialSpec, params: Mapping[str, Any]
) -> dict[str, float]:
    """The module's metrics on the test split: `trainer.test` when it has a `test_step`.

    Without a `test_step` (or when that logs no `test_<metric>`), its `validation_step` runs on
    the test split and its `val_*` metrics are renamed `test_*`; a DataModule without a
    `test_dataloader` is scored on its validation split.
    """
    from hyperflow.components.registry import test_metric_name
    from hyperflow.components.training import TensorBatches, _quiet_lightning

    _quiet_lightning()
    namespace = lightning_namespace(type(module)) or "lightning.pytorch"
    trainer = _trainer(namespace, accelerator="cpu")
    wanted = test_metric_name(spec.metric)
    datamodule = build_datamodule(params, spec) if spec.user and spec.user.data_module else None
    has_test_loader = datamodule is None or _overrides(
        datamodule, namespace, "LightningDataModule", "test_dataloader"
    )
    if datamodule is None:
        assert data is not None
        x = torch.as_tensor(data.X_test, dtype=torch.float32)
        y_test = torch.as_tensor(data.y_test)
        y = y_test.long() if data.task == "classification" else y_test.float()
        loader: Any = TensorBatches(x, y, 512, shuffle=False)
    metrics: dict[str, float] = {}
    if has_test_loader and _overrides(module, namespace, "LightningModule", "test_step"):
        if datamodule is not None:
            (out,) = trainer.test(module, datamodule=datamodule, verbose=False)
        else:
            (out,) = trainer.test(module, dataloaders=loader, verbose=False)
        metrics.update({k: float(v) for k, v in out.items()})
    if wanted not in metrics:
        if datamodule is None:
            (out,) = trainer.validate(module, dataloaders=loader, verbose=False)
        elif has_test_loader:
            datamodule.prepare_data()
            datamodule.setup("test")
            (out,) = trainer.validate(module, dataloaders=datamodule.test_dataloader(), verbose=False)
        else:
            (out,) = trainer.validate(module, datamodule=datamodule, verbose=False)
        for key, value in out.items():
            name = "test_" + key.removeprefix("val_") if key.startswith("val_") else key
            metrics.setdefault(name, float(value))
    if wanted not in metrics:
        logged = ", ".join(sorted(metrics)) or "nothing"
        raise ValueError(
            f"{type(module).__name__} logged no {wanted} on the test split (logged: {logged}); "
            f"log {spec.metric} in validation_step, or {wanted} in test_step"
        )
    module.eval()
    return metrics


def _example_input(module: pl.LightningModule, spec: TrialSpec, params: Mapping[str, Any]) -> torch.Tensor:
    """A few input rows from the DataModule's test split (else its validation split)."""
    namespace = lightning_namespace(type(module)) or "lightning.pytorch"
    datamodule = build_datamodule(params, spec)
    datamodule.prepare_data()
    if _overrides(datamodule, namespace, "LightningDataModule", "test_dataloader"):
        datamodule.setup("test")
        loader = datamodule.test_dataloader()
    else:
        datamodule.setup("validate")
        loader = datamodule.val_dataloader()
    batch = next(iter(loader))
    x = batch[0] if isinstance(batch, list | tuple) else batch
    if not isinstance(x, torch.Tensor):
        raise ValueError(
            f"best_model: a batch of {spec.user.data_module if spec.user else 'the DataModule'} must be a "
            f"tensor or start with one (the model's input), not {type(x).__name__}"
        )
    # More than one row, so that the exported graph keeps a dynamic batch dimension.
    return x[:5].detach().cpu()


class _Columns(torch.nn.Module):
    """A regression module's output as one column, what the built-in scoring wrapper expects."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out.reshape(out.shape[0], -1)


def export_user_module(
    module: pl.LightningModule,
    data: Dataset | None,
    client: MlflowClient,
    run_id: str,
    spec: TrialSpec,
    params: Mapping[str, Any],
) -> str:
    """Log a user's trained module as `best_model/` (pt2, eval mode); returns its artifact URI.

    With a DataModule the model takes what the module's `forward` takes (the first element of a
    batch); on a built-in data set it takes raw feature rows, like the built-in model.
    """
    from hyperflow.components.registry import log_scoring_model, raw_example, scoring_model

    module = module.eval()
    if data is not None and not (spec.user and spec.user.data_module):
        net = _Columns(module) if data.task == "regression" else module
        return log_scoring_model(scoring_model(net, data), raw_example(data), client, run_id)
    return log_scoring_model(module, _example_input(module, spec, params).numpy(), client, run_id)


# --------------------------------------------------------------------------------------------
# A plain training function


class Reporter:
    """The `report(epoch, value, **metrics)` a training function receives.

    Each call logs the search metric (and any further metrics) at step = epoch and asks the
    study's early-stopping rule; when the rule stops the trial it raises `TrialPruned`, which the
    function lets propagate (or catches to clean up, then returns). Epochs count from 0.

    Attributes:
        seed: the trial's seed (torch's generator is already seeded with it).
        curve: the values reported so far.
    """

    def __init__(
        self,
        *,
        metric: str,
        final_epoch: int,
        seed: int,
        stop_policy: StopPolicy | None,
        on_epoch: EpochCallback | None,
        stop_event: Any,
        deadline: float | None,
        stop_at: float | None,
    ) -> None:
        self.metric = metric
        self.final_epoch = final_epoch
        self.seed = seed
        self.stop_policy = stop_policy
        self.on_epoch = on_epoch
        self.stop_event = stop_event
        self.deadline = deadline
        self.stop_at = stop_at
        self.curve: list[float] = []
        self.last_epoch: int | None = None
        self.history: dict[str, list[float]] = {}
        self.stopped: BaseException | None = None
        self.decision: Any = None

    def _stop(self, exc: BaseException) -> BaseException:
        self.stopped = exc
        return exc

    def check(self) -> None:
        """Raise when the trial must end now: a stop request, the trial's or the study's time budget."""
        if self.stopped is not None:
            raise self.stopped
        if self.stop_event is not None and self.stop_event.is_set():
            raise self._stop(TrialInterrupted("interrupted"))
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise self._stop(TrialFailed("the trial ran past search.trial_timeout_minutes"))
        if self.stop_at is not None and time.time() > self.stop_at:
            raise self._stop(TrialInterrupted("the study's time budget (search.timeout_minutes) is spent"))

    def __call__(self, epoch: int, value: float, **metrics: float) -> None:
        self.check()
        value = float(value)
        if not math.isfinite(value):
            raise self._stop(TrialFailed(f"{self.metric} became {value} at epoch {epoch}"))
        logged = {self.metric: value, **{k: float(v) for k, v in metrics.items()}}
        for key, v in logged.items():
            self.history.setdefault(key, []).append(v)
        self.curve.append(value)
        self.last_epoch = int(epoch)
        if self.on_epoch is not None:
            self.on_epoch(int(epoch), logged)
        if self.stop_policy is not None and len(self.curve) - 1 < self.final_epoch:
            decision = self.stop_policy.check(self.curve, self.final_epoch)
            if decision is not None:
                self.decision = decision
                raise self._stop(TrialPruned(decision.reason))


def run_objective(
    params: Mapping[str, Any],
    spec: TrialSpec,
    *,
    seed: int,
    stop_policy: StopPolicy | None = None,
    on_epoch: EpochCallback | None = None,
    stop_event: Any = None,
    deadline: float | None = None,
    stop_at: float | None = None,
) -> TrialResult:
    """Run one trial of a training function `fn(params, report) -> value`.

    `params` holds the sampled values, `model.args` and `max_epochs` (the epoch the early-stopping
    rule extrapolates to). The trial's value is what `fn` returns, else the last value reported;
    `fn` may also return `(value, model)` to have the model's weights logged with the trial.
    """
    assert spec.user is not None and spec.user.objective is not None
    values = spec.resolve(params)
    max_epochs = int(values.get("max_epochs", 30))
    given = {**{k: values[k] for k in spec.user.model_args}, "max_epochs": max_epochs, **params}
    result = TrialResult(params=dict(params), seed=seed, state="failed")
    report = Reporter(
        metric=spec.metric,
        final_epoch=max_epochs - 1,
        seed=seed,
        stop_policy=stop_policy,
        on_epoch=on_epoch,
        stop_event=stop_event,
        deadline=deadline,
        stop_at=stop_at,
    )
    if spec.num_threads:
        torch.set_num_threads(spec.num_threads)
    returned: Any = None
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            report.check()
            returned = spec.user.objective(given, report)
        except (KeyboardInterrupt, SystemExit):
            raise
        except (TrialPruned, TrialFailed, TrialInterrupted):
            pass  # recorded in report.stopped
        except Exception as exc:  # the function's own error fails this trial, not the study
            if report.stopped is None:
                result.error = f"{type(exc).__name__}: {exc}"
    result.train_seconds = time.perf_counter() - started
    result.history = report.history
    result.curve = list(report.curve)
    result.epochs_trained = len(report.curve)
    model = None
    if isinstance(returned, tuple) and len(returned) == 2 and isinstance(returned[1], torch.nn.Module):
        returned, model = returned
    stopped = report.stopped
    if isinstance(stopped, TrialPruned):
        result.state, result.value = "pruned", report.curve[-1]
        result.stop_reason = report.decision.reason
        result.predicted_final = report.decision.predicted
    elif isinstance(stopped, TrialInterrupted):
        result.state, result.error = "interrupted", str(stopped)
    elif isinstance(stopped, TrialFailed):
        result.state, result.error = "failed", str(stopped)
    elif result.error is None:
        _take_returned(result, report, returned, on_epoch)
    if model is not None and result.state in ("completed", "pruned"):
        result.state_dict = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        result.param_names = [name for name, _ in model.named_parameters()]
        result.param_count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return result


def _take_returned(
    result: TrialResult, report: Reporter, returned: Any, on_epoch: EpochCallback | None
) -> None:
    """A function that returned normally: its value (or the last reported) completes the trial."""
    if returned is None:
        if not report.curve:
            result.error = "the training function returned nothing and reported nothing"
            return
        value = report.curve[-1]
    else:
        try:
            value = float(returned)
        except (TypeError, ValueError):
            result.error = f"the training function returned {type(returned).__name__}, not a number"
            return
        if not math.isfinite(value):
            result.error = f"the training function returned {value}"
            return
        if not report.curve or value != report.curve[-1]:
            # The returned value is the trial's: log it last (at the last epoch) so MLflow shows it.
            step = report.last_epoch if report.last_epoch is not None else 0
            if on_epoch is not None:
                on_epoch(step, {report.metric: value})
            if not report.curve:
                result.curve, result.epochs_trained = [value], 1
                result.history = {report.metric: [value]}
    result.state, result.value = "completed", value
