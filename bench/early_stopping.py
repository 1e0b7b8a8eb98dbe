"""Early stopping: replay recorded learning curves through `none`, `median`, `curve_fit`, `asha`, `hyperband`.

The table of curves is recorded once (`--record`) with hyperflow's own `train_trial`: 100
configurations drawn at random from the search spaces of conf/digits.yaml and of the shipped
breast_cancer experiment (conf/genetic.yaml), each trained for 30 epochs with fixed seeds; it is
kept in bench/curves.json.gz. A replay feeds the curves, in the recorded search order, epoch by
epoch to each rule exactly as a sequential search would (the rule's snapshot taken before each
trial, completed trials recorded as they finish) and counts the epochs trained, the trials
pruned, and the best final value among completed trials. The full run also replays 10 shuffled
orders and reports the median. asha and hyperband use their own defaults (the config's when
`min_epochs` and `reduction_factor` are left out: a first rung of max(1, 30 // 100) = 1 epoch, a
reduction factor of 4 for asha and 3 for hyperband); the last tables try other settings of theirs
and other published decision rules at a rung over the same orders.

    python bench/early_stopping.py [--quick] [--record]
"""

from __future__ import annotations

import gzip
import itertools
import json
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from _common import BREAST_CANCER, DIGITS, banner, load_experiment, parser, print_table, stopwatch, verdict

DATA = Path(__file__).resolve().parent / "curves.json.gz"
EXPERIMENTS = {"digits": DIGITS, "breast_cancer": BREAST_CANCER}
EPOCHS = 30
CONFIGS = 100
KINDS = ("none", "median", "curve_fit", "asha", "hyperband")
GAP_TARGET = 0.005  # half a percentage point of accuracy
EPOCH_TARGET = 0.5
ASHA_EPOCH_TARGET = 0.3  # asha: at most 0.3x none's epochs (median over the shuffled orders)


def record(n_configs: int = CONFIGS, epochs: int = EPOCHS) -> dict[str, Any]:
    """Train `n_configs` random configurations of each experiment for `epochs` epochs."""
    from hyperflow.components.data import load_dataset
    from hyperflow.components.search import RandomStrategy, SearchSpace
    from hyperflow.components.study import trial_seed
    from hyperflow.components.training import train_trial
    from hyperflow.components.trial import TrialSpec

    table: dict[str, Any] = {
        "epochs": epochs,
        "note": "val curves of random configurations from the shipped search spaces, trained by train_trial",
        "experiments": {},
    }
    for name, path in EXPERIMENTS.items():
        cfg = load_experiment(path, [f"model.max_epochs={epochs}"])
        data = load_dataset(cfg.data, cfg.seed)
        space = SearchSpace.from_config(cfg)
        spec = TrialSpec.from_config(cfg, num_threads=1)
        runs = []
        start = time.perf_counter()
        for i, params in enumerate(RandomStrategy(space, mode=cfg.search.mode, seed=cfg.seed).ask(n_configs)):
            if "max_epochs" in params:  # every curve runs the same length; the sampled length is kept
                params = {**params, "sampled_max_epochs": params["max_epochs"], "max_epochs": epochs}
            trial_params = {k: v for k, v in params.items() if k != "sampled_max_epochs"}
            seed = trial_seed(cfg.seed, i)
            result = train_trial(data, trial_params, spec, seed=seed)
            runs.append(
                {
                    "params": params,
                    "seed": seed,
                    "state": result.state,
                    "error": result.error,
                    "train_seconds": round(result.train_seconds, 4),
                    **{
                        k: [round(v, 5) for v in result.history.get(k, [])]
                        for k in ("val_accuracy", "val_loss")
                    },
                }
            )
            print(
                f"  {name} {i + 1}/{n_configs}: {result.state}, {cfg.search.metric} "
                f"{result.value if result.value is not None else float('nan'):.4f} "
                f"after {result.epochs_trained} epochs",
                flush=True,
            )
        table["experiments"][name] = {
            "config": path,
            "metric": cfg.search.metric,
            "mode": cfg.search.mode,
            "min_epochs": cfg.early_stopping.min_epochs,
            "threshold": cfg.early_stopping.threshold,
            "seconds": round(time.perf_counter() - start, 1),
            "runs": runs,
        }
    return table


def save(table: dict[str, Any], path: Path = DATA) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        json.dump(table, f, separators=(",", ":"))


def load(path: Path = DATA) -> dict[str, Any]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


