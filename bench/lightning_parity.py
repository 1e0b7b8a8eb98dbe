"""Lightning parity: one trial through `train_trial` against a plain PyTorch loop doing the same work.

Both train the same MLP from the same initial weights on the same mini-batches for the same epochs,
with the same full-batch validation after every epoch, on one torch thread. Runs are interleaved
(plain, Lightning, Lightning, plain, ...) so that load on the machine hits both alike; the ratio
of the medians is what counts. The final losses must agree: it is the same computation.

    python bench/lightning_parity.py [--quick]
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

from _common import banner, load_experiment, parser, print_table, verdict

TARGET = 1.3
# (label, overrides of conf/digits.yaml's model)
CASES: list[tuple[str, dict[str, Any]]] = [
    ("default: [128, 64], batch 64, 30 epochs", {}),
    ("small: [32], batch 128, 30 epochs", {"hidden_layers": [32], "batch_size": 128}),
    ("large: [256, 128], batch 32, 30 epochs", {"hidden_layers": [256, 128], "batch_size": 32}),
]


def plain_loop(data: Any, values: dict[str, Any], seed: int) -> tuple[float, dict[str, float]]:
    """The trial as a plain PyTorch loop: the loop a user would write without Lightning.

    Returns:
        Wall seconds, and the last epoch's train_loss, val_loss and val_accuracy.
    """
    import torch
    from torch import nn

    from hyperflow.components.batches import TensorBatches, split_tensors
    from hyperflow.components.model import MLP

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        start = time.perf_counter()
        (x_tr, y_tr), (x_va, y_va) = split_tensors(data, "train"), split_tensors(data, "val")
        model = MLP(
            data.n_features,
            data.n_outputs,
            values["hidden_layers"],
            values["activation"],
            values["dropout"],
            values["batch_norm"],
            values["init"],
        )
        decay = [p for n, p in model.named_parameters() if n.endswith("weight") and p.ndim > 1]
        other = [p for n, p in model.named_parameters() if not (n.endswith("weight") and p.ndim > 1)]
        opt = torch.optim.SGD(
            [{"params": decay, "weight_decay": values["l2"]}, {"params": other, "weight_decay": 0.0}],
            lr=values["learning_rate"],
            momentum=values["momentum"],
        )
        loss_fn = nn.CrossEntropyLoss()
        batches = TensorBatches(x_tr, y_tr, values["batch_size"], shuffle=True, seed=seed)
        metrics: dict[str, float] = {}
        for _ in range(values["max_epochs"]):
            model.train()
            total, count = torch.zeros(()), 0
            for x, y in batches:
                loss = loss_fn(model(x), y)
                total += loss.detach() * len(y)
                count += len(y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                out = model(x_va)
                metrics = {
                    "train_loss": float(total / count),
                    "val_loss": float(loss_fn(out, y_va)),
                    "val_accuracy": float((out.argmax(dim=1) == y_va).float().mean()),
                }
        return time.perf_counter() - start, metrics


def lightning_trial(data: Any, spec: Any, seed: int) -> tuple[float, dict[str, float]]:
    """The same trial through hyperflow's `train_trial` (Lightning)."""
    from hyperflow.components.training import train_trial

    start = time.perf_counter()
    result = train_trial(data, {}, spec, seed=seed)
    seconds = time.perf_counter() - start
    if result.state != "completed":
        raise RuntimeError(f"the Lightning trial ended {result.state}: {result.error}")
    return seconds, {k: v[-1] for k, v in result.history.items()}


def main() -> None:
    args = parser(__doc__).parse_args()
    import torch

    torch.set_num_threads(1)
    banner("Lightning parity: train_trial vs a plain PyTorch loop", args.quick)
    from hyperflow.components.data import load_dataset
    from hyperflow.components.trial import TrialSpec

    repeats = 5 if args.quick else 15
    cases = CASES[:1] if args.quick else CASES
    base = load_experiment()
    data = load_dataset(base.data, base.seed)
    rows: list[list[Any]] = []
    default_ratio, all_agree = math.nan, True
    for label, model in cases:
        # No initial points: digits.yaml's would leave the case's fixed hidden_layers outside the space.
        cfg = load_experiment(
            overrides=["search.initial_points=[]", *[f"model.{k}={v}" for k, v in model.items()]]
        )
        spec = TrialSpec.from_config(cfg, num_threads=1)
        values = spec.resolve({})
        plain_t, light_t, ratios, gaps = [], [], [], []
        # One untimed round each: first-call costs (imports, allocator warm-up) are not the loop's.
        plain_loop(data, values, seed=10_000)
        lightning_trial(data, spec, seed=10_000)
        for r in range(repeats):
            seed = r
            order = ("plain", "lightning") if r % 2 == 0 else ("lightning", "plain")
            got: dict[str, tuple[float, dict[str, float]]] = {}
            for which in order:
                got[which] = (
                    plain_loop(data, values, seed) if which == "plain" else lightning_trial(data, spec, seed)
                )
            plain_t.append(got["plain"][0])
            light_t.append(got["lightning"][0])
            ratios.append(got["lightning"][0] / got["plain"][0])
            gaps.append(
                max(abs(got["plain"][1][k] - got["lightning"][1][k]) for k in ("train_loss", "val_loss"))
            )
        ratio = statistics.median(light_t) / statistics.median(plain_t)
        agree = max(gaps) <= 1e-5
        all_agree &= agree
        if not rows:
            default_ratio = ratio
        epochs = values["max_epochs"]
        rows.append(
            [
                label,
                repeats,
                statistics.median(plain_t) * 1000,
                statistics.median(light_t) * 1000,
                (statistics.median(light_t) - statistics.median(plain_t)) * 1000 / epochs,
                ratio,
                min(ratios),
                max(ratios),
                f"{max(gaps):.1e}",
            ]
        )
    print_table(
        "One trial, interleaved repeats: median wall time",
        [
            "trial (digits)",
            "repeats",
            "plain ms",
            "train_trial ms",
            "extra ms/epoch",
            "ratio",
            "min",
            "max",
            "max loss diff",
        ],
        rows,
    )
    print()
    verdict(
        default_ratio <= TARGET and all_agree,
        f"train_trial takes {default_ratio:.2f}x the plain loop on the default trial (target <= {TARGET}); "
        f"final losses {'agree' if all_agree else 'DIFFER'} (max |diff| <= 1e-5)",
    )


if __name__ == "__main__":
    main()
