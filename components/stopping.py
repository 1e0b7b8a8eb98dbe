"""Successive halving over epochs: the rungs, Hyperband's brackets and the ASHA decision at a rung.

ASHA (Li et al., "A System for Massively Parallel Hyperparameter Tuning", MLSys 2020), in its
stopping form (a stopped trial is never resumed), as Optuna's `SuccessiveHalvingPruner` and Ray
Tune's `ASHAScheduler` apply it: a trial that has trained `r` epochs, `r` a rung
(``min_epochs · reduction_factor^i`` below the maximum epochs), goes on only if its value is among
the top ``max(1, n // reduction_factor)`` of the ``n`` values recorded at that rung, its own
included. Hyperband (Li et al., JMLR 2018) hedges over how early to judge: bracket ``b`` runs
the same rule from its rung ``b`` on, over the trials of its own bracket only.

What "the trials that reached the rung so far" means here: the completed and pruned trials that
had finished when the trial was planned (its `StopPolicy` snapshot), each counted at every rung
its curve reached. A rung's record is a multiset of values, so it does not depend on the order
in which those trials finished: a study at ``n_parallel: 1`` decides the same every time, and a
resumed study, which records its finished trials again, decides as the uninterrupted one would.
Trials still in flight elsewhere are not seen (a trial runs in its own process with its
snapshot; Optuna's in-process pruner would see them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "HALVING_KINDS",
    "RungDecision",
    "bracket_of",
    "bracket_sizes",
    "hyperband_brackets",
    "judge_at_rung",
    "rung_epochs",
]

HALVING_KINDS = ("asha", "hyperband")


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
        cutoff: The value it had to reach: the ``top``-th best at the rung, its own included.
        top: How many of the rung's trials go on, ``max(1, n // reduction_factor)``.
        n: Trials at the rung, this one included.
    """

    keep: bool
    cutoff: float
    top: int
    n: int


def judge_at_rung(value: float, recorded: Sequence[float], reduction_factor: int, mode: str) -> RungDecision:
    """Whether a trial at a rung is among the top ``1/reduction_factor`` of the trials there.

    Args:
        value: The trial's metric after the rung's epochs.
        recorded: The values of the other trials recorded at that rung.
        reduction_factor: eta.
        mode: ``max`` or ``min``.

    Returns:
        The decision. With fewer than `reduction_factor` trials at the rung only the best goes
        on (a stopped trial cannot be resumed when better ones arrive); ties go on.
    """
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', not {mode!r}")
    values = sorted([*recorded, value], reverse=mode == "max")
    top = max(1, len(values) // reduction_factor)
    cutoff = values[top - 1]
    keep = value >= cutoff if mode == "max" else value <= cutoff
    return RungDecision(keep=keep, cutoff=cutoff, top=top, n=len(values))
