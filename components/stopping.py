"""Successive halving over epochs: the rungs, Hyperband's brackets and the ASHA decision at a rung.

ASHA (Li et al., "A System for Massively Parallel Hyperparameter Tuning", MLSys 2020), in its
stopping form (a stopped trial is never resumed), as Ray Tune's `ASHAScheduler` applies it: a
trial that has trained `r` epochs, `r` a rung (``min_epochs · reduction_factor^i`` below the
maximum epochs), goes on only if its value is at least the ``1 - 1/reduction_factor`` quantile of
the values recorded at that rung so far (linear interpolation, as ``numpy.percentile``): it is in
the top ``1/reduction_factor`` of the trials recorded there. The first trial at a rung goes on,
and ties with the cut-off go on. Hyperband (Li et al., JMLR 2018) hedges over how early to
judge: bracket ``b`` runs the same rule from its rung ``b`` on, over the trials of its own
bracket only.

Why the quantile of the recorded values and not a count (Optuna's `SuccessiveHalvingPruner`
keeps the top ``max(1, n // reduction_factor)`` of the ``n`` values, its own included): a
stopped trial cannot be promoted later, as Li et al.'s promotion form would when more trials
arrive, so a rung's first few trials are judged on a thin record. The count then asks each of
them to be the very best there, while the quantile is the usual estimate of the rung's top
``1/reduction_factor`` cut-off and reaches the same share as the record grows. Studies here run
tens of trials, so the upper rungs stay in that thin regime for most of a study (the recorded
curves in bench/early_stopping.py: README, "Early stopping").

What "the trials that reached the rung so far" means here: the completed and pruned trials that
had finished when the trial was planned (its `StopPolicy` snapshot), each counted at every rung
its curve reached. A rung's record is a multiset of values, so it does not depend on the order
in which those trials finished: a study at ``n_parallel: 1`` decides the same every time, and a
resumed study, which records its finished trials again, decides as the uninterrupted one would.
Trials still in flight elsewhere are not seen (a trial runs in its own process with its
snapshot; Ray Tune's scheduler, in the driver, would see them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DEFAULT_REDUCTION_FACTOR",
    "HALVING_KINDS",
    "RungDecision",
    "bracket_of",
    "bracket_sizes",
    "default_first_rung",
    "hyperband_brackets",
    "judge_at_rung",
    "rung_epochs",
]

HALVING_KINDS = ("asha", "hyperband")

# What `early_stopping.reduction_factor` is when a config leaves it out: 4 for asha (Ray Tune's
# `ASHAScheduler` and Optuna's `SuccessiveHalvingPruner`), 3 for hyperband (Li et al.'s
# Hyperband, Ray Tune's `HyperBandScheduler` and Optuna's `HyperbandPruner`).
DEFAULT_REDUCTION_FACTOR = {"asha": 4, "hyperband": 3}


def default_first_rung(max_epochs: int) -> int:
    """asha's and hyperband's first rung when a config leaves `min_epochs` out: ``max(1, max_epochs // 100)``.

    Optuna's ``min_resource="auto"`` (a hundredth of the longest trial, at least one step), which
    is also Ray Tune's ``grace_period=1`` for budgets below 200 epochs. Early values rank trials
    well enough for a first cut; a later first rung costs every trial those epochs by
    construction (README, "Early stopping").
    """
    return max(1, max_epochs // 100)


def rung_epochs(min_epochs: int, reduction_factor: int, max_epochs: int) -> tuple[int, ...]:
    """The rungs: epochs trained at which a trial is judged, ``min_epochs · reduction_factor^i``.

    Only rungs below `max_epochs` count: a trial's last epoch is never judged (it has finished).

    Args:
        min_epochs: The first rung.
        reduction_factor: The factor between rungs (at least 2).
        max_epochs: The most epochs any trial trains (with `max_epochs` searched, the space's
            upper bound).

    Returns:
        The rungs in increasing order; empty when `min_epochs` is not below `max_epochs`.
    """
    if min_epochs < 1 or reduction_factor < 2:
        raise ValueError("min_epochs must be at least 1 and reduction_factor at least 2")
    rungs = []
    r = min_epochs
    while r < max_epochs:
        rungs.append(r)
        r *= reduction_factor
    return tuple(rungs)


def hyperband_brackets(min_epochs: int, reduction_factor: int, max_epochs: int) -> int:
    """How many brackets Hyperband has: ``floor(log_eta(max_epochs / min_epochs)) + 1``.

    Bracket ``b`` judges trials from rung ``b`` on; the last bracket starts at
    ``min_epochs · eta^s_max``, which is past every rung when that equals `max_epochs` (Li et
    al.'s most conservative bracket, training every trial fully).
    """
    s_max = 0
    while min_epochs * reduction_factor ** (s_max + 1) <= max_epochs:
        s_max += 1
    return s_max + 1


def bracket_sizes(n_brackets: int, reduction_factor: int) -> tuple[int, ...]:
    """Trials per bracket in one Hyperband round: ``ceil((s_max + 1) / (s + 1) · eta^s)``.

    Li et al.'s allocation, ``s`` being the bracket's number of halvings (bracket 0 has
    ``s_max``), so that every bracket gets about the same total epochs.
    """
    s_max = n_brackets - 1
    return tuple(
        math.ceil((s_max + 1) / (s_max - b + 1) * reduction_factor ** (s_max - b)) for b in range(n_brackets)
    )


def _round(n_brackets: int, reduction_factor: int) -> tuple[int, ...]:
    # Smooth weighted round-robin: the brackets interleave in proportion to their sizes, so the
    # first trials of a study already cover every bracket.
    sizes = bracket_sizes(n_brackets, reduction_factor)
    total = sum(sizes)
    current = [0] * n_brackets
    order = []
    for _ in range(total):
        current = [c + s for c, s in zip(current, sizes, strict=True)]
        pick = max(range(n_brackets), key=lambda b: (current[b], -b))
        current[pick] -= total
        order.append(pick)
    return tuple(order)


def bracket_of(number: int, n_brackets: int, reduction_factor: int) -> int:
    """The Hyperband bracket of trial `number`: a function of the number alone (resume agrees).

    Trial numbers cycle through rounds of ``sum(bracket_sizes(...))`` trials, each round holding
    every bracket's share, interleaved.
    """
    if number < 0:
        raise ValueError(f"trial number must be >= 0, not {number}")
    order = _round(n_brackets, reduction_factor)
    return order[number % len(order)]


@dataclass(frozen=True)
class RungDecision:
    """The outcome of judging a trial at a rung.

    Attributes:
        keep: Whether the trial goes on to the next rung.
        cutoff: The value it had to reach: the ``1 - 1/reduction_factor`` quantile of the values
            recorded at the rung (None when none was: the first trial there goes on).
        n: Values recorded at the rung before this trial's.
        quantile: The quantile the cut-off is, ``1 - 1/reduction_factor``.
    """

    keep: bool
    cutoff: float | None
    n: int
    quantile: float


def judge_at_rung(value: float, recorded: Sequence[float], reduction_factor: int, mode: str) -> RungDecision:
    """Whether a trial at a rung is in the top ``1/reduction_factor`` of the values recorded there.

    Ray Tune's ASHA rule: the cut-off is the ``(1 - 1/reduction_factor)`` quantile of the recorded
    values (``numpy.percentile``'s linear interpolation, on the values negated when lower is
    better), and a trial below it stops.

    Args:
        value: The trial's metric after the rung's epochs.
        recorded: The values of the other trials recorded at that rung.
        reduction_factor: eta.
        mode: ``max`` or ``min``.

    Returns:
        The decision. With nothing recorded at the rung the trial goes on; ties go on.
    """
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', not {mode!r}")
    quantile = 1 - 1 / reduction_factor
    if not recorded:
        return RungDecision(keep=True, cutoff=None, n=0, quantile=quantile)
    sign = 1.0 if mode == "max" else -1.0
    cutoff = float(np.percentile([sign * v for v in recorded], 100 * quantile))
    return RungDecision(keep=sign * value >= cutoff, cutoff=sign * cutoff, n=len(recorded), quantile=quantile)
