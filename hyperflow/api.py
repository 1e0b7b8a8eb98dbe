"""hyperflow's Python API: `search` runs the hyperparameter-search flow from Python and returns its result."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

# The names the `hyperflow` package exports (its `__all__`) come from here: `X as X` re-exports them.
from hyperflow.components.adapters import Reporter
from hyperflow.components.config import ConfigError as ConfigError
from hyperflow.components.config import (
    ExperimentConfig,
    apply_overrides,
    load_config,
    plain_value,
    validate_config,
)
from hyperflow.components.preflight import PreflightError as PreflightError
from hyperflow.components.preflight import preflight
from hyperflow.components.resume import ResumeError as ResumeError
from hyperflow.components.resume import check_resumable
from hyperflow.components.study import StudyResult as StudyResult
from hyperflow.components.trial import TrialPruned as TrialPruned
from hyperflow.components.usercode import UserCodeError as UserCodeError
from hyperflow.components.usercode import registered

Overrides = Sequence[str] | Mapping[str, Any]


def search(
    config: ExperimentConfig | Mapping[str, Any] | str | Path,
    overrides: Overrides | None = None,
    *,
    objective: Callable[[dict[str, Any], Reporter], Any] | None = None,
    resume: str | None = None,
) -> StudyResult:
    """Run one search (the `hyperparameter-search` flow, as `hyperflow run` does) and return its result.

    Args:
        config: a YAML file, a config dict (the YAML's structure) or an ExperimentConfig.
        overrides: dotted keys, as `["search.n_trials=20"]` (values parsed as YAML, like `--set`)
            or as `{"search.n_trials": 20}` (values taken as they are; a numpy scalar or array as the
            Python value it holds).
        objective: a training function `fn(params, report) -> value` to tune instead of a
            LightningModule (it becomes `model.module`). `params` holds the trial's sampled values, `model.args` and
            `max_epochs`; `report(epoch, value, **metrics)` logs the search metric (and any other
            metrics) at step = epoch and raises `TrialPruned` when early stopping ends the trial.
            It returns the trial's value (or None: the last value reported), or `(value, model)`
            to have a torch model's weights logged with the trial. Trials in worker processes
            (`search.n_parallel > 1`) get it by value (cloudpickle) when it cannot be imported.
        resume: a study run id to continue instead of starting a new study (as `hyperflow resume`
            does; the config must be the study's, only `search.n_trials`, `n_parallel`, the
            timeouts and where it runs may change).

    Returns:
        The study's result: `best_params`, `best_value`, `study_run_id`, `test_metrics`,
        `champion_uri` (None for a training function, which has no model to register), ...

    Raises:
        ConfigError: the config (or the user code it names, or an override value) is invalid;
            every problem by its key.
        PreflightError: the data, the strategy or the tracking store cannot be used.
        ResumeError: `resume` names no study that this config can continue: no such run in the
            tracking store, a run that is not a study, or a study run with a different config.
    """
    _refuse_in_a_worker_bootstrap()
    path = _objective_path(objective) if objective is not None else None
    cfg = _resolve(config, _as_text(overrides), path)
    _refuse_an_unguarded_call(cfg)
    from hyperflow.flows.search_flow import run_search

    if path is None:
        _check(cfg, resume)
        return run_search(cfg, resume_run_id=resume)
    with registered(path, objective):
        _check(cfg, resume)
        return run_search(cfg, resume_run_id=resume)


def _check(cfg: ExperimentConfig, resume: str | None) -> None:
    """What `hyperflow run` / `resume` check before a flow run exists (a study to resume too)."""
    preflight(cfg)
    if resume:
        check_resumable(cfg, resume)


def _refuse_in_a_worker_bootstrap() -> None:
    """A worker process (`search.n_parallel > 1`) imports the caller's script again to start; a
    `search()` at the script's top level would start a study inside every worker."""
    # multiprocessing's spawn runs the parent's script under the name `__mp_main__` as the worker starts
    if _script_frame("__mp_main__") is not None:
        raise RuntimeError(
            "hyperflow.search() was called while a worker process imported your script to start: "
            'call it under `if __name__ == "__main__":` (workers of search.n_parallel > 1 import the '
            "script again, as every Python program that starts processes by spawning requires)"
        )


def _script_frame(name: str) -> FrameType | None:
    """The frame of a script's top level, run as module `name`, that this call came from (None: it
    came from none, e.g. a notebook's cell or a thread)."""
    import sys

    frame: FrameType | None = sys._getframe(1)
    while frame is not None and not (
        frame.f_code.co_name == "<module>" and frame.f_globals.get("__name__") == name
    ):
        frame = frame.f_back
    return frame


def _trials_in_spawned_workers(cfg: ExperimentConfig) -> str | None:
    """Why trials run in processes that import the caller's script again (None: they do not)."""
    if cfg.search.n_parallel > 1:
        return f"search.n_parallel = {cfg.search.n_parallel}"
    if cfg.runner.kind == "dask" and not cfg.runner.address:
        return "runner.kind = dask (a local cluster)"
    from hyperflow.components.devices import trial_slots

    if trial_slots(cfg.runner) is not None:
        return "trials on GPUs (a worker process per GPU slot)"
    return None


def _refuse_an_unguarded_call(cfg: ExperimentConfig) -> None:
    """Refuse, before anything starts, a `search()` that runs at the top level of the caller's
    script outside `if __name__ == "__main__":` when trials run in spawned worker processes.

    Each worker imports that script again to start (it needs the objective, which usually lives
    there): the call would run once more in every worker. Python's multiprocessing only says so
    from inside the worker, and the study would end with its trials failed as a broken process pool.
    """
    import ast
    import sys

    main = sys.modules.get("__main__")
    script = getattr(main, "__file__", None)
    if not script or not (why := _trials_in_spawned_workers(cfg)):
        return  # an interactive session or a notebook: nothing runs it again
    frame = _script_frame("__main__")
    if frame is None:
        return  # called later than the script's own top level (a callback, a thread)
    line = frame.f_lineno
    try:
        tree = ast.parse(Path(script).read_text(encoding="utf-8"), filename=script)
    except (OSError, SyntaxError, ValueError):
        return  # the workers refuse it themselves (`_refuse_in_a_worker_bootstrap`)
    guards = [n for n in ast.walk(tree) if isinstance(n, ast.If) and _is_main_guard(n.test) and n.body]
    if any(g.body[0].lineno <= line <= (g.body[-1].end_lineno or g.body[-1].lineno) for g in guards):
        return
    raise RuntimeError(
        f"hyperflow.search() is called at the top level of {Path(script).name} (line {line}), outside "
        f'`if __name__ == "__main__":`, and its trials run in worker processes ({why}) that import '
        "the script again to start: the call would run again in every worker. Put it under "
        '`if __name__ == "__main__":`, as every Python program that starts processes by spawning must'
    )


def _is_main_guard(test: Any) -> bool:
    """`__name__ == "__main__"` (either way round)."""
    import ast

    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, test.comparators[0]]
    names = [s for s in sides if isinstance(s, ast.Name) and s.id == "__name__"]
    mains = [s for s in sides if isinstance(s, ast.Constant) and s.value == "__main__"]
    return len(names) == 1 and len(mains) == 1


