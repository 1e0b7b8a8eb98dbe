"""Time to accuracy: hyperflow (bayes + curve_fit) against Optuna (TPE + MedianPruner) on real trials.

Both drive the same training function, `train_trial`, on the same data split, search space,
trial seeds and budget of trials: conf/digits.yaml (30 trials) and the shipped breast_cancer
experiment, conf/genetic.yaml, searched with bayes instead of its genetic algorithm (40 trials).
hyperflow asks its BayesStrategy and stops trials with its curve_fit rule exactly as its search
loop does, without Prefect or MLflow; Optuna asks TPESampler and stops trials with MedianPruner
(5 startup trials, no pruning before the same `min_epochs`) through a stop-policy adapter that
reports every epoch to the Optuna trial. A config's initial points are enqueued in Optuna too.
Per seed: the best validation value among completed trials, total training epochs, wall time,
and the epochs hyperflow needed to first reach Optuna's best of that seed.

A second table runs hyperflow's bayes with the stop rules `none`, `curve_fit` and `asha` on
digits (the same trials budget, seeds interleaved) and times how long each takes to reach the
best of bayes + none of the same seed (`--stop-rules-only` runs only that table).

hyperflow asks as a study does by default, through its lookahead (trial k chosen while trial
k - 1 trains); `--no-lookahead` asks after each result, as `search.lookahead: false` does.

    python bench/time_to_accuracy.py [--quick] [--no-lookahead | --n-parallel N]
        [--stop-rules-only [--stop-rules-extra] [--first-seed N] | --pruned-only]
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from _common import (
    BREAST_CANCER,
    DIGITS,
    add_lookahead_option,
    banner,
    load_experiment,
    optuna_suggest,
    parser,
    print_table,
    verdict,
)

EXPERIMENTS = {
    "digits": (DIGITS, ["search.strategy=bayes"]),
    "breast_cancer": (BREAST_CANCER, ["search.strategy=bayes"]),
}


@dataclass
class Outcome:
    """One search: per trial its state, epochs and value, in order."""

    states: list[str] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)
    values: list[float | None] = field(default_factory=list)
    seconds: float = 0.0
    mode: str = "max"

    def best(self, upto: int | None = None) -> float | None:
        done = [
            v
            for s, v in zip(self.states[:upto], self.values[:upto], strict=True)
            if s == "completed" and v is not None
        ]
        if not done:
            return None
        return max(done) if self.mode == "max" else min(done)

    @property
    def total_epochs(self) -> int:
        return sum(self.epochs)

    def epochs_to_reach(self, target: float | None) -> float:
        """Total epochs trained when a completed trial first reached `target` (inf if never)."""
        if target is None:
            return math.inf
        spent = 0
        for s, e, v in zip(self.states, self.epochs, self.values, strict=True):
            spent += e
            if s == "completed" and v is not None and (v >= target if self.mode == "max" else v <= target):
                return float(spent)
        return math.inf


class OptunaPruning:
    """A stop policy for `train_trial` that reports to an Optuna trial and asks its pruner."""

    def __init__(self, trial: Any) -> None:
        self.trial = trial

    def report(self, epoch: int, metrics: dict[str, float], metric: str) -> None:
        self.trial.report(metrics[metric], step=epoch)

    def check(self, curve: list[float], final_epoch: int) -> Any:
        from hyperflow.components.curves import StopDecision

        if self.trial.should_prune():
            return StopDecision(f"optuna MedianPruner at epoch {len(curve) - 1}")
        return None


class Asker:
    """hyperflow's asks as a study makes them: through its `Lookahead` or after each result.

    `lookahead` (`search.lookahead`, on by default in a study): trial k's suggestion is prepared
    from the trials before k - n_parallel while trials k - n_parallel ... k - 1 train (pending),
    bayes in a process of its own (`StrategyProcess`), exactly as `components/study.py` sets it
    up; `ask` then waits for it. Its suggestions do not depend on timing, so trials trained one
    after the other here get exactly the suggestions of a study with `n_parallel` trials at once.
    Otherwise (`search.lookahead: false`) each trial is asked after the previous one's result.
    """

    def __init__(self, strategy: Any, n_trials: int, lookahead: bool, n_parallel: int = 1) -> None:
        from hyperflow.components.search._lookahead import Lookahead, StrategyProcess

        self.strategy = strategy
        self.ahead = (
            Lookahead(StrategyProcess(strategy), n_parallel, limit=n_trials).start() if lookahead else None
        )

    def ask(self, number: int) -> dict[str, Any]:
        if self.ahead is None:
            (params,) = self.strategy.ask(1)
            return dict(params)
        ready, params = self.ahead.take(number)
        assert ready and params is not None  # trial number - 1 was told before this take
        return params

    def tell(self, number: int, params: dict[str, Any], result: Any, state: str, spec: Any) -> None:
        """Tell a trial as the study's ledger tells it (components/study.py, TrialLedger.add)."""
        from hyperflow.components.search._lookahead import Outcome as Told

        told = Told(
            params,
            result.value if state != "failed" else None,
            pruned=state == "pruned",
            predicted=result.predicted_final,
            epochs=result.epochs_trained,
            max_epochs=spec.max_epochs(params),
        )
        if self.ahead is not None:
            self.ahead.tell(number, told)
        else:
            told.tell_to(self.strategy)

    def close(self) -> None:
        if self.ahead is not None:
            self.ahead.close()


