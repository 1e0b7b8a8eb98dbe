"""The training recipe: the default search against one with `lr_schedule` searched and the LR range test first.

On digits (conf/digits.yaml) and on a synthetic task (scikit-learn's make_classification: 1,800
rows, 30 features of which 12 informative, 5 classes of 2 clusters each, 2% of labels flipped;
written to a temporary .npz, nothing downloaded), the same budget of trials is searched twice per
seed, with the same data split and the same trial seeds:

- default: conf/digits.yaml's search as shipped (bayes GP, 30 trials, curve_fit);
- recipe: the same, plus `search.space.lr_schedule: {choices: [none, step, exponential, cosine,
  one_cycle]}` and `search.heuristic_start: lr_range_test` (the range test narrows
  search.space.learning_rate, its suggestion is the first trial).

Both run hyperflow's search loop without Prefect or MLflow (ask, train with the stop rule's
snapshot, tell), the recipe's after the range test (`components/heuristic.py`'s rule, as a study
applies it). Reported: the best validation accuracy among completed trials, median of 5 seeds.

    python bench/training_recipe.py [--quick]
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import (
    DIGITS,
    banner,
    load_experiment,
    median_iqr,
    parser,
    print_table,
    torch_threads_one,
    verdict,
)

SCHEDULES = "[none, step, exponential, cosine, one_cycle]"
RECIPE = [f"search.space.lr_schedule={{choices: {SCHEDULES}}}", "search.heuristic_start=lr_range_test"]


@dataclass
class Search:
    best: float | None = None
    best_params: dict[str, Any] | None = None
    epochs: int = 0
    pruned: int = 0
    seconds: float = 0.0
    range_test_seconds: float = 0.0
    narrowed: tuple[float, float] | None = None
    suggestion: float | None = None
    schedules: list[str] = field(default_factory=list)


def synthetic_task(folder: Path) -> Path:
    """A 5-class task of 30 features (12 informative) as an .npz file."""
    import numpy as np
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=1800,
        n_features=30,
        n_informative=12,
        n_redundant=6,
        n_classes=5,
        n_clusters_per_class=2,
        class_sep=1.0,
        flip_y=0.02,
        random_state=0,
    )
    path = folder / "synthetic.npz"
    np.savez(path, X=x.astype(np.float32), y=y)
    return path


def search(cfg: Any, data: Any, seed: int) -> Search:
    """One search of `cfg` with study seed `seed`: the loop a study runs, without Prefect or MLflow."""
    from hyperflow.components.curves import make_stop_rule
    from hyperflow.components.heuristic import narrowed_config
    from hyperflow.components.lr_find import configured_bounds, narrow, range_test
    from hyperflow.components.names import PRUNED
    from hyperflow.components.search import make_strategy
    from hyperflow.components.study import TrialLedger, TrialRecord, trial_seed
    from hyperflow.components.training import train_trial
    from hyperflow.components.trial import TrialSpec

    cfg = cfg.model_copy(update={"seed": seed})
    out = Search()
    start = time.perf_counter()
    searched = cfg
    if cfg.search.heuristic_start == "lr_range_test":
        result = range_test(cfg, data)
        narrowed = narrow(result.suggestion, configured_bounds(cfg))
        searched = narrowed_config(cfg, narrowed)
        out.range_test_seconds = time.perf_counter() - start
        out.narrowed, out.suggestion = (narrowed.low, narrowed.high), narrowed.suggestion
    rule = make_stop_rule(cfg)
    # The study's ledger tells the strategy and the stop rule, as Study.record does.
    ledger = TrialLedger(make_strategy(searched), rule, cfg.search.mode)
    spec = TrialSpec.from_config(cfg, num_threads=1)
    for number in range(cfg.search.n_trials):
        (params,) = ledger.strategy.ask(1)
        seed_of_trial = trial_seed(seed, number)
        result = train_trial(data, params, spec, seed=seed_of_trial, stop_policy=rule.snapshot(number))
        record = TrialRecord.finished(
            number=number,
            params=params,
            seed=seed_of_trial,
            run_id="",
            state=result.state,
            value=result.value,
            curve=result.curve,
            epochs_trained=result.epochs_trained,
            error=result.error,
        )
        ledger.add(record)
        out.epochs += result.epochs_trained
        out.pruned += record.state == PRUNED
        out.schedules.append(str(params.get("lr_schedule", cfg.model.lr_schedule)))
    best = ledger.best
    if best is not None:  # completed trials only
        out.best, out.best_params = best.value, best.params
    out.seconds = time.perf_counter() - start
    return out


def main() -> None:
    args = parser(__doc__).parse_args()
    from threadpoolctl import threadpool_limits

    from hyperflow.components.data import load_dataset

    threadpool_limits(limits=1, user_api="blas")
    torch_threads_one()
    banner(
        "Training recipe: default search vs lr_schedule searched + heuristic_start lr_range_test", args.quick
    )
    seeds = [0] if args.quick else [0, 1, 2, 3, 4]
    quick = [
        "search.n_trials=4",
        "model.max_epochs=6",
        "search.space.max_epochs={low: 4, high: 6, type: int}",
    ]
    quick += ["search.bayes.n_initial_points=2"]
    rows, seed_rows, notes, ok_all = [], [], [], True
    with tempfile.TemporaryDirectory(prefix="hyperflow-bench-recipe-") as tmp:
        experiments = {
            "digits": [],
            "synthetic": [
                "name=synthetic-mlp",
                "data.source=file",
                f"data.path={synthetic_task(Path(tmp))}",
            ],
        }
        for name, where in experiments.items():
            base = load_experiment(DIGITS, [*where, *(quick if args.quick else [])])
            data = load_dataset(base.data, base.seed)
            variants = {
                "default": base,
                "recipe": load_experiment(DIGITS, [*where, *RECIPE, *(quick if args.quick else [])]),
            }
            outcomes = {label: [search(cfg, data, s) for s in seeds] for label, cfg in variants.items()}
            for label, outs in outcomes.items():
                bests = [o.best for o in outs if o.best is not None]
                med, q1, q3 = median_iqr(bests) if bests else (float("nan"),) * 3
                rows.append(
                    [
                        name,
                        label,
                        variants[label].search.n_trials,
                        med,
                        f"{q1:.4f}-{q3:.4f}",
                        statistics.median(o.epochs for o in outs),
                        statistics.median(o.pruned for o in outs),
                        statistics.median(o.seconds for o in outs),
                        statistics.median(o.range_test_seconds for o in outs) if label == "recipe" else None,
                    ]
                )
            for s, d, r in zip(seeds, outcomes["default"], outcomes["recipe"], strict=True):
                seed_rows.append(
                    [
                        name,
                        s,
                        d.best,
                        r.best,
                        None if r.suggestion is None else f"{r.suggestion:.3g}",
                        None if r.narrowed is None else f"[{r.narrowed[0]:.3g}, {r.narrowed[1]:.3g}]",
                        (r.best_params or {}).get("lr_schedule"),
                        f"{(r.best_params or {}).get('learning_rate', float('nan')):.3g}",
                        f"{(d.best_params or {}).get('learning_rate', float('nan')):.3g}",
                    ]
                )
            d_med = statistics.median(o.best for o in outcomes["default"] if o.best is not None)
            r_med = statistics.median(o.best for o in outcomes["recipe"] if o.best is not None)
            ok_all &= r_med >= d_med
            notes.append(f"{name}: recipe {r_med:.4f} vs default {d_med:.4f}")
    print_table(
        f"Same trials budget, median over {len(seeds)} seed(s) (val_accuracy, higher is better)",
        [
            "data",
            "search",
            "trials",
            "best val_accuracy",
            "IQR",
            "total epochs",
            "pruned",
            "wall s",
            "range test s",
        ],
        rows,
    )
    print()
    print_table(
        "Per seed",
        [
            "data",
            "seed",
            "default best",
            "recipe best",
            "suggestion",
            "narrowed learning_rate",
            "recipe best's lr_schedule",
            "recipe best's learning_rate",
            "default best's learning_rate",
        ],
        seed_rows,
    )
    print()
    verdict(ok_all, "target: recipe's median best >= default's on both; " + "; ".join(notes))


if __name__ == "__main__":
    main()
