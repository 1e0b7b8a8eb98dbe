"""The Optuna side of bench/job.py: what a user would write without hyperflow, as one cold process.

TPESampler (its defaults, seeded) and MedianPruner(n_startup_trials=5, n_warmup_steps=min_epochs - 1)
with in-memory storage drive a plain PyTorch loop over the same MLP (Linear + ReLU layers, Kaiming
normal weights, zero biases), the same split (hyperflow's loader: stratified, standardised with the
training statistics), the same space (categoricals by index), trial seeds, epochs and number of
trials as the config, on one torch thread. It prints one JSON line: the best trial's test accuracy,
its validation value, the epochs trained and the wall time.

    python bench/optuna_job.py CONFIG [--seed N] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

START = time.time()
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def trial_seed(study_seed: int, number: int) -> int:
    # hyperflow.components.search._base.derive_seed("trial", seed, number), without importing skopt.
    digest = hashlib.sha256(f"trial/{study_seed}/{number}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("config")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args()

    import optuna
    import torch
    from torch import nn

    from hyperflow.components.config import load_config
    from hyperflow.components.data import load_dataset

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = load_config(args.config, [*args.overrides, f"seed={args.seed}"])
    data = load_dataset(cfg.data, cfg.seed)
    X_train, y_train = torch.from_numpy(data.X_train), torch.from_numpy(data.y_train)
    X_val, y_val = torch.from_numpy(data.X_val), torch.from_numpy(data.y_val)
    X_test, y_test = torch.from_numpy(data.X_test), torch.from_numpy(data.y_test)
    n_classes = int(y_train.max()) + 1
    fixed = cfg.model.model_dump()
    space = cfg.search.space
    min_epochs = cfg.early_stopping.min_epochs

    def suggest(trial: Any) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for name, spec in space.items():
            d = spec.model_dump()
            if d.get("choices") is not None:
                params[name] = d["choices"][trial.suggest_categorical(name, list(range(len(d["choices"]))))]
            elif d.get("type") == "int" or isinstance(fixed.get(name), int):
                params[name] = trial.suggest_int(name, int(d["low"]), int(d["high"]), log=bool(d.get("log")))
            else:
                params[name] = trial.suggest_float(
                    name, float(d["low"]), float(d["high"]), log=bool(d.get("log"))
                )
        return params

    def build(hidden: list[int]) -> nn.Module:
        layers: list[nn.Module] = []
        width = X_train.shape[1]
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, n_classes))
        net = nn.Sequential(*layers)
        linears = [m for m in net if isinstance(m, nn.Linear)]
        for i, layer in enumerate(linears):
            if i < len(linears) - 1:
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            else:
                nn.init.normal_(layer.weight, 0.0, 1.0 / math.sqrt(layer.in_features))
            nn.init.zeros_(layer.bias)
        return net

    models: dict[int, nn.Module] = {}
    epochs_total = [0]

    first_trial: list[float] = []

    def objective(trial: Any) -> float:
        if not first_trial:
            first_trial.append(time.time() - START)
        params = {**fixed, **suggest(trial)}
        torch.manual_seed(trial_seed(cfg.seed, trial.number))
        net = build(list(params["hidden_layers"]))
        decay = [p for n, p in net.named_parameters() if n.endswith("weight")]
        rest = [p for n, p in net.named_parameters() if not n.endswith("weight")]
        opt = torch.optim.SGD(
            [{"params": decay, "weight_decay": params["l2"]}, {"params": rest, "weight_decay": 0.0}],
            lr=params["learning_rate"],
            momentum=params["momentum"],
        )
        loss_fn = nn.CrossEntropyLoss()
        batch = int(params["batch_size"])
        gen = torch.Generator().manual_seed(trial_seed(cfg.seed, trial.number))
        acc = 0.0
        for epoch in range(int(params["max_epochs"])):
            net.train()
            order = torch.randperm(len(X_train), generator=gen)
            for i in range(0, len(order), batch):
                idx = order[i : i + batch]
                opt.zero_grad()
                loss = loss_fn(net(X_train[idx]), y_train[idx])
                if not math.isfinite(loss.item()):
                    epochs_total[0] += epoch + 1
                    raise optuna.TrialPruned("the loss diverged")
                loss.backward()
                opt.step()
            net.eval()
            with torch.no_grad():
                acc = float((net(X_val).argmax(1) == y_val).float().mean())
            trial.report(acc, epoch)
            if trial.should_prune():
                epochs_total[0] += epoch + 1
                raise optuna.TrialPruned()
        epochs_total[0] += int(params["max_epochs"])
        models[trial.number] = net
        return acc

    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=cfg.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=min_epochs - 1),
    )
    for point in cfg.search.initial_points:  # what hyperflow evaluates first, by index for categoricals
        enq = {}
        for name, value in point.items():
            choices = space[name].model_dump().get("choices") if name in space else None
            enq[name] = choices.index(value) if choices is not None else value
        study.enqueue_trial(enq, skip_if_exists=True)
    study.optimize(objective, n_trials=cfg.search.n_trials, catch=(Exception,))
    best = study.best_trial
    with torch.no_grad():
        test = float((models[best.number](X_test).argmax(1) == y_test).float().mean())
    report = {
        "test_accuracy": test,
        "best_val_accuracy": best.value,
        "epochs": epochs_total[0],
        "seconds": time.time() - START,
        "first_trial_seconds": first_trial[0] if first_trial else None,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
