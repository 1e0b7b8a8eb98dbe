"""Overhead: what Prefect, MLflow, plots and the strategy cost per trial on top of training.

The same N trials of the default digits model (conf/digits.yaml's model, 30 epochs, no early
stopping; the search varies learning_rate, momentum and l2 only, so every trial is the default
trial) with the default strategy (bayes, GP) and fixed seeds, run three ways:

  (a) a bare loop: ask -> train_trial -> tell, no Prefect, no MLflow;
  (b) the full `hyperparameter-search` flow, Prefect + MLflow into SQLite;
  (c) the full flow with an MLflow server over HTTP (`mlflow server --workers 1`, SQLite behind it,
      artifacts served), started on a free loopback port and stopped by its PID.

Prefect is the server PREFECT_API_URL names, else Prefect's ephemeral mode as `hyperflow run` uses
it. Time is attributed by wrapping functions from here (no timing code in components): training
(train_trial), strategy (ask, tell), MLflow writes (MlflowClient calls, the trial logger), plots and
artifacts (weights, histograms, PNG uploads), study bookkeeping; what is left of the search loop's
wall time is Prefect's task runs. Per-trial figures are the steady state over trials 1..N-1;
everything else (imports, servers, flow start, the first trial, finishing) is reported apart.

    python bench/overhead.py [--quick]
"""

from __future__ import annotations

import functools
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import DIGITS, ROOT, banner, load_experiment, parser, print_table, stopwatch, verdict

TARGET = 0.10
# conf/digits.yaml's ranges, narrowed where SGD diverges: a failed trial would not be the default trial.
SPACE = (
    "search.space={learning_rate: {low: 1.0e-3, high: 0.1, log: true}, momentum: {low: 0.0, high: 0.95}, "
    "l2: {low: 1.0e-6, high: 1.0e-2, log: true}}"
)
# Parts of the per-trial overhead, in table order; "prefect" is what the loop spends outside them.
PARTS = {
    "strategy": "strategy ask + tell",
    "mlflow": "MLflow writes (runs, params, metrics, tags)",
    "artifacts": "plots and artifacts (weights, histograms)",
    "study": "study bookkeeping",
    "prefect": "Prefect task runs (rest of the loop)",
}
CPU_ROWS = {
    "cpu_own": "CPU: this process (training, loop, MLflow client)",
    "cpu_strategy": "CPU: strategy process (bayes' lookahead)",
    "cpu_prefect": "CPU: Prefect server process",
    "cpu_mlflow": "CPU: MLflow server process",
    "cpu_other": "CPU: other child processes",
}
BACKGROUND_THREADS = {"hyperflow-mlflow-writer", "hyperflow-lookahead"}
_ARTIFACT_CALLS = {"log_artifact", "log_artifacts", "log_text", "log_dict", "log_image", "log_figure"}