@dataclass
class Replay:
    kind: str
    epochs: int = 0
    pruned: int = 0
    best: float | None = None
    checks: int = 0
    check_seconds: float = 0.0
    stopped_at: list[int] = field(default_factory=list)


def replay(
    runs: list[dict[str, Any]],
    experiment: dict[str, Any],
    kind: str,
    order: list[int],
    *,
    min_epochs: int | None = None,
    threshold: float | None = None,
    reduction_factor: int | None = None,
) -> Replay:
    """One sequential search over the recorded runs in `order`, with the rule `kind`.

    `min_epochs` and `threshold` default to the experiment's config for median and curve_fit,
    and `min_epochs` and `reduction_factor` to their own defaults for asha and hyperband (what a
    config that leaves them out gets); the i-th trial of the order is trial number i
    (hyperband's bracket comes from it).
    """
    from hyperflow.components.curves import StopRule

    metric, mode = experiment["metric"], experiment["mode"]
    first, factor = halving_defaults(kind)
    rule = StopRule(
        kind,
        metric=metric,
        mode=mode,
        min_epochs=min_epochs or first or experiment["min_epochs"],
        threshold=threshold or experiment["threshold"],
        reduction_factor=reduction_factor or factor,
        max_epochs=EPOCHS,
    )
    out = Replay(kind)
    for number, i in enumerate(order):
        run = runs[i]
        curve = run[metric]
        final_epoch = EPOCHS - 1
        policy = rule.snapshot(number)
        stop = None
        # As the trial's callback does: after each epoch but the last, ask the policy.
        for n in range(1, len(curve) + 1):
            if n - 1 >= final_epoch:
                break
            start = time.perf_counter()
            decision = policy.check(curve[:n], final_epoch)
            out.check_seconds += time.perf_counter() - start
            out.checks += 1
            if decision is not None:
                stop = n
                break
        if stop is not None:
            out.epochs += stop
            out.pruned += 1
            out.stopped_at.append(stop)
            rule.record(curve[:stop], "pruned", number)
        elif run["state"] == "completed":
            out.epochs += len(curve)
            rule.record(curve, "completed", number)
            value = curve[-1]
            if out.best is None or (value > out.best if mode == "max" else value < out.best):
                out.best = value
        else:  # failed on its own (diverged): the epoch it failed in was trained too
            out.epochs += len(curve) + 1
            rule.record(curve, "failed", number)
    return out


VARIANTS = [
    ("curve_fit", 5, 0.05),
    ("curve_fit", 5, 0.1),
    ("curve_fit", 5, 0.2),
    ("curve_fit", 3, 0.05),
    ("curve_fit", 3, 0.1),
    ("median", 3, None),
    ("median", 8, None),
]


def sensitivity(
    name: str, runs: list[dict[str, Any]], experiment: dict[str, Any], nones: list[Replay]
) -> None:
    """Other settings of the rules, over the first shuffled orders: what the targets would need."""
    rows = []
    orders = [[int(i) for i in np.random.default_rng(s).permutation(len(runs))] for s in range(len(nones))]
    sign = 1.0 if experiment["mode"] == "max" else -1.0
    for kind, min_epochs, threshold in VARIANTS:
        got = [replay(runs, experiment, kind, o, min_epochs=min_epochs, threshold=threshold) for o in orders]
        ratios = [g.epochs / n.epochs for g, n in zip(got, nones, strict=True)]
        gaps = [100 * sign * ((g.best or 0.0) - (n.best or 0.0)) for g, n in zip(got, nones, strict=True)]
        rows.append(
            [
                kind,
                min_epochs,
                threshold,
                statistics.median(ratios),
                max(ratios),
                statistics.median(gaps),
                min(gaps),
            ]
        )
    print_table(
        f"{name}: settings of the rules over {len(orders)} shuffled orders",
        [
            "rule",
            "min_epochs",
            "threshold",
            "median ratio to none",
            "max",
            "median best vs none (pp)",
            "worst (pp)",
        ],
        rows,
    )
    print()


def halving_defaults(kind: str) -> tuple[int | None, int]:
    """asha's and hyperband's first rung and reduction factor when a config leaves them out."""
    from hyperflow.components.stopping import DEFAULT_REDUCTION_FACTOR, HALVING_KINDS, default_first_rung

    if kind not in HALVING_KINDS:
        return None, 3
    return default_first_rung(EPOCHS), DEFAULT_REDUCTION_FACTOR[kind]


def rungs_of(min_epochs: int, factor: int) -> list[int]:
    from hyperflow.components.stopping import rung_epochs

    return list(rung_epochs(min_epochs, factor, EPOCHS))


