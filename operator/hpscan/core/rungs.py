"""ASHA's rung thresholds for workers that stop trials themselves (hpscan.api.trials.Rungs), pure.

Optuna's SuccessiveHalvingPruner judges a trial at rung r (epoch minEpochs * reductionFactor**r) against the values
every trial of the study recorded there (its "completed rung" values), its own included: with n values there, the
trial goes on when at most ``max(0, n // reductionFactor - 1)`` of them are better than its value. A worker's copy
of those values is a round trip old, and values that arrive meanwhile loosen the rule only by raising n (a better
one makes it stricter). So the threshold a worker gets is the one for the most values the rung can ever hold, all
worse than the judged trial's: the values now, plus one for every trial that may still report there (each open
trial, which may also be taken back and trained again, and each not handed out yet). A trial worse than that
threshold is pruned by the study too, whenever its report arrives, so a worker never prunes against thresholds
stricter than the study's. A rung whose bound keeps every value known now has no threshold: the operator's stop
requests remain the fallback there. Outside the bound: a trial that passes a rung, is taken back from its worker
and passes it again, all between two thresholds, adds two values where the bound counted one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from hpscan.api.trials import Rung, Rungs


def rung_epoch(rung: int, min_epochs: int, reduction_factor: int) -> int:
    """The epoch at which ASHA judges rung ``rung`` (Optuna's min_early_stopping_rate is 0 in hpscan)."""
    return min_epochs * reduction_factor**rung


def promotable_index(competing: int, reduction_factor: int) -> int:
    """Optuna's rule: among ``competing`` values (the judged trial's own included), the one at this index (best
    first) is the worst that goes on."""
    return max(0, competing // reduction_factor - 1)


def rung_threshold(
    values: Sequence[float], still_to_come: int, reduction_factor: int, goal: Literal["minimize", "maximize"]
) -> float | None:
    """The worst value a trial may have at a rung and go on, whatever the ``still_to_come`` trials that may report
    there yet (the judged one included) report: None when no value known now would be pruned by that bound."""
    known = sorted((v for v in values if not math.isnan(v)), reverse=goal == "maximize")
    index = promotable_index(len(known) + max(still_to_come, 1), reduction_factor)
    return known[index] if index < len(known) else None


def worker_rungs(
    values_by_rung: Mapping[int, Sequence[float]],
    still_to_come: int,
    metric: str,
    goal: Literal["minimize", "maximize"],
    min_epochs: int,
    reduction_factor: int,
) -> Rungs:
    """The Rungs line for workers: each rung with a threshold (values_by_rung: rung -> the study's values there)."""
    rungs = []
    for rung, values in sorted(values_by_rung.items()):
        threshold = rung_threshold(values, still_to_come, reduction_factor, goal)
        if threshold is not None:
            rungs.append(Rung(epoch=rung_epoch(rung, min_epochs, reduction_factor), threshold=threshold))
    return Rungs(metric=metric, goal=goal, rungs=rungs)


class RungsSent:
    """The thresholds each worker was sent last, so a worker gets a rungs line only when they changed."""

    def __init__(self) -> None:
        self._sent: dict[int, Rungs] = {}

    def lines(self, rungs: Rungs | None, workers: Iterable[int]) -> dict[int, list[dict]]:
        """The rungs line for each of ``workers`` not sent ``rungs`` yet (none while no rung has a threshold)."""
        if rungs is None or not rungs.rungs:
            return {}
        out: dict[int, list[dict]] = {}
        for worker in sorted(workers):
            if self._sent.get(worker) != rungs:
                self._sent[worker] = rungs
                out[worker] = [{"rungs": rungs.to_wire()}]
        return out

    def forget(self, worker: int) -> None:
        """The worker's unsent lines were dropped (it left): a new job of it is sent the thresholds again."""
        self._sent.pop(worker, None)
