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
    "early_stopping": [
        "digits: 40 configurations",
        "breast_cancer: 40 configurations",
        "| asha ",
        "| hyperband ",
    ],
    "search_quality": ["branin (optimum 0.397887)", "optuna-gp"],
    "time_to_accuracy": ["Optuna: TPE + MedianPruner", "breast_cancer", "| bayes + asha "],
    "multi_objective": ["| genetic (NSGA-II) ", "| bayes (ParEGO) ", "every strategy read the same value"],
    "gpu": ["train_trial throughput", "| default MLP [128, 64] on digits |    CPU |"],
}

TABLE_HEADER = re.compile(r"^\|.+\|$\n^\|(-+\|)+$", re.MULTILINE)
VERDICT = re.compile(r"^verdict: (PASS|MISS) - \S", re.MULTILINE)


def run_quick(script: str, cwd: Path) -> str:
    env = {**os.environ, "TMPDIR": str(cwd)}
    proc = subprocess.run(
        [sys.executable, str(BENCH / f"{script}.py"), "--quick"],
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
