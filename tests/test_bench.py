"""Every benchmark's --quick run, in its own process: it finishes and prints its tables and verdict.

Figures are not asserted (they are timings on a shared machine); what is checked is what must
hold whatever the load: the tables, the verdict line, and each script's own consistency checks.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

BENCH = ROOT / "bench"

# script -> lines its output must contain (besides a table and a verdict)
EXPECTED = {
    "lightning_parity": ["final losses agree"],
    "ask_cost": ["ours and direct skopt asked the same points: yes"],
    "overhead": ["the same trials (values) in every mode: yes", "One-time costs"],
    "job": ["The whole job: 2 trials", "Where the time goes", "| digits "],
    "early_stopping": [
        "digits: 40 configurations",
        "breast_cancer: 40 configurations",
        "| asha ",
        "| hyperband ",
    ],
    "search_quality": ["branin (optimum 0.397887)", "optuna-gp"],
    # A study's default (search.lookahead: true) is the bench's: hyperflow asks through it.
    "time_to_accuracy": [
        "Optuna: TPE + MedianPruner",
        "breast_cancer",
        "| bayes + asha ",
        "hyperflow asks through the lookahead)",
        "stop rules under bayes (GP, lookahead)",
    ],
    "multi_objective": [
        "| genetic (NSGA-II) ",
        "| bayes (EHVI, the default) ",
        "| bayes, multi_objective: parego ",
        "every strategy read the same value",
        "asked through the lookahead",  # as a study asks by default
    ],
    "gpu": ["train_trial throughput", "| default MLP [128, 64] on digits |    CPU |"],
}

TABLE_HEADER = re.compile(r"^\|.+\|$\n^\|(-+\|)+$", re.MULTILINE)
VERDICT = re.compile(r"^verdict: (PASS|MISS) - \S", re.MULTILINE)


def run_quick(script: str, cwd: Path, *args: str) -> str:
    env = {**os.environ, "TMPDIR": str(cwd)}
    proc = subprocess.run(
        [sys.executable, str(BENCH / f"{script}.py"), "--quick", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (
        f"{script} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    )
    return proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("script", list(EXPECTED))
def test_quick_run_prints_its_tables_and_verdict(
    script: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if script == "overhead":
        # Its flows run against the session's Prefect server (PREFECT_API_URL), not an ephemeral one.
        request.getfixturevalue("prefect_server")
    out = run_quick(script, tmp_path)
    assert TABLE_HEADER.search(out), out
    assert len(VERDICT.findall(out)) == 1, out
    for text in EXPECTED[script]:
        assert text in out, f"{text!r} missing from:\n{out}"
    assert not list(tmp_path.glob("mlruns")) and not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_time_to_accuracy_asks_after_each_result_when_told(tmp_path: Path) -> None:
    # search.lookahead: false, the way every time-to-accuracy table was measured before stop 29.
    out = run_quick("time_to_accuracy", tmp_path, "--stop-rules-only", "--no-lookahead")
    assert "stop rules under bayes (GP, asked after each result)" in out, out
    assert "| bayes + asha " in out and len(VERDICT.findall(out)) == 1, out


@pytest.mark.slow
def test_time_to_accuracy_asks_as_a_parallel_study_when_told(tmp_path: Path) -> None:
    out = run_quick("time_to_accuracy", tmp_path, "--no-stop-rules", "--n-parallel", "2")
    assert "through the lookahead, as 2 trials at once" in out, out
    assert len(VERDICT.findall(out)) == 1, out
    # Without the lookahead a parallel study's asks depend on timing: nothing to simulate.
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH / "time_to_accuracy.py"),
            "--quick",
            "--no-lookahead",
            "--n-parallel",
            "2",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "--n-parallel" in proc.stderr and "--no-lookahead" in proc.stderr


@pytest.mark.slow
def test_search_quality_runs_the_default_bayes_through_the_lookahead_when_named(tmp_path: Path) -> None:
    out = run_quick("search_quality", tmp_path, "--methods", "bayes-GP,bayes-GP-lookahead")
    assert "| bayes-GP " in out and "| bayes-GP-lookahead " in out, out


def test_the_curve_table_is_committed_and_as_described() -> None:
    sys.path.insert(0, str(BENCH))
    from early_stopping import CONFIGS, DATA, EPOCHS, load

    table = load(DATA)
    assert set(table["experiments"]) == {"digits", "breast_cancer"}
    for experiment in table["experiments"].values():
        runs = experiment["runs"]
        assert len(runs) >= CONFIGS
        assert len({json_key(r["params"]) for r in runs}) == len(runs), "configurations repeat"
        completed = [r for r in runs if r["state"] == "completed"]
        assert len(completed) >= 0.9 * len(runs)
        assert all(len(r[experiment["metric"]]) == EPOCHS for r in completed)
    assert DATA.stat().st_size < 200_000


def json_key(params: dict) -> str:  # type: ignore[type-arg]
    import json

    return json.dumps(params, sort_keys=True)


def test_the_multi_objective_bands_add_up_to_the_hypervolume_gap() -> None:
    sys.path.insert(0, str(BENCH))
    from multi_objective import band_losses, log_hypervolume, normalised_hypervolume, zdt

    best = [(0.5, 100.0), (0.8, 400.0), (0.9, 2000.0)]
    told = [(0.4, 100.0), (0.85, 1000.0)]
    edges = [100.0, 1000.0, 10000.0]
    # by hand: below 1,000 the gap is 0.1 over [100, 400) and 0.4 over [400, 1000); above, -0.05
    # over [1000, 2000) (told is ahead there) and 0.05 over [2000, 10000); per 10,000
    assert band_losses(told, best, edges, log=False) == pytest.approx([0.027, 0.035])
    gap = normalised_hypervolume(best, 10000.0) - normalised_hypervolume(told, 10000.0)
    assert sum(band_losses(told, best, edges, log=False)) == pytest.approx(gap)
    log_gap = log_hypervolume(best, 100.0, 10000.0) - log_hypervolume(told, 100.0, 10000.0)
    assert sum(band_losses(told, best, edges, log=True)) == pytest.approx(log_gap)
    assert zdt("zdt1", [0.25, 0, 0, 0, 0]) == pytest.approx((0.25, 0.5))
    assert zdt("zdt2", [0.5, 0, 0, 0, 0]) == pytest.approx((0.5, 0.75))