def by_construction(min_epochs: int, factor: int) -> float:
    """The share of none's epochs synchronous successive halving trains whatever the curves:
    every trial the first rung, 1/factor of them on to the next, ..., 1/factor^k the whole way."""
    rungs = [*rungs_of(min_epochs, factor), EPOCHS]
    return (
        rungs[0] + sum((b - a) / factor ** (i + 1) for i, (a, b) in enumerate(itertools.pairwise(rungs)))
    ) / EPOCHS


def label(kind: str, min_epochs: int | None = None, factor: int | None = None) -> str:
    first, default_factor = halving_defaults(kind)
    m, f = min_epochs or first or 0, factor or default_factor
    return f"{kind} ({m}, {f}: rungs {', '.join(map(str, rungs_of(m, f)))})"


HALVING_VARIANTS = [  # (rule, min_epochs, reduction_factor); None: the default
    ("asha", None, None),
    ("asha", 5, 3),  # the defaults before (curve_fit's min_epochs, the field's reduction_factor)
    ("asha", 5, 4),
    ("asha", 3, 4),
    ("asha", 2, 3),
    ("asha", 2, 4),
    ("asha", 1, 3),
    ("hyperband", None, None),
    ("hyperband", 5, 3),
    ("hyperband", 1, 4),
]


def halving_settings(
    name: str,
    runs: list[dict[str, Any]],
    experiment: dict[str, Any],
    orders: list[list[int]],
    nones: list[Replay],
) -> None:
    """asha and hyperband at other min_epochs and reduction_factor, over the shuffled orders."""
    rows = []
    sign = 1.0 if experiment["mode"] == "max" else -1.0
    for kind, min_epochs, factor in HALVING_VARIANTS:
        got = [
            replay(runs, experiment, kind, o, min_epochs=min_epochs, reduction_factor=factor) for o in orders
        ]
        ratios = [g.epochs / n.epochs for g, n in zip(got, nones, strict=True)]
        gaps = [100 * sign * ((g.best or 0.0) - (n.best or 0.0)) for g, n in zip(got, nones, strict=True)]
        first, default_factor = halving_defaults(kind)
        rows.append(
            [
                label(kind, min_epochs, factor) + (" - default" if min_epochs is None else ""),
                by_construction(min_epochs or first or 0, factor or default_factor)
                if kind == "asha"
                else None,
                statistics.median(ratios),
                max(ratios),
                statistics.median(gaps),
                min(gaps),
            ]
        )
    print_table(
        f"{name}: asha and hyperband settings over {len(orders)} shuffled orders",
        [
            "rule (min_epochs, reduction_factor)",
            "by construction",
            "median ratio to none",
            "max",
            "median best vs none (pp)",
            "worst (pp)",
        ],
        rows,
    )
    print()


# --------------------------------------------------------------------------------------------
# Other published decisions at a rung, replayed through the same rule with only the decision
# swapped: what the choice of hyperflow's (Ray Tune's quantile) rests on.