def run_hyperflow(
    cfg: Any, data: Any, seed: int, n_trials: int, lookahead: bool = False, n_parallel: int = 1
) -> Outcome:
    """hyperflow's search loop without Prefect or MLflow: ask, train with the stop rule's snapshot, tell.

    `lookahead`: ask as a study does by default (see `Asker`). `n_parallel` (with `lookahead`):
    the asks of a study running that many trials at once, and each trial's stop rule knows only
    the curves of trials that ended before it started (trials before k - n_parallel + 1).
    """
    from hyperflow.components.curves import make_stop_rule
    from hyperflow.components.search import make_strategy
    from hyperflow.components.study import trial_seed
    from hyperflow.components.training import train_trial
    from hyperflow.components.trial import TrialSpec

    cfg = cfg.model_copy(update={"seed": seed})
    strategy, rule = make_strategy(cfg), make_stop_rule(cfg)
    spec = TrialSpec.from_config(cfg, num_threads=1)
    out = Outcome(mode=cfg.search.mode)
    start = time.perf_counter()
    asker = Asker(strategy, n_trials, lookahead, n_parallel)
    ended: list[tuple[Any, str]] = []  # curves the stop rule has not seen yet (trials still "running")
    for number in range(n_trials):
        params = asker.ask(number)
        while len(ended) > n_parallel - 1:
            rule.record(*ended.pop(0))
        result = train_trial(data, params, spec, seed=trial_seed(seed, number), stop_policy=rule.snapshot())
        state = (
            result.state if result.state in ("completed", "pruned") and result.value is not None else "failed"
        )
        asker.tell(number, params, result, state, spec)
        ended.append((result.curve, state))
        out.states.append(state)
        out.epochs.append(result.epochs_trained)
        out.values.append(result.value)
    out.seconds = time.perf_counter() - start
    asker.close()
    return out


