"""A user's own code named by the config: importing it, checking it against its signatures, describing it."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import inspect
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from hyperflow.components.config import ConfigError, ModelConfig

if TYPE_CHECKING:
    from hyperflow.components.config import ExperimentConfig

__all__ = [
    "UserCodeError",
    "UserSpec",
    "check_user_code",
    "describe_user_code",
    "import_object",
    "kind_of",
    "lightning_namespace",
    "registered",
    "signature",
    "user_spec",
]

Kind = Literal["module", "datamodule", "function"]
_NAMESPACES = ("lightning.pytorch", "pytorch_lightning")

# Objects the Python API passes in directly (a function defined in a notebook, a closure), found
# by the import path it writes into the config. Only the search loop's process looks here: the
# trial's spec carries such a function to worker processes by value (cloudpickle).
_REGISTERED: dict[str, Any] = {}


class UserCodeError(ConfigError):
    """The config names user code that cannot be imported or would not accept its arguments."""


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
def signature(cls: type) -> _Signature:
    """The keyword arguments `cls` (a constructor) takes."""
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
    sig = signature(cls)
    dsig = signature(data_cls) if data_cls is not None else None
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


def describe_user_code(cfg: ExperimentConfig, parameters: Callable[[], str] | None = None) -> list[str]:
    """Lines for `hyperflow validate`: the user code and which values each constructor receives,
    and for a LightningModule the `parameters()` line (its counts over the space) when given."""
    lines: list[str] = []
    if cfg.model.module:
        obj = import_object(cfg.model.module)
        if kind_of(obj) == "function":
            lines.append(f"objective: {cfg.model.module} (a training function fn(params, report))")
            lines.append(f"  params: {', '.join([*cfg.search.space, *cfg.model.args, 'max_epochs'])}")
        else:
            sig = signature(obj)
            lines.append(f"model: {cfg.model.module} (a {lightning_namespace(obj)} LightningModule)")
            fixed = [k for k in ModelConfig.model_fields if k in sig.names and k not in cfg.search.space]
            lines.append(f"  {sig.text()}")
            searched = [k for k in cfg.search.space if sig.accepts(k)]
            lines.append(f"  searched: {', '.join(searched) or '-'}")
            lines.append(f"  fixed: {', '.join([*fixed, *cfg.model.args]) or '-'}")
            if parameters is not None:
                lines.append(f"  parameters: {parameters()}")
    if cfg.data.module:
        dsig = signature(import_object(cfg.data.module, key="data.module"))
        lines.append(f"data: {cfg.data.module} (a LightningDataModule)")
        lines.append(f"  {dsig.text()}")
        searched = [k for k in cfg.search.space if k in dsig.names]
        fixed = [k for k in ModelConfig.model_fields if k in dsig.names and k not in cfg.search.space]
        lines.append(f"  searched: {', '.join(searched) or '-'}")
        lines.append(
            f"  fixed: {', '.join([*fixed, *cfg.data.args, *(['seed'] if 'seed' in dsig.names else [])]) or '-'}"
        )
    return lines
