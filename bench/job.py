"""The whole job as a user waits for it: `hyperflow run` against an Optuna script, cold processes.

Two tables, every figure from processes started by this script, side by side:

1. Start-up: process start to the first trial's MLflow run (`hyperflow run`, one trial), with
   Prefect's server started at the beginning of the command (now) against Prefect's own
   ephemeral server, started when the flow first asks for a client (before), and the Optuna
   script's process start to its first trial beside them; alternating, in fresh working
   directories (a new `mlflow.db` each) on a Prefect home that has been used once.
2. The whole job: the default 30-trial digits search as `hyperflow run` (process start to exit)
   against `bench/optuna_job.py`: Optuna's TPESampler (its defaults, seeded) and
   MedianPruner(n_startup_trials=5, n_warmup_steps=min_epochs - 1), in-memory storage, driving a
   plain PyTorch loop over the same MLP, split, space, trial seeds and number of trials on one
   torch thread. Both report the best trial's test value. On digits, breast_cancer and a
   synthetic task unlike digits (`make_classification`: 20 features, 3 informative, 10% label
   noise; written to a .npz that both read). A second table splits hyperflow's time into
   start-up, trials and finish.

`--quick`: the whole job on digits with 2 trials, one seed, on a new Prefect home (no start-up table).

    python bench/job.py [--quick] [--seeds N] [--data digits,breast_cancer,synthetic] [--startup-only]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import ROOT, banner, parser, print_table, verdict

STARTUP_TARGET = 5.0
# Runs `hyperflow run` with Prefect's own lazily started ephemeral server (the code before this change).
_BEFORE = (
    "import sys; import hyperflow.flows.cli as cli; cli._command_server = lambda: None; "
    "sys.argv = ['hyperflow', *sys.argv[1:]]; cli.main()"
)
_NOW = "import sys; import hyperflow.flows.cli as cli; sys.argv = ['hyperflow', *sys.argv[1:]]; cli.main()"


def _env(home: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API_URL", "MLFLOW_TRACKING_URI"))
    }
    env.update(PREFECT_HOME=str(home), OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return env


def _trial_times(db: Path) -> tuple[float | None, float | None]:
    """(start of the first trial run, end of the last) in s since the epoch, from an MLflow store."""
    import sqlite3

    with sqlite3.connect(db) as con:
        first, last = con.execute(
            "SELECT MIN(r.start_time), MAX(r.end_time) FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
            "WHERE t.key = 'hyperflow.role' AND t.value = 'trial'"
        ).fetchone()
    return (first / 1000 if first else None), (last / 1000 if last else None)


@dataclass
class Run:
    """One cold process: wall seconds to exit, to the first trial, to the end of the last trial."""

    wall: float
    first: float | None
    last: float | None
    stdout: str = ""

    @property
    def phases(self) -> tuple[float, float, float]:
        """(start-up, trials, finish) in seconds."""
        first = self.first if self.first is not None else self.wall
        last = self.last if self.last is not None else first
        return first, last - first, self.wall - last


def hyperflow_run(
    code: str, workdir: Path, home: Path, overrides: list[str], config: str = "conf/digits.yaml"
) -> Run:
    """One cold `hyperflow run`."""
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-c", code, "run", str(ROOT / config)]
    for o in overrides:
        cmd += ["--set", o]
    start = time.time()
    out = subprocess.run(cmd, cwd=workdir, env=_env(home), capture_output=True, text=True, check=False)
    wall = time.time() - start
    if out.returncode != 0:
        raise RuntimeError(f"hyperflow run failed ({out.returncode}): {out.stderr[-2000:]}")
    first, last = _trial_times(workdir / "mlflow.db")
    return Run(
        wall,
        None if first is None else first - start,
        None if last is None else last - start,
        out.stdout,
    )


def startup(reps: int, tmp: Path) -> float:
    """hyperflow's start-up, now against Prefect's own lazy server start, with Optuna's beside it."""
    home = tmp / "prefect-home"
    overrides = ["search.n_trials=1", "tracking.register_model=false", "name=bench-startup"]
    hyperflow_run(_NOW, tmp / "warm-up", home, overrides)  # the Prefect home's database, created once
    firsts: dict[str, list[float]] = {"now": [], "before": [], "optuna": []}
    walls: dict[str, list[float]] = {"now": [], "before": [], "optuna": []}
    for rep in range(reps):
        order = ("before", "now", "optuna") if rep % 2 else ("optuna", "now", "before")
        for name in order:
            if name == "optuna":
                wall, _, report = optuna_run(
                    "conf/digits.yaml", ["search.n_trials=1"], 0, tmp / f"su-o-{rep}"
                )
                first = float(report["first_trial_seconds"])
            else:
                code = _NOW if name == "now" else _BEFORE
                run = hyperflow_run(code, tmp / f"startup-{name}-{rep}", home, overrides)
                assert run.first is not None
                wall, first = run.wall, run.first
            firsts[name].append(first)
            walls[name].append(wall)
            print(f"  {name} rep {rep}: first trial at {first:.2f} s, exit at {wall:.2f} s", flush=True)
    rows = []
    for name, label in (
        ("before", "hyperflow, Prefect's ephemeral server started by the first flow run (before)"),
        ("now", "hyperflow, Prefect's server started at the command's start (now)"),
        ("optuna", "Optuna script (peer)"),
    ):
        rows.append([label, statistics.median(firsts[name]), statistics.median(walls[name])])
    ratio = statistics.median(firsts["now"]) / statistics.median(firsts["before"])
    rows.append(["now / before", ratio, statistics.median(walls["now"]) / statistics.median(walls["before"])])
    print_table(
        f"Start-up, 1 trial, cold processes, median of {reps}, s",
        ["", "process start to the first trial", "process start to exit"],
        rows,
    )
    return statistics.median(firsts["now"])