def run_optuna(cfg: Any, data: Any, seed: int, n_trials: int, sampler: str = "tpe") -> Outcome:
    """Optuna's TPE or GP sampler (defaults and a seed) + MedianPruner driving the same train_trial."""
    import optuna
    from optuna.trial import TrialState

    from hyperflow.components.search import SearchSpace
    from hyperflow.components.study import trial_seed
    from hyperflow.components.training import train_trial
    from hyperflow.components.trial import TrialSpec

    space = SearchSpace.from_config(cfg)
    spec = TrialSpec.from_config(cfg, num_threads=1)
    metric = cfg.search.metric
    study = optuna.create_study(
        direction="maximize" if cfg.search.mode == "max" else "minimize",
        sampler=(
            optuna.samplers.GPSampler(seed=seed) if sampler == "gp" else optuna.samplers.TPESampler(seed=seed)
        ),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=5, n_warmup_steps=cfg.early_stopping.min_epochs - 1
        ),
    )
    defaults = {**cfg.model.model_dump(), **cfg.model.args}
    for point in cfg.search.initial_points:
        full = space.complete(point, defaults)
        study.enqueue_trial(
            {
                d.name: d.index_of(full[d.name]) if d.kind == "categorical" else full[d.name]
                for d in space.dimensions
            }
        )
    out = Outcome(mode=cfg.search.mode)
    start = time.perf_counter()
    for number in range(n_trials):
        trial = study.ask()
        params = optuna_suggest(trial, space)
        policy = OptunaPruning(trial)
        result = train_trial(
            data,
            params,
            spec,
            seed=trial_seed(seed, number),
            stop_policy=policy,
            on_epoch=lambda epoch, metrics, p=policy: p.report(epoch, metrics, metric),
        )
        if result.state == "completed" and result.value is not None:
            study.tell(trial, result.value)
            state = "completed"
        elif result.state == "pruned" and result.value is not None:
            study.tell(trial, state=TrialState.PRUNED)
            state = "pruned"
        else:
            study.tell(trial, state=TrialState.FAIL)
            state = "failed"
        out.states.append(state)
        out.epochs.append(result.epochs_trained)
        out.values.append(result.value)
    out.seconds = time.perf_counter() - start
    return out


# --------------------------------------------------------------------------------------------
# Stop rules side by side: bayes + asha against bayes + curve_fit and bayes + none, same trials


# (label, early_stopping section, decision at a rung: None is hyperflow's own). "asha" leaves
# min_epochs and reduction_factor out, so it gets asha's defaults; the target is on it. The last
# two rows are the settings asha had before (conf/digits.yaml's min_epochs 5, reduction_factor
# 3), with today's decision and with the one it had then (Optuna's count, bench/early_stopping.py).
STOP_RULES: tuple[tuple[str, dict[str, Any] | None, str | None], ...] = (
    ("none", {"kind": "none"}, None),
    ("curve_fit", None, None),
    ("asha", {"kind": "asha"}, None),
    ("asha (5, 3)", {"kind": "asha", "min_epochs": 5, "reduction_factor": 3}, None),
    (
        "asha (5, 3), Optuna's count: before",
        {"kind": "asha", "min_epochs": 5, "reduction_factor": 3},
        "optuna",
    ),
)
# --stop-rules-extra: other settings, next to none and asha.
EXTRA_STOP_RULES: tuple[tuple[str, dict[str, Any] | None, str | None], ...] = (
    ("asha (1, 3)", {"kind": "asha", "reduction_factor": 3}, None),
    ("asha (2, 4)", {"kind": "asha", "min_epochs": 2}, None),
    ("asha (1, 2)", {"kind": "asha", "reduction_factor": 2}, None),
    ("hyperband", {"kind": "hyperband"}, None),
)
WALL_TARGET = 0.5  # bayes + asha reaches bayes + none's best within half of none's wall time


@dataclass
class Timed:
    """One search of `run_stop_rule`: its outcome, when each trial ended, and its training time.

    `cpu_ends` and `cpu_seconds` are this process's CPU time: everything runs on one thread
    here, so on an idle machine they equal the wall times, and on a shared one they do not move
    with the other work's load. `ask_ends` is the wall time spent in the strategy's ask and tell
    (the GP) up to each trial's end: what a lookahead would move off the trials' path.
    """

    out: Outcome
    ends: list[float]
    train_seconds: float
    cpu_ends: list[float] = field(default_factory=list)
    cpu_seconds: float = 0.0
    ask_ends: list[float] = field(default_factory=list)

    @property
    def ask_seconds(self) -> float:
        return self.ask_ends[-1] if self.ask_ends else 0.0


def stop_rule_config(cfg: Any, early_stopping: dict[str, Any] | None, seed: int) -> Any:
    """`cfg` with another early_stopping section, validated again (so that asha's defaults apply)."""
    from hyperflow.components.config import validate_config

    raw = cfg.model_dump(mode="json")
    raw["seed"] = seed
    if early_stopping is not None:
        raw["early_stopping"] = early_stopping
    return validate_config(raw)


