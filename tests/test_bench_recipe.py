"""The training-recipe benchmarks: their --quick runs, and the committed table of schedule curves."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from test_bench import TABLE_HEADER, VERDICT, run_quick

BENCH = ROOT / "bench"

EXPECTED = {
    "schedule_curves": ["digits: the rules against none", "median + after_warmup", "breast_cancer"],
    "training_recipe": ["| digits    |  recipe |", "| synthetic | default |", "narrowed learning_rate"],
}


@pytest.mark.slow
@pytest.mark.parametrize("script", list(EXPECTED))
def test_quick_run_prints_its_tables_and_verdict(script: str, tmp_path: Path) -> None:
    out = run_quick(script, tmp_path)
    assert TABLE_HEADER.search(out), out
    assert len(VERDICT.findall(out)) == 1, out
    for text in EXPECTED[script]:
        assert text in out, f"{text!r} missing from:\n{out}"
    assert not list(tmp_path.glob("mlruns")) and not (tmp_path / "mlflow.db").exists()


def test_the_schedule_curve_table_is_committed_and_as_described() -> None:
    sys.path.insert(0, str(BENCH))
    from schedule_curves import CONFIGS, DATA, EPOCHS, SCHEDULES, load

    table = load(DATA)
    assert set(table["experiments"]) == {"digits", "breast_cancer"}
    for experiment in table["experiments"].values():
        runs = experiment["runs"]
        assert len(runs) >= CONFIGS
        assert len({json.dumps(r["params"], sort_keys=True) for r in runs}) == len(runs), (
            "configurations repeat"
        )
        assert {r["params"]["lr_schedule"] for r in runs} == set(SCHEDULES)
        completed = [r for r in runs if r["state"] == "completed"]
        assert len(completed) >= 0.9 * len(runs)
        assert all(len(r[experiment["metric"]]) == len(r["learning_rate"]) == EPOCHS for r in completed)
    assert DATA.stat().st_size < 300_000