# --------------------------------------------------------------------------- the whole job

SYNTHETIC = {"n_samples": 1500, "n_features": 20, "n_informative": 3, "n_redundant": 2, "flip_y": 0.1}


def data_overrides(name: str, tmp: Path) -> tuple[str, list[str]]:
    """The config and the overrides of a data set (the synthetic one written to a .npz first)."""
    if name == "digits":
        return "conf/digits.yaml", []
    if name == "breast_cancer":
        return "conf/digits.yaml", ["data.source=breast_cancer"]
    if name == "synthetic":
        import numpy as np
        from sklearn.datasets import make_classification

        X, y = make_classification(random_state=0, **SYNTHETIC)
        path = tmp / "synthetic.npz"
        np.savez(path, X=X.astype("float32"), y=y)
        return "conf/digits.yaml", ["data.source=file", f"data.path={path}"]
    raise ValueError(f"unknown data set {name!r}")


def _test_value(stdout: str) -> float | None:
    for line in stdout.splitlines():
        if line.startswith("test"):
            for part in line.split(","):
                if "test_accuracy" in part:
                    return float(part.split("=")[1])
    return None


def optuna_run(
    config: str, overrides: list[str], seed: int, workdir: Path
) -> tuple[float, float, dict[str, Any]]:
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(ROOT / "bench" / "optuna_job.py"), str(ROOT / config), "--seed", str(seed)]
    for o in overrides:
        cmd += ["--set", o]
    start = time.time()
    out = subprocess.run(
        cmd, cwd=workdir, env=_env(workdir / "unused"), capture_output=True, text=True, check=False
    )
    wall = time.time() - start
    if out.returncode != 0:
        raise RuntimeError(f"optuna_job failed ({out.returncode}): {out.stderr[-2000:]}")
    report = json.loads(out.stdout.strip().splitlines()[-1])
    return wall, float(report["test_accuracy"]), report


