"""Search quality: regret of every strategy on Branin, Hartmann6 and Ackley-5, next to Optuna's samplers.

Each strategy minimises each function (components/search/objectives.py, known optima) through its
ask/tell interface with its default settings (those of `search.bayes` and `search.genetic`);
Optuna's TPESampler and GPSampler run the same functions and budgets through `study.ask/tell`.
Regret is the best value found minus the optimum, after 50 and 100 evaluations (one run of 100
gives both: no strategy here plans for its budget). Grid takes the largest grid that fits the
budget (at least 2 points a dimension; a grid larger than the budget stops at the budget). The
median and interquartile range are over seeds: 10, or 5 for the model-based samplers, whose runs
take minutes (GP, RF, ET, Optuna GP). Runs go two at a time, in worker processes.

    python bench/search_quality.py [--quick]
"""

from __future__ import annotations

import math
import multiprocessing
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from _common import banner, median_iqr, optuna_suggest, parser, print_table, verdict

CHEAP = ("random", "genetic", "optuna-tpe")
COSTLY = ("bayes-GP", "bayes-RF", "bayes-ET", "optuna-gp")
# Longest first, so the two workers finish together.
METHODS = ("optuna-gp", "bayes-GP", "bayes-ET", "bayes-RF", "genetic", "random", "optuna-tpe")


def _init_worker() -> None:
    import logging

    import optuna
    import torch
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)  # two runs share two cores
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").setLevel(logging.WARNING)


def grid_points(dims: int, budget: int) -> int:
    """Points per dimension of the largest grid within the budget (at least 2)."""
    p = 2
    while (p + 1) ** dims <= budget:
        p += 1
    return p


def make_strategy(method: str, space: Any, seed: int, budget: int) -> Any:
    from hyperflow.components.config import BayesConfig, GeneticConfig
    from hyperflow.components.search import BayesStrategy, GeneticStrategy, GridStrategy, RandomStrategy

    if method == "random":
        return RandomStrategy(space, mode="min", seed=seed)
    if method == "grid":
        ppd = grid_points(len(space), budget)
        return GridStrategy(space, mode="min", seed=seed, points_per_dimension=ppd)
    if method == "genetic":
        return GeneticStrategy(space, mode="min", seed=seed, **GeneticConfig().model_dump())
    if method.startswith("bayes-"):
        settings = BayesConfig(surrogate=method.split("-", 1)[1]).model_dump()
        return BayesStrategy(space, mode="min", seed=seed, **settings)
    raise ValueError(method)


def run(function: str, method: str, seed: int, budget: int) -> tuple[str, str, int, list[float], float]:
    """One run: the values it evaluated, in order, and its wall time."""
    import warnings

    from hyperflow.components.search.objectives import OBJECTIVES

    warnings.filterwarnings("ignore")
    objective = OBJECTIVES[function]()
    values: list[float] = []
    start = time.perf_counter()
    if method.startswith("optuna-"):
        import optuna

        sampler = (
            optuna.samplers.TPESampler(seed=seed)
            if method == "optuna-tpe"
            else optuna.samplers.GPSampler(seed=seed)
        )
        study = optuna.create_study(direction="minimize", sampler=sampler)
        for _ in range(budget):
            trial = study.ask()
            value = objective.fn(optuna_suggest(trial, objective.space))
            study.tell(trial, value)
            values.append(value)
    else:
        strategy = make_strategy(method, objective.space, seed, budget)
        while len(values) < budget:
            asked = strategy.ask(1)
            if not asked:  # a finished grid
                break
            value = objective.fn(asked[0])
            strategy.tell(asked[0], value)
            values.append(value)
    return function, method, seed, values, time.perf_counter() - start


def regret(values: Sequence[float], budget: int, optimum: float) -> float:
    return min(values[:budget]) - optimum


