"""Accurate and small: two-objective search (val_accuracy, param_count) on digits, as hypervolume.

NSGA-II (`strategy: genetic` with `search.objectives`) and ParEGO over the Bayes strategy
(`strategy: bayes`) against random search, each at the same budget of trials, over seeds, through
`make_strategy` and ask/tell as the study drives them. Every trial is real training of the built-in
MLP on digits (`train_trial`); the space is discrete (architecture x optimiser x learning rate), so
each point is trained once, with one seed, and every strategy reads the same value for it: the
strategies differ only in which points they choose. The hypervolume is of the finished trials'
front against the fixed reference point (accuracy 0, the space's largest param_count), divided by
the reference box (1 x that count), so 1.0 would be 100% accuracy with no parameters.

    python bench/multi_objective.py [--quick] [--trials 40] [--seeds 5]
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from _common import banner, median_iqr, parser, print_table, torch_threads_one, verdict

WIDTHS = [4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256]
ARCHITECTURES = [[w] for w in WIDTHS] + [[w, w // 2] for w in (16, 32, 64, 96, 128, 256)]
RATES = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.3]
OPTIMIZERS = ["sgd", "adam", "adamw"]
STRATEGIES = ("random", "genetic", "bayes")
LABELS = {"random": "random", "genetic": "genetic (NSGA-II)", "bayes": "bayes (ParEGO)"}


def experiment(strategy: str, seed: int, trials: int, epochs: int) -> Any:
    from hyperflow.components.config import validate_config

    return validate_config(
        {
            "seed": seed,
            "data": {"source": "digits"},
            "model": {"max_epochs": epochs, "hidden_layers": [32]},
            "search": {
                "strategy": strategy,
                "n_trials": trials,
                "objectives": [{"metric": "val_accuracy"}, {"metric": "param_count"}],
                "space": {
                    "hidden_layers": {"choices": ARCHITECTURES},
                    "optimizer": {"choices": OPTIMIZERS},
                    "learning_rate": {"choices": RATES},
                },
            },
            "early_stopping": {"kind": "none"},
        }
    )


class Evaluator:
    """Real training of each point, once: (val_accuracy, param_count) by the point's key."""

    def __init__(self, cfg: Any) -> None:
        from hyperflow.components.data import load_dataset
        from hyperflow.components.trial import TrialSpec

        self.data = load_dataset(cfg.data, cfg.seed)
        self.spec = TrialSpec.from_config(cfg, num_threads=1)
        self.cache: dict[str, tuple[float, float]] = {}
        self.seconds = 0.0

    def __call__(self, params: dict[str, Any]) -> tuple[float, float]:
        from hyperflow.components.search._space import params_key
        from hyperflow.components.training import train_trial

        key = params_key(params)
        if key not in self.cache:
            start = time.perf_counter()
            result = train_trial(self.data, params, self.spec, seed=0)
            self.seconds += time.perf_counter() - start
            accuracy = result.value if result.value is not None else 0.0
            self.cache[key] = (float(accuracy), float(result.param_count))
        return self.cache[key]


def search(
    strategy: str, seed: int, trials: int, epochs: int, evaluate: Evaluator
) -> list[tuple[float, float]]:
    """One study's told values, in order, with its strategy built as the study builds it."""
    from hyperflow.components.search import make_strategy

    s = make_strategy(experiment(strategy, seed, trials, epochs))
    told = []
    for _ in range(trials):
        (params,) = s.ask(1)
        values = evaluate(params)
        s.tell(params, values[0], objectives=values)
        told.append(values)
    return told


def normalised_hypervolume(told: list[tuple[float, float]], largest: float) -> float:
    from hyperflow.components.pareto import hypervolume, to_losses

    losses = [to_losses(v, ("max", "min")) for v in told]
    return hypervolume(losses, (0.0, largest)) / largest


