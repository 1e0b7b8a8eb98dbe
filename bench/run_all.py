"""Run every benchmark, one after the other, each in its own process; `make bench` / `make bench-quick`.

Each script's tables stream through as it runs; a summary of the verdicts and times ends the run.
`--out FILE` also writes the whole output there (Markdown). A benchmark that misses its target
is reported, not an error; one that crashes makes the exit status 1.

    python bench/run_all.py [--quick] [--out FILE] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Cheap and self-contained first; the longest last.
SCRIPTS = (
    "lightning_parity",
    "ask_cost",
    "early_stopping",
    "schedule_curves",
    "overhead",
    "job",
    "time_to_accuracy",
    "search_quality",
    "training_recipe",
    "multi_objective",
    "gpu",
)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="every benchmark's small version (under 20 s each)")
    p.add_argument("--out", type=Path, help="also write the whole output to this file")
    p.add_argument("--only", nargs="+", choices=SCRIPTS, help="run only these")
    args = p.parse_args()
    lines: list[str] = []

    def emit(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    summary = []
    started = time.perf_counter()
    for name in args.only or SCRIPTS:
        cmd = [sys.executable, str(HERE / f"{name}.py"), *(["--quick"] if args.quick else [])]
        emit(f"<!-- python bench/{name}.py{' --quick' if args.quick else ''} -->")
        start = time.perf_counter()
        verdict = "no verdict"
        with subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        ) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                line = line.rstrip("\n")
                emit(line)
                if line.startswith("verdict: "):
                    verdict = line[len("verdict: ") :]
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            verdict = f"CRASHED (exit {proc.returncode})"
        summary.append((name, seconds, verdict, proc.returncode))
        emit("")
    total = time.perf_counter() - started
    emit(f"## Summary{' (--quick)' if args.quick else ''}: {total / 60:.1f} minutes")
    emit("")
    emit("| benchmark | seconds | verdict |")
    emit("|---|---:|---|")
    for name, seconds, verdict, _ in summary:
        emit(f"| {name} | {seconds:.0f} | {verdict.split(' - ')[0]} |")
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    return 1 if any(code != 0 for *_, code in summary) else 0


if __name__ == "__main__":
    sys.exit(main())