def whole_job(datasets: list[str], seeds: int, n_trials: int, tmp: Path, *, warm: bool = True) -> bool:
    """hyperflow against Optuna on each data set; `warm`: on a Prefect home used once before, as a
    user's is after their first run (the first run of a home creates Prefect's database)."""
    home = tmp / "prefect-home"
    if warm and not (home / "prefect.db").exists():
        overrides = ["search.n_trials=1", "tracking.register_model=false", "name=bench-warm-up"]
        hyperflow_run(_NOW, tmp / "warm-up-job", home, overrides)
    rows, phase_rows, ok = [], [], True
    for name in datasets:
        config, extra = data_overrides(name, tmp)
        h_runs: list[Run] = []
        o_walls, o_firsts, h_tests, o_tests, h_epochs, o_epochs = [], [], [], [], [], []
        for seed in range(seeds):
            overrides = [*extra, f"seed={seed}", f"search.n_trials={n_trials}", f"name=bench-job-{name}"]
            order = ("hyperflow", "optuna") if seed % 2 == 0 else ("optuna", "hyperflow")
            for who in order:
                wd = tmp / f"job-{name}-{seed}-{who}"
                if who == "hyperflow":
                    run = hyperflow_run(_NOW, wd, home, overrides, config)
                    test = _test_value(run.stdout)
                    h_runs.append(run)
                    h_tests.append(test if test is not None else float("nan"))
                    h_epochs.append(_epochs(wd / "mlflow.db"))
                    wall = run.wall
                else:
                    wall, test, report = optuna_run(config, overrides, seed, wd)
                    o_walls.append(wall)
                    o_firsts.append(float(report["first_trial_seconds"]))
                    o_tests.append(test)
                    o_epochs.append(report["epochs"])
                print(f"  {name} seed {seed} {who}: {wall:.1f} s, test {test}", flush=True)
        hw, ow = statistics.median(r.wall for r in h_runs), statistics.median(o_walls)
        ht, ot = statistics.median(h_tests), statistics.median(o_tests)
        rows.append(
            [name, seeds, hw, ow, hw / ow, ht, ot, statistics.median(h_epochs), statistics.median(o_epochs)]
        )
        phases = [statistics.median(r.phases[i] for r in h_runs) for i in range(3)]
        o_first = statistics.median(o_firsts)
        phase_rows.append([name, *phases, o_first, ow - o_first])
        ok = ok and hw <= ow and ht >= ot
    print_table(
        f"The whole job: {n_trials} trials, cold processes, median over seeds",
        [
            "data",
            "seeds",
            "hyperflow s",
            "Optuna s",
            "ratio",
            "hyperflow test",
            "Optuna test",
            "hyperflow epochs",
            "Optuna epochs",
        ],
        rows,
    )
    print_table(
        "Where the time goes (medians, s): hyperflow's start-up (to the first trial's run), trials (to the "
        "end of the last trial's run) and finish (test, model, registry, plots, exit); Optuna's start-up "
        "(to its first trial) and the rest",
        ["data", "hyperflow start-up", "trials", "finish", "Optuna start-up", "Optuna trials + finish"],
        phase_rows,
    )
    return ok


def _epochs(db: Path) -> float:
    import sqlite3

    with sqlite3.connect(db) as con:
        row = con.execute("SELECT SUM(value) FROM latest_metrics WHERE key = 'epochs_trained'").fetchone()
    return float(row[0] or 0)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--data", default="digits,breast_cancer,synthetic")
    p.add_argument("--startup-only", action="store_true")
    p.add_argument("--job-only", action="store_true")
    p.add_argument("--startup-reps", type=int, default=3)
    args = p.parse_args()
    banner("The whole job", args.quick)
    with tempfile.TemporaryDirectory(prefix="hyperflow-bench-job-") as tmp_name:
        tmp = Path(tmp_name)
        ok = True
        if not args.job_only and not args.quick:  # --quick: one whole job, its phases show the start-up
            first = startup(args.startup_reps, tmp)
            ok = verdict(
                first <= STARTUP_TARGET,
                f"start-up to the first trial {first:.2f} s (target <= {STARTUP_TARGET:g} s)",
            )
        if not args.startup_only:
            datasets = ["digits"] if args.quick else args.data.split(",")
            job_ok = whole_job(
                datasets, 1 if args.quick else args.seeds, 2 if args.quick else 30, tmp, warm=not args.quick
            )
            ok = (
                verdict(job_ok, "the whole job <= 1.0x Optuna's wall time at an equal or better test value")
                and ok
            )


if __name__ == "__main__":
    main()
