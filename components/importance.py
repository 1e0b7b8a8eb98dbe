"""Which hyperparameters mattered: functional ANOVA main effects on a random-forest surrogate.

Functional ANOVA (Hutter, Hoos and Leyton-Brown, "An Efficient Approach for Assessing
Hyperparameter Importance", ICML 2014) splits the variance of the objective over the search
space into the main effect of each parameter, the interactions, and so on. A parameter's
importance is the fraction of the variance its main effect explains; the fractions sum to at most
1, and what they leave is interactions. The objective is a scikit-learn `RandomForestRegressor`
fitted to the trials, each parameter scaled to [0, 1] as the search samples it (log scale where
``log``, categories as equal bins), and the space weighted uniformly there. Every tree is a
piecewise-constant function over boxes, so its marginals are exact sums over its leaves (no
sampling); each tree's fractions are computed alone and averaged over the forest, as in the paper.

Written here rather than taken from a library: the `fanova` package needs pyrfr (its own forest,
a C++ build) instead of scikit-learn's, and Optuna's evaluator would make Optuna, a test-only
dependency here, a runtime one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from hyperflow.components.config import ExperimentConfig
    from hyperflow.components.search import SearchSpace
    from hyperflow.components.study import TrialRecord

__all__ = ["MIN_TRIALS", "fanova_main_effects", "importance_trials", "param_importances", "study_importances"]

MIN_TRIALS = 10  # fewer trials say too little for a surrogate to split the variance


def _leaf_boxes(tree: Any, n_dims: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every leaf of a fitted scikit-learn tree as a box in [0, 1]^d, with its value."""
    t = tree.tree_
    low = np.zeros((t.node_count, n_dims))
    high = np.ones((t.node_count, n_dims))
    leaves = []
    stack = [0]
    while stack:
        node = stack.pop()
        left, right = int(t.children_left[node]), int(t.children_right[node])
        if left == -1:
            leaves.append(node)
            continue
        f, cut = int(t.feature[node]), float(np.clip(t.threshold[node], 0.0, 1.0))
        for child in (left, right):
            low[child], high[child] = low[node], high[node]
        high[left, f] = min(high[left, f], cut)  # scikit-learn sends x <= threshold left
        low[right, f] = max(low[right, f], cut)
        stack.extend((left, right))
    idx = np.array(leaves)
    return low[idx], high[idx], t.value[idx, 0, 0].astype(float)


def _tree_fractions(tree: Any, n_dims: int) -> np.ndarray | None:
    """Main-effect variance fractions of one tree; None for a tree that is constant."""
    low, high, value = _leaf_boxes(tree, n_dims)
    width = high - low
    volume = np.prod(width, axis=1)
    mean = float(volume @ value)
    total = float(volume @ (value - mean) ** 2)
    if not total > 1e-12 * max(1.0, mean * mean):
        return None
    fractions = np.zeros(n_dims)
    for j in range(n_dims):
        cuts = np.unique(np.concatenate([low[:, j], high[:, j], [0.0, 1.0]]))
        mids = (cuts[:-1] + cuts[1:]) / 2.0
        lengths = np.diff(cuts)
        # The marginal at x_j: the leaves whose box holds x_j, each weighted by its volume in the
        # other dimensions.
        covers = (low[:, j][None, :] < mids[:, None]) & (mids[:, None] < high[:, j][None, :])
        other = np.where(width[:, j] > 0, volume / np.maximum(width[:, j], 1e-300), 0.0)
        marginal = covers @ (other * value)
        fractions[j] = float(lengths @ (marginal - mean) ** 2) / total
    return fractions


def fanova_main_effects(
    x: np.ndarray, y: np.ndarray, *, seed: int = 0, n_trees: int = 64
) -> tuple[np.ndarray, Any]:
    """Each column's main-effect fraction of the variance of a forest fitted to (x, y).

    Args:
        x: Trials by parameters, each column scaled to [0, 1] (the space's own measure).
        y: The objective of each trial.
        seed: The forest's random state (the same seed gives the same fractions).
        n_trees: Trees in the forest.

    Returns:
        The fractions (each in [0, 1], summing to at most 1) and the fitted forest.
    """
    from sklearn.ensemble import RandomForestRegressor

    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError("x must be a 2-d array with one row per value of y")
    forest = RandomForestRegressor(n_estimators=n_trees, random_state=seed, n_jobs=1)
    forest.fit(x, y)
    per_tree = [f for tree in forest.estimators_ if (f := _tree_fractions(tree, x.shape[1])) is not None]
    if not per_tree:
        return np.zeros(x.shape[1]), forest
    return np.clip(np.mean(per_tree, axis=0), 0.0, 1.0), forest


def importance_trials(
    space: SearchSpace, trials: Sequence[tuple[Mapping[str, Any], float | None]]
) -> tuple[np.ndarray, np.ndarray]:
    """The trials a surrogate can use, as unit-scaled rows and values.

    Trials with a finite value and every searched parameter in the space count; the caller
    passes completed and pruned trials (a pruned trial's value is its last, as the strategy
    was told), failed ones have no value.
    """
    rows, values = [], []
    for params, value in trials:
        if value is None or not math.isfinite(value) or not space.contains(params):
            continue
        rows.append([d.to_unit(params[d.name]) for d in space])
        values.append(float(value))
    return np.array(rows, dtype=float).reshape(len(rows), len(space)), np.array(values, dtype=float)


def param_importances(
    space: SearchSpace,
    trials: Sequence[tuple[Mapping[str, Any], float | None]],
    *,
    seed: int = 0,
    min_trials: int = MIN_TRIALS,
) -> dict[str, float]:
    """Each searched parameter's fraction of the objective's variance (its main effect).

    Args:
        space: The search space.
        trials: (params, value) of the finished trials; those without a value are left out.
        seed: The surrogate's random state.
        min_trials: Fewer usable trials than this give no importances.

    Returns:
        ``{name: fraction}`` in the space's order (fractions sum to at most 1); empty with too
        few trials, no dimension, or values that do not vary.
    """
    x, y = importance_trials(space, trials)
    if len(space) == 0 or len(y) < min_trials or np.ptp(y) == 0:
        return {}
    fractions, _ = fanova_main_effects(x, y, seed=seed)
    return {d.name: float(f) for d, f in zip(space, fractions, strict=True)}


def study_importances(
    cfg: ExperimentConfig, records: Sequence[TrialRecord], errors: list[str] | None = None
) -> dict[str, float]:
    """The importances a finished study logs (`importance_<param>`); empty below `MIN_TRIALS`.

    The surrogate is fitted to the completed and pruned trials, each with the value the strategy
    was told. Importance never fails a study: an error is appended to `errors` instead.
    """
    from hyperflow.components.search import SearchSpace

    trials = [(r.params, r.value) for r in records if r.state in ("completed", "pruned")]
    try:
        return param_importances(SearchSpace.from_config(cfg), trials, seed=cfg.seed)
    except Exception as exc:  # a diagnostic; the study's results stand without it
        if errors is not None:
            errors.append(f"importance: {type(exc).__name__}: {exc}")
        return {}
