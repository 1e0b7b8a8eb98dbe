"""Record real validation curves of small MLPs on digits, for the curve tests and benchmarks."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "digits_curves.json"

# Fast, slow, unstable and diverging learners, so the tests see every shape a search produces.
CONFIGS: tuple[dict[str, Any], ...] = (
    {"hidden_layers": [64], "optimizer": "sgd", "learning_rate": 1e-3},
    {"hidden_layers": [128, 64], "optimizer": "sgd", "learning_rate": 1e-3},
    {"hidden_layers": [32], "optimizer": "sgd", "learning_rate": 3e-3},
    {"hidden_layers": [128, 64], "optimizer": "sgd", "learning_rate": 1e-2},
    {"hidden_layers": [256, 128], "optimizer": "sgd", "learning_rate": 3e-2},
    {"hidden_layers": [64], "optimizer": "sgd", "learning_rate": 0.1},
    {"hidden_layers": [128, 64], "optimizer": "sgd", "learning_rate": 0.3},
    {"hidden_layers": [32], "optimizer": "adam", "learning_rate": 1e-3},
    {"hidden_layers": [128, 64], "optimizer": "adam", "learning_rate": 1e-3},
    {"hidden_layers": [256, 128], "optimizer": "adam", "learning_rate": 3e-3},
    {"hidden_layers": [64], "optimizer": "adam", "learning_rate": 3e-2},
    {"hidden_layers": [128, 64], "optimizer": "adam", "learning_rate": 0.3},
)


def digits_split(
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Digits split 60/20/20 (stratified), standardised with the training statistics.

    Args:
        seed: Seed of the split.

    Returns:
        Training features and labels, then validation features and labels (the test fifth is
        held out and unused).
    """
    x, y = load_digits(return_X_y=True)
    x_rest, _, y_rest, _ = train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=0.25, random_state=seed, stratify=y_rest
    )
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std[std == 0] = 1.0  # constant border pixels
    return (
        torch.tensor((x_train - mean) / std, dtype=torch.float32),
        torch.tensor(y_train, dtype=torch.long),
        torch.tensor((x_val - mean) / std, dtype=torch.float32),
        torch.tensor(y_val, dtype=torch.long),
    )


def train_curves(
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    hidden_layers: Sequence[int],
    optimizer: str,
    learning_rate: float,
    *,
    epochs: int = 30,
    batch_size: int = 64,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Train one MLP and return its per-epoch validation accuracy and loss.

    Args:
        data: Training and validation tensors from `digits_split`.
        hidden_layers: Hidden layer sizes.
        optimizer: ``sgd`` (momentum 0.9) or ``adam``.
        learning_rate: The optimiser's learning rate.
        epochs: Epochs to train.
        batch_size: Mini-batch size.
        seed: Seed of the initial weights and the batch order.

    Returns:
        ``{"val_accuracy": [...], "val_loss": [...]}``, one value per epoch.
    """
    x_train, y_train, x_val, y_val = data
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    width = x_train.shape[1]
    for size in hidden_layers:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, int(y_train.max()) + 1))
    model = nn.Sequential(*layers)
    opt: torch.optim.Optimizer
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=learning_rate, momentum=0.9)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=learning_rate)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    accuracy: list[float] = []
    loss: list[float] = []
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            opt.zero_grad()
            loss_fn(model(x_train[batch]), y_train[batch]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            logits = model(x_val)
            val_loss = float(loss_fn(logits, y_val))
            val_accuracy = float((logits.argmax(dim=1) == y_val).float().mean())
        # A diverged network gives an infinite or NaN loss; JSON cannot hold either.
        loss.append(round(val_loss, 5) if np.isfinite(val_loss) else 1e6)
        accuracy.append(round(val_accuracy, 5))
    return {"val_accuracy": accuracy, "val_loss": loss}


def record(configs: Sequence[dict[str, Any]] = CONFIGS, *, epochs: int = 30, seed: int = 0) -> dict[str, Any]:
    """Train every configuration once and collect the curves.

    Args:
        configs: Keyword arguments of `train_curves` (hidden_layers, optimizer, learning_rate).
        epochs: Epochs per configuration.
        seed: Seed of the split and of every training run.

    Returns:
        A JSON-ready record: the settings and one entry per configuration with its curves.
    """
    torch.set_num_threads(1)  # repeatable timings and results across machines
    data = digits_split(seed)
    runs = []
    for config in configs:
        runs.append({**config, **train_curves(data, **config, epochs=epochs, seed=seed)})
    return {
        "dataset": "digits",
        "split": "60/20/20 stratified, standardised on train",
        "batch_size": 64,
        "sgd_momentum": 0.9,
        "epochs": epochs,
        "seed": seed,
        "torch": torch.__version__.split("+")[0],
        "runs": runs,
    }


def to_json(result: dict[str, Any]) -> str:
    """The record as JSON with one run a line, small and readable in a diff."""
    head = ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in result.items() if k != "runs")
    runs = ",\n".join("  " + json.dumps(run, separators=(",", ":")) for run in result["runs"])
    return "{\n" + head + ',\n "runs": [\n' + runs + "\n ]\n}\n"


def main(argv: Sequence[str] | None = None) -> None:
    """Record the curves and write them as JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    result = record(epochs=args.epochs, seed=args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(to_json(result))
    for run in result["runs"]:
        print(
            f"{run['optimizer']:>4} lr={run['learning_rate']:<6g} {run['hidden_layers']!s:<10}"
            f" acc {run['val_accuracy'][0]:.3f} -> {run['val_accuracy'][-1]:.3f}"
            f"  loss {run['val_loss'][0]:.3f} -> {run['val_loss'][-1]:.3f}"
        )
    print(f"wrote {args.out} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