def main() -> None:
    args = parser(__doc__).parse_args()
    from hyperflow.components.search.objectives import OBJECTIVES

    banner("Search quality: regret on standard test functions", args.quick)
    if args.quick:
        functions, budgets, cheap_seeds, costly_seeds = ["branin"], (10, 15), 2, 1
    else:
        functions, budgets, cheap_seeds, costly_seeds = list(OBJECTIVES), (50, 100), 10, 5
    top = max(budgets)
    jobs = []
    for method in METHODS:
        seeds = cheap_seeds if method in CHEAP else costly_seeds
        for function in functions:
            jobs += [(function, method, seed, top) for seed in range(seeds)]
    grid_jobs = [(f, "grid", 0, b) for f in functions for b in budgets]
    start = time.perf_counter()
    results: dict[tuple[str, str], list[tuple[list[float], float]]] = {}
    grid: dict[tuple[str, int], list[float]] = {}
    with ProcessPoolExecutor(
        2, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker
    ) as pool:
        futures = [pool.submit(run, *job) for job in jobs]
        grid_futures = {(f, b): pool.submit(run, f, m, s, b) for f, m, s, b in grid_jobs}
        for fut in futures:
            function, method, _seed, values, seconds = fut.result()
            results.setdefault((function, method), []).append((values, seconds))
        for key, fut in grid_futures.items():
            grid[key] = fut.result()[3]
    elapsed = time.perf_counter() - start

    summary: dict[tuple[str, str, int], float] = {}
    for function in functions:
        optimum = OBJECTIVES[function]().optimum
        rows = []
        for method in (
            "grid",
            "random",
            "bayes-GP",
            "bayes-RF",
            "bayes-ET",
            "genetic",
            "optuna-tpe",
            "optuna-gp",
        ):
            row: list[Any] = [method]
            if method == "grid":
                ppd = [grid_points(len(OBJECTIVES[function]().space), b) for b in budgets]
                for b in budgets:
                    r = regret(grid[(function, b)], b, optimum)
                    summary[(function, method, b)] = r
                    row.append(f"{r:.3g} [{r:.3g}, {r:.3g}]")
                row += [1, "-", f"{' / '.join(map(str, ppd))} points a dimension"]
                rows.append(row)
                continue
            runs = results[(function, method)]
            for b in budgets:
                med, q1, q3 = median_iqr([regret(v, b, optimum) for v, _ in runs])
                summary[(function, method, b)] = med
                row.append(f"{med:.3g} [{q1:.3g}, {q3:.3g}]")
            row += [len(runs), statistics.median(s for _, s in runs), ""]
            rows.append(row)
        print_table(
            f"{function} (optimum {optimum:g}): regret, median [25th, 75th percentile] over seeds",
            ["strategy", *[f"after {b}" for b in budgets], "seeds", "s per run", "note"],
            rows,
        )
        print()
    print(f"{len(jobs) + len(grid_jobs)} runs in {elapsed:.0f} s on 2 worker processes")
    print()

    b = min(budgets)
    beats_random = all(summary[(f, "bayes-GP", b)] < summary[(f, "random", b)] for f in functions)
    vs_optuna = [f for f in functions if f in ("branin", "hartmann6")]
    gaps = {
        f: summary[(f, "bayes-GP", b)] - min(summary[(f, "optuna-tpe", b)], summary[(f, "optuna-gp", b)])
        for f in vs_optuna
    }
    matches_optuna = all(g <= 0 or math.isclose(g, 0, abs_tol=1e-9) for g in gaps.values())
    verdict(
        beats_random and matches_optuna,
        f"bayes (GP) median regret after {b}: "
        f"{'below' if beats_random else 'NOT below'} random on {', '.join(functions)}; "
        + "; ".join(
            f"{f}: {summary[(f, 'bayes-GP', b)]:.3g} vs Optuna's better {summary[(f, 'bayes-GP', b)] - g:.3g}"
            for f, g in gaps.items()
        )
        + (" (no worse)" if matches_optuna else " (worse)"),
    )


if __name__ == "__main__":
    main()