def run_stop_rule(
    cfg: Any,
    data: Any,
    seed: int,
    n_trials: int,
    early_stopping: dict[str, Any] | None,
    judge: str | None,
    lookahead: bool = False,
) -> Timed:
    """hyperflow's loop (bayes) with another early_stopping section, timing every trial's end.

    `lookahead`: ask as a study does by default (see `Asker`); "ask + tell" is then the loop's
    wait for a suggestion.
    """
    from early_stopping import DECISIONS, decision

    from hyperflow.components.curves import make_stop_rule
    from hyperflow.components.search import make_strategy
    from hyperflow.components.study import trial_seed
    from hyperflow.components.training import train_trial
    from hyperflow.components.trial import TrialSpec

    cfg = stop_rule_config(cfg, early_stopping, seed)
    judges = {"optuna": DECISIONS[1][1]}
    strategy, rule = make_strategy(cfg), make_stop_rule(cfg)
    spec = TrialSpec.from_config(cfg, num_threads=1)
    timed = Timed(Outcome(mode=cfg.search.mode), [], 0.0)
    out = timed.out
    asking = 0.0
    start, cpu_start = time.perf_counter(), time.process_time()
    asker = Asker(strategy, n_trials, lookahead)
    with decision(judges[judge] if judge else None):
        for number in range(n_trials):
            t0 = time.perf_counter()
            params = asker.ask(number)
            asking += time.perf_counter() - t0
            policy = rule.snapshot(number)
            result = train_trial(data, params, spec, seed=trial_seed(seed, number), stop_policy=policy)
            timed.train_seconds += result.train_seconds
            ok = result.state in ("completed", "pruned") and result.value is not None
            state = result.state if ok else "failed"
            t0 = time.perf_counter()
            asker.tell(number, params, result, state, spec)
            asking += time.perf_counter() - t0
            rule.record(result.curve, state, number)
            out.states.append(state)
            out.epochs.append(result.epochs_trained)
            out.values.append(result.value)
            timed.ends.append(time.perf_counter() - start)
            timed.cpu_ends.append(time.process_time() - cpu_start)
            timed.ask_ends.append(asking)
    out.seconds = time.perf_counter() - start
    timed.cpu_seconds = time.process_time() - cpu_start
    asker.close()
    return timed


def seconds_to_reach(
    timed: Timed, target: float | None, slack: float = 0.0, *, cpu: bool = False, no_ask: bool = False
) -> float:
    """Wall (or CPU) time until a completed trial first came within `slack` of `target` (inf if never).

    `no_ask`: the wall time less the strategy's ask and tell time spent until then.
    """
    out = timed.out
    if target is None:
        return math.inf
    sign = 1.0 if out.mode == "max" else -1.0
    ends = timed.cpu_ends if cpu else timed.ends
    if no_ask:
        ends = [e - a for e, a in zip(timed.ends, timed.ask_ends, strict=True)]
    for s, v, t in zip(out.states, out.values, ends, strict=True):
        if s == "completed" and v is not None and sign * (v - target) >= -slack:
            return t
    return math.inf