def _objective_path(fn: Callable[..., Any]) -> str:
    """Where a function lives, as an import path (also when it cannot be imported from there)."""
    if not callable(fn):
        raise TypeError(f"objective must be a function fn(params, report), not {type(fn).__name__}")
    module = getattr(fn, "__module__", None) or "__main__"
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}:{name}"


def _as_text(overrides: Overrides | None) -> list[str]:
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        # JSON is YAML: a value passes through `--set`'s parser unchanged (a numpy scalar as the
        # Python value it holds).
        texts, problems = [], []
        for key, value in overrides.items():
            try:
                texts.append(f"{key}={json.dumps(value, default=plain_value)}")
            except (TypeError, ValueError) as exc:
                problems.append((str(key), str(exc)))
        if problems:
            raise ConfigError(problems, "overrides")
        return texts
    if isinstance(overrides, str):
        return [overrides]
    return list(overrides)


def _resolve(
    config: ExperimentConfig | Mapping[str, Any] | str | Path,
    overrides: list[str],
    objective_path: str | None,
) -> ExperimentConfig:
    if objective_path is not None:
        overrides = [*overrides, f"model.module={json.dumps(objective_path)}"]
    if isinstance(config, str | Path):
        return load_config(config, overrides)
    if isinstance(config, ExperimentConfig):
        raw = config.model_dump(mode="json")
    elif isinstance(config, Mapping):
        raw = dict(config)
    else:
        raise TypeError(f"config must be a path, a dict or an ExperimentConfig, not {type(config).__name__}")
    return validate_config(apply_overrides(raw, overrides))