class Profile:
    """Exclusive wall time per category, from wrapped functions, per thread (nested calls subtract)."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.calls: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])  # label -> [count, seconds]
        self._local = threading.local()
        self._lock = threading.Lock()
        self._undo: list[tuple[Any, str, Any]] = []

    def timed(self, fn: Callable[..., Any], category: str, label: str) -> Callable[..., Any]:
        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            # Time on the MLflow writer's and the lookahead's threads is off the loop's path: kept apart.
            cat = f"bg_{category}" if threading.current_thread().name in BACKGROUND_THREADS else category
            stack = self._local.__dict__.setdefault("stack", [])
            stack.append(0.0)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                inner = stack.pop()
                if stack:
                    stack[-1] += elapsed
                with self._lock:
                    self.totals[cat] += elapsed - inner
                    entry = self.calls[label]
                    entry[0] += 1
                    entry[1] += elapsed - inner

        return call

    def wrap(self, owner: Any, attr: str, category: str) -> None:
        """Time `owner.attr` (a function of a module or class) from now on; missing ones are skipped."""
        original = owner.__dict__.get(attr) if isinstance(owner, type) else getattr(owner, attr, None)
        if original is None:
            return
        name = owner.__name__ if hasattr(owner, "__name__") else type(owner).__name__
        self._undo.append((owner, attr, original))
        setattr(owner, attr, self.timed(original, category, f"{name}.{attr}"))

    def replace(self, owner: Any, attr: str, new: Any) -> None:
        """Set `owner.attr` to `new` until `restore`."""
        self._undo.append((owner, attr, getattr(owner, attr)))
        setattr(owner, attr, new)

    def restore(self) -> None:
        for owner, attr, original in reversed(self._undo):
            setattr(owner, attr, original)
        self._undo.clear()

    def snapshot(self) -> tuple[float, dict[str, float], dict[str, tuple[int, float]]]:
        with self._lock:
            totals = dict(self.totals)
            calls = {k: (int(v[0]), float(v[1])) for k, v in self.calls.items()}
        totals.update(cpu_seconds())
        return time.perf_counter(), totals, calls


# Child processes by what their command line runs.
_CHILDREN = {
    "strategy": ("multiprocessing", "spawn_main"),
    "prefect": ("prefect",),
    "mlflow": ("mlflow", "uvicorn"),
}


def cpu_seconds() -> dict[str, float]:
    """CPU seconds used so far by this process and by its live child processes, by kind: the
    strategy's process, Prefect's server, the MLflow server (psutil, which dask's distributed installs)."""
    try:
        import psutil
    except ImportError:
        return {}
    me = psutil.Process()
    own = me.cpu_times()
    out = {"cpu:own": own.user + own.system, **{f"cpu:{kind}": 0.0 for kind in _CHILDREN}}
    for child in me.children(recursive=True):
        try:
            t = child.cpu_times()
            cmdline = " ".join(child.cmdline())
        except psutil.Error:
            continue
        kind = next((k for k, marks in _CHILDREN.items() if any(m in cmdline for m in marks)), "other")
        out[f"cpu:{kind}"] = out.get(f"cpu:{kind}", 0.0) + t.user + t.system
    return out


@dataclass
class Mode:
    """One way of running the N trials, measured."""

    name: str
    trials: int
    snapshots: list[tuple[float, dict[str, float], dict[str, tuple[int, float]]]] = field(
        default_factory=list
    )
    values: list[float | None] = field(default_factory=list)
    started: float = 0.0  # perf_counter at the start of the mode
    loop_started: float = 0.0
    ended: float = 0.0
    loop_ended: float = 0.0

    def steady(self) -> tuple[float, dict[str, float], dict[str, tuple[float, float]]]:
        """Per-trial wall, categories and calls (count, seconds) over trials 1..N-1."""
        (t0, c0, k0), (t1, c1, k1) = self.snapshots[0], self.snapshots[-1]
        n = len(self.snapshots) - 1
        cats = {k: (c1.get(k, 0.0) - c0.get(k, 0.0)) / n for k in set(c0) | set(c1)}
        cpu = {k: cats.pop(k) for k in list(cats) if k.startswith("cpu:")}
        cats.update({k.replace("cpu:", "cpu_"): v for k, v in cpu.items()})
        calls = {
            k: ((k1[k][0] - k0.get(k, (0, 0.0))[0]) / n, (k1[k][1] - k0.get(k, (0, 0.0))[1]) / n) for k in k1
        }
        return (t1 - t0) / n, cats, calls

    def parts(self) -> dict[str, float]:
        wall, cats, _ = self.steady()
        out = {p: cats.get(p, 0.0) for p in PARTS if p != "prefect"}
        out["train"] = cats.get("train", 0.0)
        timed = sum(v for k, v in cats.items() if not k.startswith(("cpu_", "bg_")))
        out["bg"] = sum(v for k, v in cats.items() if k.startswith("bg_"))
        out["prefect"] = wall - timed + cats.get("prefect", 0.0)
        out["wall"] = wall
        for k, v in cats.items():
            if k.startswith("cpu_"):
                out[k] = v
        return out


def config(n_trials: int, uri: str, quick: bool = False) -> Any:
    """The experiment every mode runs (`quick`: no model registration, a one-time cost)."""
    return load_experiment(
        DIGITS,
        [
            f"search.n_trials={n_trials}",
            SPACE,
            "early_stopping.kind=none",
            f"tracking.uri={uri}",
            "name=bench-overhead",
            *(["tracking.register_model=false"] if quick else []),
        ],
    )


def bare_loop(cfg: Any, profile: Profile, mode: Mode) -> None:
    """(a): ask -> train_trial -> tell with nothing else, on the loop's path: suggestion k is asked
    after telling the trials below k - 1 (what the flow's lookahead computes while trial k - 1
    trains, `search.lookahead`), so that every mode trains the same trials."""
    from hyperflow.components.data import load_dataset
    from hyperflow.components.lifecycle import threads_per_trial
    from hyperflow.components.search import make_strategy
    from hyperflow.components.study import trial_seed
    from hyperflow.components.training import train_trial
    from hyperflow.components.trial import TrialSpec

    mode.started = time.perf_counter()
    data = load_dataset(cfg.data, cfg.seed)
    strategy = make_strategy(cfg)
    spec = TrialSpec.from_config(cfg, num_threads=threads_per_trial(cfg))
    train = profile.timed(train_trial, "train", "train_trial")
    ask = profile.timed(strategy.ask, "strategy", "Strategy.ask")
    tell = profile.timed(strategy.tell, "strategy", "Strategy.tell")
    tell_failed = profile.timed(strategy.tell_failed, "strategy", "Strategy.tell_failed")
    mode.loop_started = time.perf_counter()
    untold: list[tuple[dict[str, Any], float | None]] = []  # trial k - 1's result, told before k + 1
    for number in range(cfg.search.n_trials):
        if len(untold) > 1 or (len(untold) == 1 and not cfg.search.lookahead):
            told_params, told_value = untold.pop(0)
            if told_value is None:
                tell_failed(told_params)
            else:
                tell(told_params, told_value)
        (params,) = ask(1)
        result = train(data, params, spec, seed=trial_seed(cfg.seed, number))
        value = result.value if result.state == "completed" else None
        untold.append((params, value))
        mode.values.append(value)
        mode.snapshots.append(profile.snapshot())
    mode.loop_ended = mode.ended = time.perf_counter()


def instrument(profile: Profile, mode_ref: list[Mode]) -> None:
    """Wrap what the flow calls, by category (module attributes the flow looks up at call time)."""
    from mlflow.tracking import MlflowClient
    from prefect.task_runners import ThreadPoolTaskRunner

    import hyperflow.components.study as study_module
    import hyperflow.flows.search_flow as flow_module
    from hyperflow.components.search._base import Strategy
    from hyperflow.components.study import Study
    from hyperflow.components.tracking import TrialLogger
    from hyperflow.components.training import train_trial

    for attr in ("ask", "tell", "tell_failed"):
        profile.wrap(Strategy, attr, "strategy")
    for attr, value in list(vars(MlflowClient).items()):
        if callable(value) and not attr.startswith("_"):
            profile.wrap(MlflowClient, attr, "artifacts" if attr in _ARTIFACT_CALLS else "mlflow")
    for attr in ("on_epoch", "flush", "finish", "wait", "_settle"):
        profile.wrap(TrialLogger, attr, "mlflow")
    profile.wrap(study_module, "draw_weight_histograms", "artifacts")
    for attr in ("plan", "record"):
        profile.wrap(Study, attr, "study")
    profile.wrap(study_module, "weight_histograms", "artifacts")
    profile.wrap(ThreadPoolTaskRunner, "submit", "prefect")
    # execute_trial's own time is saving the weights and histograms; its training is train_trial,
    # reached through its `train` default.
    kwdefaults = dict(study_module.execute_trial.__kwdefaults__ or {})
    if "train" in kwdefaults:
        kwdefaults["train"] = profile.timed(train_trial, "train", "train_trial")
        profile.replace(study_module.execute_trial, "__kwdefaults__", kwdefaults)
    profile.wrap(flow_module, "execute_trial", "artifacts")

    run_trials, record = flow_module._run_trials, flow_module._record

    def timed_run_trials(*args: Any, **kwargs: Any) -> Any:
        mode_ref[0].loop_started = time.perf_counter()
        try:
            return run_trials(*args, **kwargs)
        finally:
            mode_ref[0].loop_ended = time.perf_counter()

    def timed_record(study: Any, plan: Any, fut: Any) -> Any:
        out = record(study, plan, fut)
        mode_ref[0].values.append(study.records[-1].value if study.records else None)
        mode_ref[0].snapshots.append(profile.snapshot())
        return out

    profile.replace(flow_module, "_run_trials", timed_run_trials)
    profile.replace(flow_module, "_record", timed_record)


def flow_mode(name: str, cfg: Any, mode_ref: list[Mode]) -> Mode:
    from hyperflow.flows.search_flow import run_search

    mode = Mode(name, cfg.search.n_trials)
    mode_ref[0] = mode
    mode.started = time.perf_counter()
    result = run_search(cfg)
    mode.ended = time.perf_counter()
    if result.status != "FINISHED":
        raise RuntimeError(f"the {name} search ended {result.status}: {result.errors}")
    return mode


class MlflowServer(threading.Thread):
    """Starts an MLflow tracking server as the tests do (tests/servers.py), in the background."""

    def __init__(self, home: Path) -> None:
        super().__init__(daemon=True)
        self.home = home
        self.server: Any = None
        self.error: BaseException | None = None
        self.seconds = 0.0

    def run(self) -> None:
        sys.path.insert(0, str(ROOT / "tests"))
        from servers import start_mlflow_server

        start = time.perf_counter()
        try:
            self.server = start_mlflow_server(self.home)
        except BaseException as exc:
            self.error = exc
        self.seconds = time.perf_counter() - start

    def url(self) -> str:
        self.join()
        if self.error is not None:
            raise self.error
        return str(self.server.url)

    def stop(self) -> None:
        self.join()
        if self.server is not None:
            from servers import stop

            stop(self.server.proc)


def measure(n: int, tmp: Path, *, quick: bool) -> tuple[dict[str, list[Mode]], float, float]:
    """Run the modes with `n` trials each.

    Full: (a), a short warm-up flow (not measured: the process's first flows run slower while
    Prefect settles), then (b), (c), (b), (c), (a), so that drift hits every mode alike. Quick:
    (a), (b), (c) once, and the MLflow server starts at once in the background.

    Returns:
        The runs of each mode, the MLflow server's start-up seconds, the warm-up flow's seconds.
    """
    server = MlflowServer(tmp / "server")
    if quick:
        server.start()
    profile = Profile()
    modes: dict[str, list[Mode]] = {"a": [], "b": [], "c": []}
    warm_up = 0.0
    try:
        modes["a"].append(Mode("(a) bare loop", n))
        bare_loop(config(n, f"sqlite:///{tmp / 'unused.db'}"), profile, modes["a"][0])
        mode_ref: list[Mode] = [modes["a"][0]]
        instrument(profile, mode_ref)
        try:
            if not quick:
                with stopwatch() as t:
                    flow_mode("warm-up", config(3, f"sqlite:///{tmp / 'warm-up.db'}", True), mode_ref)
                warm_up = t[0]
                server.start()
                server.url()  # up before the measured flows, so its start-up overlaps none of them
            for _ in range(1 if quick else 2):
                modes["b"].append(
                    flow_mode(
                        "(b) flow, SQLite", config(n, f"sqlite:///{tmp / 'mlflow.db'}", quick), mode_ref
                    )
                )
                modes["c"].append(
                    flow_mode("(c) flow, MLflow server", config(n, server.url(), quick), mode_ref)
                )
        finally:
            profile.restore()
    finally:
        server.stop()
    if not quick:
        modes["a"].append(Mode("(a) bare loop", n))
        bare_loop(config(n, f"sqlite:///{tmp / 'unused.db'}"), Profile(), modes["a"][-1])
    return modes, server.seconds, warm_up


def mean_parts(runs: list[Mode]) -> dict[str, float]:
    """Per-trial parts, averaged over a mode's runs."""
    each = [r.parts() for r in runs]
    return {k: statistics.mean(p.get(k, 0.0) for p in each) for k in each[0]}


def mean_calls(runs: list[Mode]) -> dict[str, tuple[float, float]]:
    """Wrapped calls per trial (count, seconds), averaged over a mode's runs."""
    each = [r.steady()[2] for r in runs]
    labels = set().union(*each)
    return {
        k: (
            statistics.mean(c.get(k, (0, 0.0))[0] for c in each),
            statistics.mean(c.get(k, (0, 0.0))[1] for c in each),
        )
        for k in labels
    }


def main() -> None:
    args = parser(__doc__).parse_args()
    n = 2 if args.quick else 20
    with stopwatch() as t_import:
        import hyperflow.flows.search_flow  # noqa: F401 - the import is what is timed
        from hyperflow.components.training import train_trial  # noqa: F401
    banner(f"Overhead per trial: bare loop vs Prefect + MLflow ({n} default digits trials)", args.quick)
    prefect = os.environ.get("PREFECT_API_URL")
    print(
        f"Prefect: {'the server at ' + prefect if prefect else 'ephemeral mode (started by the first flow)'}"
    )
    with tempfile.TemporaryDirectory(prefix="hyperflow-bench-overhead-", ignore_cleanup_errors=True) as tmp:
        cwd = os.getcwd()
        os.chdir(tmp)  # mlruns/ of the SQLite store lands here, not in the checkout
        try:
            modes, server_seconds, warm_up = measure(n, Path(tmp), quick=args.quick)
        finally:
            os.chdir(cwd)
    runs = {k: len(v) for k, v in modes.items()}
    parts = {k: mean_parts(v) for k, v in modes.items()}
    train_a = parts["a"]["train"]
    print(
        f"default trial: {train_a * 1000:.0f} ms of training (bare loop, mean per trial); "
        f"10% of it is {train_a * 100:.0f} ms; runs per mode: "
        + ", ".join(f"({k}) {v}" for k, v in runs.items())
    )
    reference = modes["a"][0].values
    same = all(m.values == reference for v in modes.values() for m in v)
    print(f"the same trials (values) in every mode: {'yes' if same else 'NO'}")
    print()

    cols = ["a", "b", "c"]
    rows: list[list[Any]] = [["training (train_trial)", *[parts[k]["train"] * 1000 for k in cols], "", ""]]
    slower = {k: parts[k]["train"] - train_a for k in cols}
    rows.append(
        [
            "training slower than (a): contention",
            *[slower[k] * 1000 for k in cols],
            *[100 * slower[k] / train_a for k in ("b", "c")],
        ]
    )
    for part, label in PARTS.items():
        values = [parts[k][part] * 1000 for k in cols]
        rows.append([label, *values, *[100 * parts[k][part] / train_a for k in ("b", "c")]])
    overhead = {k: parts[k]["wall"] - train_a for k in cols}
    rows.append(["total per trial (wall)", *[parts[k]["wall"] * 1000 for k in cols], "", ""])
    rows.append(
        [
            "overhead: wall - (a)'s training",
            *[overhead[k] * 1000 for k in cols],
            *[100 * overhead[k] / train_a for k in ("b", "c")],
        ]
    )
    rows.append(
        [
            "off the loop's path: MLflow writer and lookahead threads (wall, not in the overhead)",
            *[parts[k].get("bg", 0.0) * 1000 for k in cols],
            "",
            "",
        ]
    )
    for key, label in CPU_ROWS.items():
        rows.append([label, *[parts[k].get(key, 0.0) * 1000 for k in cols], "", ""])
    print_table(
        f"Per trial, steady state over trials 1..{n - 1}, mean of the runs (ms; % of the default trial's training)",
        ["part", "(a) bare", "(b) SQLite", "(c) HTTP", "(b) %", "(c) %"],
        rows,
    )
    print(
        "(a)'s 'Prefect' row is its loop's own remainder (no Prefect there). A Prefect server that "
        "PREFECT_API_URL names is not a child process: its CPU is not counted."
    )
    print()

    call_rows = []
    calls_b, calls_c = mean_calls(modes["b"]), mean_calls(modes["c"])
    for label in sorted(set(calls_b) | set(calls_c), key=lambda k: -(calls_c.get(k, (0, 0))[1])):
        cb, cc = calls_b.get(label, (0, 0.0)), calls_c.get(label, (0, 0.0))
        if max(cb[1], cc[1]) < 0.0005:
            continue
        call_rows.append(
            [
                label,
                cb[0],
                cb[1] * 1000 / cb[0] if cb[0] else None,
                cb[1] * 1000,
                cc[0],
                cc[1] * 1000 / cc[0] if cc[0] else None,
                cc[1] * 1000,
            ]
        )
    print_table(
        "Where it goes: wrapped calls per trial, mean of the runs (exclusive ms; calls over 0.5 ms a trial)",
        ["call", "(b) calls", "(b) ms each", "(b) ms", "(c) calls", "(c) ms each", "(c) ms"],
        call_rows,
    )
    print()

    one_rows: list[list[Any]] = [
        ["imports (flows, components, Prefect, MLflow, Lightning)", t_import[0], "", ""]
    ]
    one_rows.append(
        [
            "MLflow server start (--workers 1)"
            + (", in the background from the start" if args.quick else ""),
            "",
            "",
            server_seconds,
        ]
    )
    if warm_up:
        one_rows.append(
            ["warm-up flow, 3 trials (Prefect start, first flow run; not measured)", "", warm_up, ""]
        )
    for key in cols:
        m = modes[key][0]
        first_trial = m.snapshots[0][0] - m.loop_started
        one_rows.append(
            [
                f"{m.name}: start (data, study run{', Prefect flow run' if key != 'a' else ''})",
                *[m.loop_started - m.started if k == key else "" for k in cols],
            ]
        )
        one_rows.append(
            [
                f"{m.name}: first trial beyond the steady state",
                *[first_trial - parts[key]["wall"] if k == key else "" for k in cols],
            ]
        )
        one_rows.append(
            [
                f"{m.name}: finish (test, model export + registry, plots)"
                if key != "a"
                else f"{m.name}: finish",
                *[m.ended - m.loop_ended if k == key else "" for k in cols],
            ]
        )
    print_table("One-time costs (s)", ["", "(a)", "(b)", "(c)"], one_rows)
    print()

    # What the flow adds beyond the strategy (which the bare loop pays as well): a fixed cost per
    # trial, so it falls under the target for trials this long.
    fixed = {k: overhead[k] - parts["a"]["strategy"] for k in ("b", "c")}
    print(
        "beyond the strategy, the flow adds "
        + ", ".join(f"{fixed[k] * 1000:.0f} ms ({modes[k][0].name})" for k in ("b", "c"))
        + " a trial: under 10% for trials of "
        + " / ".join(f"{fixed[k] / TARGET:.1f} s" for k in ("b", "c"))
        + " or more"
    )
    print()
    worst = max(("b", "c"), key=lambda k: overhead[k])
    share = overhead[worst] / train_a
    contributions = {PARTS[p]: parts[worst][p] for p in PARTS if p != "study"}
    contributions["training slowed by contention"] = slower[worst]
    ranked = sorted(contributions.items(), key=lambda kv: -kv[1])[:3]
    verdict(
        share <= TARGET,
        f"per-trial overhead {100 * overhead['b'] / train_a:.0f}% (SQLite) and {100 * overhead['c'] / train_a:.0f}% "
        f"(HTTP) of the {train_a * 1000:.0f} ms default trial (target <= {100 * TARGET:.0f}%); "
        f"largest parts in {modes[worst][0].name}: "
        + ", ".join(f"{label} {seconds * 1000:.0f} ms" for label, seconds in ranked),
    )


if __name__ == "__main__":
    main()
