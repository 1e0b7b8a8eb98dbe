"""What saving `best_model` costs: the pyfunc over the pt2 network against the network alone, side by side.

    python bench/log_model.py [--quick]

The baseline is what hyperflow logged before the pyfunc: `mlflow.pytorch.save_model` in the pt2
format with a tensor signature (torch.export inside). The pyfunc adds the preparation JSON, the
code file, an output signature and the input example. Both run in one process,
interleaved, after one warm-up each (the first torch.export of a process costs about a second
more, whichever path pays it).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import hyperflow  # noqa: E402, F401 - runtime defaults: nothing reaches the network


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats instead of 9")
    args = parser.parse_args()
    repeats = 3 if args.quick else 9

    import torch

    from hyperflow.components.adapters._base import raw_example, scoring_model
    from hyperflow.components.config import DataConfig
    from hyperflow.components.data import load_dataset
    from hyperflow.components.lifecycle import served_inputs
    from hyperflow.components.registry import _save_network_model, export_network, save_served_model

    torch.set_num_threads(1)
    data = load_dataset(DataConfig(source="digits"), 0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    model = scoring_model(net, data)
    example = raw_example(data)

    def network_only(folder: Path) -> None:
        _save_network_model(model, example, folder)

    def served(folder: Path) -> None:
        save_served_model(model, example, path=folder, **served_inputs(data))

    def export_alone(folder: Path) -> None:
        export_network(model, example, folder)

    paths = {
        "pt2 network alone (before)": network_only,
        "pyfunc + pt2 (now)": served,
        "torch.export alone": export_alone,
    }
    times: dict[str, list[float]] = {k: [] for k in paths}
    with tempfile.TemporaryDirectory(prefix="hyperflow-bench-log-") as tmp:
        for i in range(repeats + 1):
            for name, save in paths.items():
                start = time.perf_counter()
                save(Path(tmp) / f"{i}-{len(times[name])}-{abs(hash(name))}")
                if i > 0:  # the first round warms torch.export and MLflow's imports
                    times[name].append(time.perf_counter() - start)
    base = statistics.median(times["pt2 network alone (before)"])
    print("| saving best_model (digits MLP) | median s | ratio to before |")
    print("|---|---|---|")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"| {name} | {med:.3f} | {med / base:.2f}x |")
    now = statistics.median(times["pyfunc + pt2 (now)"])
    ok = now < 1.0 and now / base < 2.0
    print(f"repeats: {repeats} after one warm-up; OMP/torch threads 1")
    print(
        f"verdict: {'PASS' if ok else 'MISS'} - the pyfunc saves in {now:.2f} s, {now / base:.2f}x the network alone"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
