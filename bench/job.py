"""The whole job as a user waits for it: `hyperflow run` against an Optuna script, cold processes.

Two tables, every figure from processes started by this script, side by side:

1. Start-up: process start to the first trial's MLflow run (`hyperflow run`, one trial), with
   Prefect's server started in the background at the beginning of the command (now) against
   Prefect's own ephemeral server, started when the flow first asks for a client (before),
   alternating, in fresh working directories (a new `mlflow.db` each) on a Prefect home that
   has been used once.
2. The whole job: the default 30-trial digits search as `hyperflow run` (process start to exit)
   against `bench/optuna_job.py`: Optuna's TPESampler (its defaults, seeded) and
   MedianPruner(n_startup_trials=5, n_warmup_steps=min_epochs - 1), in-memory storage, driving a
   plain PyTorch loop over the same MLP, split, space, trial seeds and number of trials on one
   torch thread. Both report the best trial's test value. On digits, breast_cancer and a
   synthetic task unlike digits (`make_classification`: 20 features, 3 informative, 10% label
   noise; written to a .npz that both read).

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


def _trial_starts(db: Path) -> list[float]:
    """Start times (s since the epoch) of the trial runs in an MLflow store, in order."""
    import sqlite3

    with sqlite3.connect(db) as con:
        rows = con.execute(
            "SELECT r.start_time FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
            "WHERE t.key = 'hyperflow.role' AND t.value = 'trial' ORDER BY r.start_time"
        ).fetchall()
    return [row[0] / 1000 for row in rows]


def hyperflow_run(
    code: str, workdir: Path, home: Path, overrides: list[str], config: str = "conf/digits.yaml"
) -> tuple[float, float | None, str]:
    """(wall seconds, seconds to the first trial's run, stdout) of one cold `hyperflow run`."""
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-c", code, "run", str(ROOT / config)]
    for o in overrides:
        cmd += ["--set", o]
    start = time.time()
    out = subprocess.run(cmd, cwd=workdir, env=_env(home), capture_output=True, text=True, check=False)
    wall = time.time() - start
    if out.returncode != 0:
        raise RuntimeError(f"hyperflow run failed ({out.returncode}): {out.stderr[-2000:]}")
    starts = _trial_starts(workdir / "mlflow.db")
    return wall, (starts[0] - start) if starts else None, out.stdout


def startup(reps: int, tmp: Path) -> float:
    home = tmp / "prefect-home"
    overrides = ["search.n_trials=1", "tracking.register_model=false", "name=bench-startup"]
    hyperflow_run(_NOW, tmp / "warm-up", home, overrides)  # the Prefect home's database, created once
    rows, firsts = [], {"now": [], "before": []}
    walls: dict[str, list[float]] = {"now": [], "before": []}
    for rep in range(reps):
        for name, code in (
            (("before", _BEFORE), ("now", _NOW)) if rep % 2 else (("now", _NOW), ("before", _BEFORE))
        ):
            wall, first, _ = hyperflow_run(code, tmp / f"startup-{name}-{rep}", home, overrides)
            assert first is not None
            firsts[name].append(first)
            walls[name].append(wall)
            print(f"  {name} rep {rep}: first trial at {first:.2f} s, exit at {wall:.2f} s", flush=True)
    for name, label in (
        ("before", "Prefect's ephemeral server at the first flow run (before)"),
        ("now", "Prefect's server started in the background at the command's start"),
    ):
        rows.append([label, statistics.median(firsts[name]), statistics.median(walls[name])])
    ratio = statistics.median(firsts["now"]) / statistics.median(firsts["before"])
    rows.append(["now / before", ratio, statistics.median(walls["now"]) / statistics.median(walls["before"])])
    print_table(
        f"Start-up of `hyperflow run` (1 trial), median of {reps}, s",
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


def whole_job(datasets: list[str], seeds: int, n_trials: int, tmp: Path) -> bool:
    home = tmp / "prefect-home"
    rows, ok = [], True
    for name in datasets:
        config, extra = data_overrides(name, tmp)
        h_walls, o_walls, h_tests, o_tests, h_epochs, o_epochs = [], [], [], [], [], []
        for seed in range(seeds):
            overrides = [*extra, f"seed={seed}", f"search.n_trials={n_trials}", f"name=bench-job-{name}"]
            order = ("hyperflow", "optuna") if seed % 2 == 0 else ("optuna", "hyperflow")
            for who in order:
                wd = tmp / f"job-{name}-{seed}-{who}"
                if who == "hyperflow":
                    wall, _, stdout = hyperflow_run(_NOW, wd, home, overrides, config)
                    test = _test_value(stdout)
                    h_walls.append(wall)
                    h_tests.append(test if test is not None else float("nan"))
                    h_epochs.append(_epochs(wd / "mlflow.db"))
                else:
                    wall, test, report = optuna_run(config, overrides, seed, wd)
                    o_walls.append(wall)
                    o_tests.append(test)
                    o_epochs.append(report["epochs"])
                print(f"  {name} seed {seed} {who}: {wall:.1f} s, test {test}", flush=True)
        hw, ow = statistics.median(h_walls), statistics.median(o_walls)
        ht, ot = statistics.median(h_tests), statistics.median(o_tests)
        rows.append(
            [name, seeds, hw, ow, hw / ow, ht, ot, statistics.median(h_epochs), statistics.median(o_epochs)]
        )
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
        if not args.job_only:
            first = startup(1 if args.quick else args.startup_reps, tmp)
            ok = verdict(
                first <= STARTUP_TARGET,
                f"start-up to the first trial {first:.2f} s (target <= {STARTUP_TARGET:g} s)",
            )
        if not args.startup_only:
            datasets = ["digits"] if args.quick else args.data.split(",")
            job_ok = whole_job(datasets, 1 if args.quick else args.seeds, 3 if args.quick else 30, tmp)
            ok = (
                verdict(job_ok, "the whole job <= 1.0x Optuna's wall time at an equal or better test value")
                and ok
            )


if __name__ == "__main__":
    main()