def compare_stop_rules(
    quick: bool, extra_rules: bool = False, n_seeds: int = 5, first_seed: int = 0, lookahead: bool = False
) -> tuple[bool, str]:
    """bayes + asha / curve_fit / none on digits, seeds interleaved; the wall-time target on asha.

    `extra_rules`: none, asha and the EXTRA_STOP_RULES instead of curve_fit and asha's old settings.
    """
    from hyperflow.components.data import load_dataset

    extra = ["search.strategy=bayes"]
    if quick:
        extra += [
            "search.n_trials=3",
            "model.max_epochs=6",
            "search.space.max_epochs={low: 5, high: 6, type: int}",
            "search.bayes.n_initial_points=2",
            "early_stopping.min_epochs=2",
        ]
    cfg = load_experiment(DIGITS, extra)
    data = load_dataset(cfg.data, cfg.seed)
    seeds = [0] if quick else list(range(first_seed, first_seed + n_seeds))
    variants = STOP_RULES[:3] if quick else STOP_RULES
    if extra_rules:
        variants = (STOP_RULES[0], STOP_RULES[2], *EXTRA_STOP_RULES[: 1 if quick else None])
    runs: dict[str, list[Timed]] = {label: [] for label, _, _ in variants}
    for s in seeds:  # every rule on one seed, then the next seed: the machine's load moves all alike
        for label, early_stopping, judge in variants:
            runs[label].append(
                run_stop_rule(cfg, data, s, cfg.search.n_trials, early_stopping, judge, lookahead)
            )
    nones = runs["none"]
    rows, seed_rows, ratios = [], [], {}
    for label, early_stopping, _ in variants:
        es = stop_rule_config(cfg, early_stopping, 0).early_stopping
        settings = f" ({es.min_epochs}, {es.reduction_factor})" if label in ("asha", "hyperband") else ""
        reach = [
            seconds_to_reach(t, n.out.best()) / n.out.seconds for t, n in zip(runs[label], nones, strict=True)
        ]
        near = [
            seconds_to_reach(t, n.out.best(), 0.005) / n.out.seconds
            for t, n in zip(runs[label], nones, strict=True)
        ]
        cpu_reach = [
            seconds_to_reach(t, n.out.best(), cpu=True) / n.cpu_seconds
            for t, n in zip(runs[label], nones, strict=True)
        ]
        no_ask = [
            seconds_to_reach(t, n.out.best(), no_ask=True) / (n.out.seconds - n.ask_seconds)
            for t, n in zip(runs[label], nones, strict=True)
        ]
        ratios[label] = statistics.median(reach)
        outs = [t.out for t in runs[label]]
        rows.append(
            [
                f"bayes + {label}{settings}",
                cfg.search.n_trials,
                statistics.median(b for o in outs if (b := o.best()) is not None),
                statistics.median(o.total_epochs for o in outs),
                statistics.median(sum(st == "pruned" for st in o.states) for o in outs),
                statistics.median(o.seconds for o in outs),
                statistics.median(t.train_seconds / t.out.seconds for t in runs[label]),
                statistics.median(t.ask_seconds / t.out.seconds for t in runs[label]),
                ratios[label],
                statistics.median(near),
                sum(r <= WALL_TARGET for r in reach),
                statistics.median(cpu_reach),
                statistics.median(no_ask),
            ]
        )
        for s, t, n, r, c, a in zip(seeds, runs[label], nones, reach, cpu_reach, no_ask, strict=True):
            seed_rows.append(
                [
                    label,
                    s,
                    t.out.best(),
                    n.out.best(),
                    t.out.total_epochs,
                    t.out.seconds,
                    t.ask_seconds,
                    r,
                    t.cpu_seconds,
                    c,
                    a,
                ]
            )
    print_table(
        f"digits: stop rules under bayes (GP, {'lookahead' if lookahead else 'asked after each result'}), {cfg.search.n_trials} "
        f"trials, median over {len(seeds)} seed(s)",
        [
            "search",
            "trials",
            "best val",
            "total epochs",
            "pruned",
            "wall s",
            "training share of wall",
            "ask + tell share of wall",
            "wall to none's best / none's wall",
            "same, within 0.5 pp",
            f"seeds within {WALL_TARGET}x",
            "CPU to none's best / none's CPU",
            "wall less ask + tell, to none's best / none's",
        ],
        rows,
    )
    print()
    print_table(
        "Per seed",
        [
            "rule",
            "seed",
            "best",
            "none's best",
            "epochs",
            "wall s",
            "ask + tell s",
            "wall to none's best / none's wall",
            "CPU s",
            "CPU to none's best / none's CPU",
            "less ask + tell",
        ],
        seed_rows,
    )
    print()
    ok = ratios["asha"] <= WALL_TARGET
    return (
        ok,
        f"digits: bayes + asha reached bayes + none's best in {ratios['asha']:.2f} of its wall time (median)",
    )


PEERS = (("Optuna: TPE + MedianPruner", "tpe"), ("Optuna: GPSampler + MedianPruner", "gp"))