def _optuna_count(value: float, recorded: Sequence[float], factor: int, mode: str) -> Any:
    """Optuna's SuccessiveHalvingPruner: the top max(1, n // factor) of the n values, its own
    counted; ties go on (hyperflow's rule before)."""
    from hyperflow.components.stopping import RungDecision

    values = sorted([*recorded, value], reverse=mode == "max")
    cutoff = values[max(1, len(values) // factor) - 1]
    keep = value >= cutoff if mode == "max" else value <= cutoff
    return RungDecision(keep=keep, cutoff=cutoff, n=len(recorded), quantile=1 - 1 / factor)


def _li_count(value: float, recorded: Sequence[float], factor: int, mode: str) -> Any:
    """Li et al.'s promotion rule read as a stopping one: the top n // factor of the n values at
    the rung, so nothing goes on before a rung holds `factor` trials (a promotion scheduler
    would wait; a stopped trial cannot)."""
    from hyperflow.components.stopping import RungDecision

    values = sorted([*recorded, value], reverse=mode == "max")
    top = len(values) // factor
    keep = top >= 1 and (value >= values[top - 1] if mode == "max" else value <= values[top - 1])
    return RungDecision(keep=keep, cutoff=values[max(top, 1) - 1], n=len(recorded), quantile=1 - 1 / factor)


def _optuna_count_strict_ties(value: float, recorded: Sequence[float], factor: int, mode: str) -> Any:
    """Optuna's count, with a newcomer tied at the cut-off ranked behind the recorded values:
    at most max(1, n // factor) go on, whatever the ties."""
    from hyperflow.components.stopping import RungDecision

    top = max(1, (len(recorded) + 1) // factor)
    as_good = sum(v >= value if mode == "max" else v <= value for v in recorded)
    cutoff = sorted([*recorded, value], reverse=mode == "max")[top - 1]
    return RungDecision(keep=as_good < top, cutoff=cutoff, n=len(recorded), quantile=1 - 1 / factor)


DECISIONS: list[tuple[str, Callable[..., Any] | None]] = [
    ("quantile of the recorded values (Ray Tune) - hyperflow's", None),
    ("top max(1, n // rf), own counted (Optuna) - hyperflow's before", _optuna_count),
    ("top n // rf (Li et al.'s count, none below rf)", _li_count),
    ("Optuna's count, ties ranked behind", _optuna_count_strict_ties),
]


@contextmanager
def decision(judge: Callable[..., Any] | None) -> Iterator[None]:
    """Swap the decision at a rung that `StopPolicy` applies (None: hyperflow's own)."""
    from hyperflow.components import curves

    own = curves.judge_at_rung
    curves.judge_at_rung = judge or own  # type: ignore[assignment]
    try:
        yield
    finally:
        curves.judge_at_rung = own  # type: ignore[assignment]


def decision_rules(
    name: str,
    runs: list[dict[str, Any]],
    experiment: dict[str, Any],
    orders: list[list[int]],
    nones: list[Replay],
) -> None:
    """asha with each published decision at a rung, at the old and the new default settings."""
    rows = []
    sign = 1.0 if experiment["mode"] == "max" else -1.0
    for min_epochs, factor in ((5, 3), (1, 4)):
        for rule_name, judge in DECISIONS:
            with decision(judge):
                got = [
                    replay(runs, experiment, "asha", o, min_epochs=min_epochs, reduction_factor=factor)
                    for o in orders
                ]
            ratios = [g.epochs / n.epochs for g, n in zip(got, nones, strict=True)]
            gaps = [100 * sign * ((g.best or 0.0) - (n.best or 0.0)) for g, n in zip(got, nones, strict=True)]
            lost = sum(g < -100 * GAP_TARGET for g in gaps)
            rows.append(
                [
                    f"{label('asha', min_epochs, factor)}, {rule_name}",
                    statistics.median(ratios),
                    max(ratios),
                    min(gaps),
                    f"{lost}/{len(orders)}",
                ]
            )
    print_table(
        f"{name}: decisions at a rung over {len(orders)} shuffled orders",
        [
            "asha (min_epochs, reduction_factor), decision",
            "median ratio to none",
            "max",
            "worst best vs none (pp)",
            "orders losing > 0.5 pp",
        ],
        rows,
    )
    print()


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--record", action="store_true", help=f"record {DATA.name} again (minutes)")
    p.add_argument(
        "--orders",
        type=int,
        default=10,
        help="more than 10: the decisions at a rung also over this many other shuffled orders",
    )
    args = p.parse_args()
    banner("Early stopping: none vs median vs curve_fit vs asha vs hyperband on recorded curves", args.quick)
    if args.record or not DATA.exists():
        print(f"recording {CONFIGS} configurations x {EPOCHS} epochs per experiment into {DATA.name} ...")
        with stopwatch() as t:
            save(record())
        print(f"recorded in {t[0]:.0f} s")
        print()
    table = load()
    n_runs = 40 if args.quick else None
    n_orders = 0 if args.quick else 10
    ok_all, notes = True, []
    for name, experiment in table["experiments"].items():
        runs = experiment["runs"][:n_runs]
        metric = experiment["metric"]
        epoch_seconds = statistics.mean(
            r["train_seconds"] / max(len(r[metric]), 1) for r in runs if r["state"] == "completed"
        )
        results = {kind: replay(runs, experiment, kind, list(range(len(runs)))) for kind in KINDS}
        base = results["none"]
        rows = []
        for kind in KINDS:
            r = results[kind]
            per_check = r.check_seconds / r.checks if r.checks else 0.0
            rows.append(
                [
                    label(kind) if kind in ("asha", "hyperband") else kind,
                    r.epochs,
                    r.epochs / base.epochs,
                    r.pruned,
                    statistics.median(r.stopped_at) if r.stopped_at else None,
                    r.best,
                    None if r.best is None or base.best is None else 100 * (r.best - base.best),
                    per_check * 1000,
                    100 * per_check / epoch_seconds,
                ]
            )
        completed = sum(r["state"] == "completed" for r in runs)
        print_table(
            f"{name}: {len(runs)} configurations x {table['epochs']} epochs, recorded order "
            f"({completed} completed, {len(runs) - completed} diverged; {metric}, {experiment['mode']})",
            [
                "rule",
                "epochs trained",
                "ratio to none",
                "pruned",
                "median stop epoch",
                f"best final {metric}",
                "vs none (pp)",
                "ms per check",
                "check % of an epoch",
            ],
            rows,
        )
        print()
        cf, md = results["curve_fit"], results["median"]
        sign = 1.0 if experiment["mode"] == "max" else -1.0
        gap = sign * ((cf.best or 0.0) - (base.best or 0.0))
        md_gap = sign * ((md.best or 0.0) - (base.best or 0.0))
        checks = {
            "at most half of none's epochs": cf.epochs <= EPOCH_TARGET * base.epochs,
            "best within 0.5 pp of none's": gap >= -GAP_TARGET,
            "fewer epochs than median": cf.epochs < md.epochs,
            "best no worse than median's": gap >= md_gap,
        }
        ok_all &= all(checks.values())
        missed = [k for k, v in checks.items() if not v]
        notes.append(
            f"{name}: curve_fit trains {cf.epochs / base.epochs:.2f} of none's epochs with best "
            f"{100 * gap:+.2f} pp, median {md.epochs / base.epochs:.2f} with {100 * md_gap:+.2f} pp"
            + (f" (missed: {', '.join(missed)})" if missed else " (all met)")
        )
        asha_ratios = [results["asha"].epochs / base.epochs]
        asha_gaps = [100 * sign * ((results["asha"].best or 0.0) - (base.best or 0.0))]
        if n_orders:
            rows = []
            per_kind: dict[str, list[Replay]] = {k: [] for k in KINDS}
            orders = [
                [int(i) for i in np.random.default_rng(s).permutation(len(runs))] for s in range(n_orders)
            ]
            for order in orders:
                for kind in KINDS:
                    per_kind[kind].append(replay(runs, experiment, kind, order))
            nones = per_kind["none"]
            asha_ratios = [r.epochs / n.epochs for r, n in zip(per_kind["asha"], nones, strict=True)]
            asha_gaps = [
                100 * sign * ((r.best or 0.0) - (n.best or 0.0))
                for r, n in zip(per_kind["asha"], nones, strict=True)
            ]
            for kind in KINDS:
                ratios = [r.epochs / n.epochs for r, n in zip(per_kind[kind], nones, strict=True)]
                gaps = [
                    100 * ((r.best or 0.0) - (n.best or 0.0))
                    for r, n in zip(per_kind[kind], nones, strict=True)
                ]
                rows.append(
                    [
                        kind,
                        statistics.median(ratios),
                        min(ratios),
                        max(ratios),
                        statistics.median(gaps),
                        min(gaps),
                    ]
                )
            print_table(
                f"{name}: {n_orders} shuffled search orders",
                ["rule", "median ratio to none", "min", "max", "median best vs none (pp)", "worst (pp)"],
                rows,
            )
            print()
            sensitivity(name, runs, experiment, nones[:5])
            halving_settings(name, runs, experiment, orders, nones)
            decision_rules(name, runs, experiment, orders, nones)
            if args.orders > n_orders:
                many = [
                    [int(i) for i in np.random.default_rng(1000 + s).permutation(len(runs))]
                    for s in range(args.orders)
                ]
                decision_rules(
                    name, runs, experiment, many, [replay(runs, experiment, "none", o) for o in many]
                )
        asha_checks = {
            f"at most {ASHA_EPOCH_TARGET}x none's epochs": statistics.median(asha_ratios)
            <= ASHA_EPOCH_TARGET,
            "best never more than 0.5 pp below none's": min(asha_gaps) >= -100 * GAP_TARGET,
        }
        ok_all &= all(asha_checks.values())
        missed = [k for k, v in asha_checks.items() if not v]
        notes.append(
            f"{name}: asha trains {statistics.median(asha_ratios):.2f} of none's epochs "
            f"(max {max(asha_ratios):.2f} over {len(asha_ratios)} order(s)) with best {min(asha_gaps):+.2f} pp "
            "at worst" + (f" (missed: {', '.join(missed)})" if missed else " (all met)")
        )
    verdict(ok_all, "; ".join(notes))


if __name__ == "__main__":
    main()
