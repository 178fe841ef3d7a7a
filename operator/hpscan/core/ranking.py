"""Which combinations lead, honestly: Pareto dominance for several objectives, and ties within statistical errors.
Pure: plain values in, plain values out (hpscan.core.results folds records with them, the status and the report
say what they find).

A metric ``X`` whose record also carries ``X_err`` (hpscan.api.contract.error_metric) has a statistical
uncertainty: two values are *tied within errors* when their intervals ``X ± X_err`` overlap, i.e.
``|X1 - X2| <= err1 + err2``. A leader tied with others is not named the one winner.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

Goal = Literal["minimize", "maximize"]


def better_first(value: float, goal: Goal) -> float:
    """A sort key under which the better value comes first whatever the goal."""
    return value if goal == "minimize" else -value


def dominates(a: Sequence[float], b: Sequence[float], goals: Sequence[Goal]) -> bool:
    """Whether point ``a`` Pareto-dominates ``b``: no worse in every objective and better in at least one."""
    keys_a = [better_first(v, g) for v, g in zip(a, goals, strict=True)]
    keys_b = [better_first(v, g) for v, g in zip(b, goals, strict=True)]
    return all(x <= y for x, y in zip(keys_a, keys_b, strict=True)) and keys_a != keys_b


def pareto_ids(points: Mapping[str, Sequence[float]], goals: Sequence[Goal]) -> list[str]:
    """The ids of the points no other point dominates (the Pareto set), ordered by the first objective (better
    first), then by id. Two points with equal values both belong to it."""
    front = [i for i, p in points.items() if not any(dominates(q, p, goals) for j, q in points.items() if j != i)]
    return sorted(front, key=lambda i: (better_first(points[i][0], goals[0]), i))


def overlap(value: float, error: float | None, other: float, other_error: float | None) -> bool:
    """Whether ``value ± error`` and ``other ± other_error`` overlap (a missing error counts as none)."""
    return abs(value - other) <= (error or 0.0) + (other_error or 0.0)


def tied_with_best(leaders: Sequence[tuple[str, float, float | None]]) -> list[str]:
    """Of ``leaders`` (id, value, error), best first: the ids whose value overlaps the best's within errors, the
    best's included; empty when the best stands alone (then it may be named the winner)."""
    if not leaders:
        return []
    _, best, best_error = leaders[0]
    tied = [i for i, value, error in leaders if overlap(best, best_error, value, error)]
    return tied if len(tied) > 1 else []


def tie_note(tied: Sequence[str], listed: int) -> str:
    """The words the status and the report use for a tie at the top: '' when there is none."""
    if not tied:
        return ""
    more = " (perhaps more beyond them)" if len(tied) == listed else ""
    return f"tied within errors: {len(tied)} of the {listed} best{more} ({', '.join(tied)})"