def experiment(name: str, quick: bool, extra: list[str] = ()) -> Any:  # type: ignore[assignment]
    path, overrides = EXPERIMENTS[name]
    more = [*overrides, *extra]
    if quick:
        more += ["search.n_trials=4", "model.max_epochs=8"]
        if name == "digits":
            more += [
                "search.space.max_epochs={low: 6, high: 8, type: int}",
                "search.bayes.n_initial_points=2",
            ]
    return load_experiment(path, more)


def compare_pruned_policies(quick: bool, seeds: list[int], lookahead: bool = False) -> str:
    """bayes + curve_fit with each `search.bayes.pruned` policy, seeds and policies interleaved."""
    from hyperflow.components.data import load_dataset
    from hyperflow.components.search._bayes import PRUNED_POLICIES

    rows = []
    for name in EXPERIMENTS:
        outs: dict[str, list[Outcome]] = {p: [] for p in PRUNED_POLICIES}
        for s in seeds:
            for policy in PRUNED_POLICIES:
                cfg = experiment(name, quick, [f"search.bayes.pruned={policy}"])
                data = load_dataset(cfg.data, cfg.seed)
                outs[policy].append(run_hyperflow(cfg, data, s, cfg.search.n_trials, lookahead))
        for policy in PRUNED_POLICIES:
            # Epochs to reach the best any policy found on that seed: quality and speed in one.
            targets = [
                max(b for b in (outs[p][i].best() for p in PRUNED_POLICIES) if b is not None)
                for i in range(len(seeds))
            ]
            reach = [o.epochs_to_reach(t) for o, t in zip(outs[policy], targets, strict=True)]
            bests = [b for b in (o.best() for o in outs[policy]) if b is not None]
            rows.append(
                [
                    name,
                    policy,
                    statistics.median(bests) if bests else None,
                    statistics.median(o.total_epochs for o in outs[policy]),
                    statistics.median(sum(st == "pruned" for st in o.states) for o in outs[policy]),
                    sum(math.isfinite(r) for r in reach),
                    statistics.median(reach),
                ]
            )
    print_table(
        f"search.bayes.pruned: bayes + curve_fit ({'lookahead' if lookahead else 'asked after each result'}), "
        f"median over {len(seeds)} seed(s)",
        [
            "data",
            "pruned told as",
            "best val",
            "total epochs",
            "pruned",
            "seeds reaching the best",
            "epochs to it",
        ],
        rows,
    )
    print()
    return "pruned-policy table printed"


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--stop-rules-only", action="store_true", help="only bayes + asha / curve_fit / none")
    p.add_argument(
        "--stop-rules-extra",
        action="store_true",
        help="with --stop-rules-only: other asha and hyperband settings",
    )
    p.add_argument("--pruned-only", action="store_true", help="only the search.bayes.pruned policies")
    p.add_argument("--no-stop-rules", action="store_true", help="skip the stop-rule table")
    p.add_argument("--seeds", type=int, default=5, help="seeds per search (5 by default)")
    p.add_argument(
        "--first-seed", type=int, default=0, help="with --stop-rules-only: seeds from this one (0)"
    )
    add_lookahead_option(p, "hyperflow asks")
    p.add_argument(
        "--n-parallel",
        type=int,
        default=1,
        help="with --no-stop-rules: hyperflow asks as a study of search.n_parallel N would (trials run one by one)",
    )
    args = p.parse_args()
    if args.n_parallel < 1 or (args.n_parallel > 1 and not args.lookahead):
        p.error(
            "--n-parallel takes a number >= 1, and more than 1 only through the lookahead (not with --no-lookahead)"
        )
    if args.n_parallel > 1 and (args.stop_rules_only or args.pruned_only or not args.no_stop_rules):
        p.error("--n-parallel applies to the main table only: add --no-stop-rules")
    import optuna
    from _common import torch_threads_one
    from threadpoolctl import threadpool_limits

    from hyperflow.components.data import load_dataset

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    threadpool_limits(limits=1, user_api="blas")
    torch_threads_one()
    banner(
        "Time to accuracy: hyperflow (bayes + curve_fit) vs Optuna (TPE, GPSampler + MedianPruner)",
        args.quick,
    )
    seeds = [0] if args.quick else list(range(args.seeds))
    if args.stop_rules_only:
        ok, note = compare_stop_rules(
            args.quick, args.stop_rules_extra, args.seeds, args.first_seed, args.lookahead
        )
        verdict(ok, note)
        return
    if args.pruned_only:
        compare_pruned_policies(args.quick, seeds, args.lookahead)
        return
    rows, seed_rows, ok_all, notes = [], [], True, []
    for name in EXPERIMENTS:
        cfg = experiment(name, args.quick)
        data = load_dataset(cfg.data, cfg.seed)
        n_trials = cfg.search.n_trials
        hf, peers = [], {key: [] for _, key in PEERS}
        for s in seeds:  # all searches on one seed, then the next: the machine's load moves all alike
            hf.append(run_hyperflow(cfg, data, s, n_trials, args.lookahead, args.n_parallel))
            for _, key in PEERS:
                peers[key].append(run_optuna(cfg, data, s, n_trials, sampler=key))
        reach = {
            key: [h.epochs_to_reach(o.best()) / o.total_epochs for h, o in zip(hf, outs, strict=True)]
            for key, outs in peers.items()
        }
        for i, s in enumerate(seeds):
            seed_rows.append(
                [
                    name,
                    s,
                    hf[i].best(),
                    peers["tpe"][i].best(),
                    peers["gp"][i].best(),
                    hf[i].total_epochs,
                    peers["tpe"][i].total_epochs,
                    peers["gp"][i].total_epochs,
                    reach["tpe"][i],
                    reach["gp"][i],
                ]
            )
        medians = {}
        for label, outs in (("hyperflow: bayes GP + curve_fit", hf), *((lab, peers[k]) for lab, k in PEERS)):
            bests = [o.best() for o in outs]
            med = (
                statistics.median(b for b in bests if b is not None)
                if any(b is not None for b in bests)
                else None
            )
            medians[label] = med
            rows.append(
                [
                    name,
                    label,
                    n_trials,
                    med,
                    statistics.median(o.total_epochs for o in outs),
                    statistics.median(sum(s == "pruned" for s in o.states) for o in outs),
                    statistics.median(o.seconds for o in outs),
                    statistics.median(reach["tpe"]) if outs is hf else None,
                    statistics.median(reach["gp"]) if outs is hf else None,
                ]
            )
        ours = medians["hyperflow: bayes GP + curve_fit"]
        for label, key in PEERS:
            peer = medians[label]
            better = ours is not None and (
                peer is None or (ours >= peer if cfg.search.mode == "max" else ours <= peer)
            )
            fast = statistics.median(reach[key]) <= 0.5
            ok_all &= better and fast
            notes.append(
                f"{name} vs {key}: best {ours:.4g} vs {peer:.4g} ({'>=' if better else '<'}), epochs to its best "
                f"{statistics.median(reach[key]):.2f} of its epochs (target <= 0.5)"
            )
    print_table(
        f"Same trials budget, median over {len(seeds)} seed(s) ({cfg.search.metric}, higher is better; "
        f"hyperflow asks {'through the lookahead' if args.lookahead else 'after each result'}"
        f"{f', as {args.n_parallel} trials at once' if args.n_parallel > 1 else ''})",
        [
            "data",
            "search",
            "trials",
            "best val",
            "total epochs",
            "pruned",
            "wall s",
            "epochs to TPE's best / TPE's epochs",
            "epochs to GPSampler's best / its epochs",
        ],
        rows,
    )
    print()
    print_table(
        "Per seed",
        [
            "data",
            "seed",
            "hyperflow best",
            "TPE best",
            "GP best",
            "hyperflow epochs",
            "TPE epochs",
            "GP epochs",
            "reach / TPE",
            "reach / GP",
        ],
        seed_rows,
    )
    print()
    if not args.no_stop_rules:
        ok, note = compare_stop_rules(args.quick, lookahead=args.lookahead)
        ok_all &= ok
        notes.append(note)
    verdict(ok_all, "; ".join(notes))


if __name__ == "__main__":
    main()