def log_hypervolume(told: list[tuple[float, float]], smallest: float, largest: float) -> float:
    """The same on a log10 param_count axis from the smallest count to the largest (a secondary view:
    the linear one is all but decided by the smallest nets)."""
    import math

    from hyperflow.components.pareto import hypervolume

    span = math.log10(largest / smallest)
    losses = [(-a, math.log10(c / smallest)) for a, c in told]
    return hypervolume(losses, (0.0, span)) / span


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=4)
    args = p.parse_args()
    if args.quick:
        args.trials, args.seeds, args.epochs = 10, 2, 1
    torch_threads_one()
    banner("Two objectives on digits: hypervolume of (val_accuracy, param_count)", args.quick)
    from hyperflow.components.model import expected_param_count

    evaluate = Evaluator(experiment("random", 0, args.trials, args.epochs))
    data = evaluate.data
    counts = [expected_param_count(data.n_features, a, data.n_outputs) for a in ARCHITECTURES]
    largest, smallest = float(max(counts)), float(min(counts))
    size = len(ARCHITECTURES) * len(RATES) * len(OPTIMIZERS)
    print(
        f"space: {len(ARCHITECTURES)} architectures x {len(OPTIMIZERS)} optimisers x {len(RATES)} learning rates "
        f"= {size} points; "
        f"{args.trials} trials x {args.seeds} seeds per strategy, {args.epochs} epochs a trial; "
        f"reference point (accuracy 0, param_count {largest:,.0f})"
    )
    hv: dict[str, list[float]] = {s: [] for s in STRATEGIES}
    log_hv: dict[str, list[float]] = {s: [] for s in STRATEGIES}
    ask_seconds: dict[str, float] = dict.fromkeys(STRATEGIES, 0.0)
    for seed in range(args.seeds):
        for strategy in STRATEGIES:
            trained = evaluate.seconds
            start = time.perf_counter()
            told = search(strategy, seed, args.trials, args.epochs, evaluate)
            ask_seconds[strategy] += time.perf_counter() - start - (evaluate.seconds - trained)
            hv[strategy].append(normalised_hypervolume(told, largest))
            log_hv[strategy].append(log_hypervolume(told, smallest, largest))
    # The front of every point any run trained: the best a run could have found among them.
    best = normalised_hypervolume(list(evaluate.cache.values()), largest)
    rows = []
    base = statistics.median(hv["random"])
    for strategy in STRATEGIES:
        med, q1, q3 = median_iqr(hv[strategy])
        rows.append(
            [
                LABELS[strategy],
                f"{med:.4f}",
                f"[{q1:.4f}, {q3:.4f}]",
                f"{med / base:.3f}" if base else None,
                f"{(best - med) / (best - base):.2f}" if best > base else None,
                " ".join(f"{v:.4f}" for v in hv[strategy]),
                ask_seconds[strategy] / args.seeds,
            ]
        )
    print_table(
        "Normalised hypervolume (higher is better), median over seeds",
        ["strategy", "median", "IQR", "x random", "gap / random's gap", "per seed", "strategy s/study"],
        rows,
    )
    log_rows = []
    for strategy in STRATEGIES:
        med, q1, q3 = median_iqr(log_hv[strategy])
        ratio = med / statistics.median(log_hv["random"])
        log_rows.append([LABELS[strategy], f"{med:.4f}", f"[{q1:.4f}, {q3:.4f}]", f"{ratio:.3f}"])
    print_table(
        "The same on a log10 param_count axis (secondary; not the target)",
        ["strategy", "median", "IQR", "x random"],
        log_rows,
    )
    print(
        f"hypervolume of the front of every point trained by any run: {best:.4f}; the gap is that minus "
        "a strategy's median (lower is better)"
    )
    print(
        f"{len(evaluate.cache)} distinct points trained ({evaluate.seconds:.0f} s of training); "
        "every strategy read the same value for a point"
    )
    nsga, parego = statistics.median(hv["genetic"]), statistics.median(hv["bayes"])
    verdict(
        nsga >= base and parego >= base,
        f"median hypervolume: NSGA-II {nsga:.4f}, ParEGO {parego:.4f}, random {base:.4f} "
        f"(target: both >= random)",
    )


if __name__ == "__main__":
    main()
