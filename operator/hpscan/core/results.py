"""Records -> status summary. Pure: the same records give the same summary in any order, duplicates included.

Memory does not grow with the number of records: one byte per planned combination (its state), counters, the
top-k list and, for several objectives, the Pareto set (what no record dominates: a handful, not the records).
Duplicates (a retried shard, a record read twice) are folded in: succeeded beats pruned beats failed, and a
combination ranks by its best value (in the Pareto set: its values that come first by the objectives in order).
Pruned trials (stopped early as hopeless) never rank.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hpscan.api.contract import LineProblem, Objective, ResultRecord, error_metric, parse_records
from hpscan.api.status import ParetoMember, RankedCombination
from hpscan.core.planning import Plan, position_of
from hpscan.core.ranking import Goal, better_first, dominates, tied_with_best

_NONE, _FAILED, _PRUNED, _SUCCEEDED = 0, 1, 2, 3


def error_of(record: ResultRecord, metric: str) -> float | None:
    """The statistical error a record reports for ``metric`` (``<metric>_err``); None when it reports none, or one
    that is no error (negative, not finite): a payload's odd number never stops the status."""
    error = record.metrics.get(error_metric(metric))
    return error if error is not None and math.isfinite(error) and error >= 0 else None


@dataclass
class Aggregate:
    """Running summary of the records of one plan."""

    plan: Plan
    states: bytearray = field(init=False, repr=False)
    succeeded: int = 0
    failed: int = 0
    pruned: int = 0
    epochs: int = 0
    """Epochs trained by the recorded combinations (as their records say)."""
    epochs_saved: int = 0
    """Epochs pruned combinations did not train: their max_epochs minus the epochs they ran."""
    epochs_resumed: int = 0
    """Epochs interrupted combinations did not train again: the epochs they resumed at from a checkpoint."""
    foreign: int = 0
    """Records whose id or parameters do not belong to the plan; ignored, counted so the status can say so."""
    unreadable: dict[str, int] = field(default_factory=dict)
    """Records that could not be read, by where they were (a results file, a backend's channel): skipped, never
    fatal, but counted so the status says so."""
    shard_done: list[int] = field(init=False)
    shard_failed: list[int] = field(init=False)
    top: list[RankedCombination] = field(default_factory=list)
    front: dict[str, ParetoMember] = field(default_factory=dict)
    """A multi-objective scan's Pareto set so far, by id (empty for one objective)."""

    def __post_init__(self) -> None:
        self.states = bytearray(self.plan.total)
        self.shard_done = [0] * self.plan.shard_count
        self.shard_failed = [0] * self.plan.shard_count

    @property
    def objective(self) -> Objective:
        return self.plan.spec.objective

    @property
    def recorded(self) -> int:
        return self.succeeded + self.failed + self.pruned

    def _count(self, state: int, shard: int, step: int) -> None:
        if state == _SUCCEEDED:
            self.succeeded += step
        elif state == _PRUNED:
            self.pruned += step
        elif state == _FAILED:
            self.failed += step
            self.shard_failed[shard] += step

    def _shard(self, record: ResultRecord, position: int) -> int:
        """Where a record counts: its plan shard, or for workers that pull, the worker that recorded it."""
        if self.plan.pull and 0 <= record.shard < self.plan.shard_count:
            return record.shard
        return self.plan.shard_of(position)

    def _rank_key(self, entry: RankedCombination) -> tuple[float, str]:
        value = entry.value if self.objective.goal == "minimize" else -entry.value
        return (value, entry.id)  # the id breaks ties, so the order never depends on arrival

    def add(self, record: ResultRecord) -> bool:
        """Fold one record in; returns whether the summary changed."""
        if not self.plan.owns(record.id, record.parameters):
            self.foreign += 1
            return False
        position = position_of(record.id)
        shard = self._shard(record, position)
        value = record.objective_value(self.objective)
        new_state = _SUCCEEDED if value is not None else _PRUNED if record.status == "pruned" else _FAILED
        old_state = self.states[position]
        changed = False
        if new_state > old_state:
            self.states[position] = new_state
            if old_state == _NONE:
                self.shard_done[shard] += 1
                self.epochs += record.epochs or 0
                self.epochs_resumed += sum(record.resumed_from or ())
                if new_state == _PRUNED and record.max_epochs and record.epochs is not None:
                    self.epochs_saved += max(record.max_epochs - record.epochs, 0)
            self._count(old_state, shard, -1)
            self._count(new_state, shard, +1)
            changed = True
        if value is not None:
            error = error_of(record, self.objective.metric)
            ranked = RankedCombination(
                id=record.id, parameters=record.parameters, value=value, error=error, shard=shard
            )
            changed = self._offer(ranked) or changed
            if self.plan.spec.multi_objective:
                changed = self._offer_front(record, shard) or changed
        return changed

    @property
    def goals(self) -> list[Goal]:
        return [goal.goal for goal in self.plan.spec.goals]

    def _point(self, member: ParetoMember) -> list[float]:
        """A member's values in the order of the objectives."""
        return [member.values[goal.metric] for goal in self.plan.spec.goals]

    def _front_key(self, member: ParetoMember) -> tuple[float, ...]:
        return tuple(better_first(v, g) for v, g in zip(self._point(member), self.goals, strict=True))

    def _offer_front(self, record: ResultRecord, shard: int) -> bool:
        """Fold a succeeded record into the Pareto set; returns whether the set changed."""
        values = {goal.metric: record.objective_value(goal) for goal in self.plan.spec.goals}
        if any(v is None for v in values.values()):
            return False  # a record without every objective cannot be placed
        member = ParetoMember(
            id=record.id,
            parameters=record.parameters,
            values={k: float(v) for k, v in values.items() if v is not None},
            errors={k: e for k in values if (e := error_of(record, k)) is not None},
            shard=shard,
        )
        held = self.front.get(record.id)
        if held is not None:  # the same combination twice: its values that come first stay
            if self._front_key(member) >= self._front_key(held):
                return False
            del self.front[record.id]
        point = self._point(member)
        if any(dominates(self._point(m), point, self.goals) for m in self.front.values()):
            return held is not None
        for other in [i for i, m in self.front.items() if dominates(point, self._point(m), self.goals)]:
            del self.front[other]
        self.front[record.id] = member
        return True

    def pareto(self) -> list[ParetoMember]:
        """The Pareto set by the first objective, better first, then by id."""
        return sorted(self.front.values(), key=lambda m: (self._front_key(m), m.id))

    def tied(self) -> list[str]:
        """Ids of the top combinations tied with the best within errors (hpscan.core.ranking.tied_with_best)."""
        return tied_with_best([(entry.id, entry.value, entry.error) for entry in self.top])

    def _offer(self, entry: RankedCombination) -> bool:
        k = self.plan.spec.top_k
        for i, held in enumerate(self.top):
            if held.id == entry.id:
                if self._rank_key(entry) < self._rank_key(held):
                    self.top[i] = entry
                    self.top.sort(key=self._rank_key)
                    return True
                return False
        if len(self.top) < k or self._rank_key(entry) < self._rank_key(self.top[-1]):
            self.top.append(entry)
            self.top.sort(key=self._rank_key)
            del self.top[k:]
            return True
        return False

    def extend(self, records: Iterable[ResultRecord]) -> bool:
        changed = False
        for record in records:
            changed = self.add(record) or changed
        return changed

    @property
    def best(self) -> RankedCombination | None:
        return self.top[0] if self.top else None


def aggregate(plan: Plan, records: Iterable[ResultRecord]) -> Aggregate:
    """Summarise records against a plan."""
    summary = Aggregate(plan)
    summary.extend(records)
    return summary


def read_records(path: Path) -> tuple[list[ResultRecord], list[LineProblem]]:
    """Read a results.jsonl; a missing file holds no records."""
    if not path.exists():
        return [], []
    with path.open(encoding="utf-8", errors="replace") as handle:
        return parse_records(handle)


def iter_record_lines(records: Iterable[ResultRecord]) -> Iterator[str]:
    """Records as JSON lines, the format of results.jsonl."""
    for record in records:
        yield json.dumps(record.to_wire(), allow_nan=False) + "\n"
