"""How long a running scan has left, from when its records arrived (pure: times in seconds on one clock).

The pace has two parts, pooled over the shards of this run: the time from a shard's start to its first record
(a payload's start-up: reading or generating data, the first training batch) and the time between two records of
one shard. A running shard finishes ``left`` intervals after its last record; a pending shard waits for a free
worker, then takes one start-up and ``left - 1`` intervals. The estimate counts down between records, and grows
while a shard's records stay away: its own interval, counted as if the next record came now, is then the least
the rest can take (before its first record: its start-up so far, against the pooled one, slows the rest alike).
A shard still busy after the time the pace gave it is overdue.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ShardProgress:
    """One shard as a live view saw it in this run."""

    size: int
    """Combinations in the shard."""
    done: int
    """Combinations recorded, in this run and earlier ones."""
    started: float | None = None
    """When the shard was seen running in this run; None while it has not run."""
    records: int = 0
    """Records that arrived in this run."""
    first: float | None = None
    """When the first of them arrived."""
    last: float | None = None
    """When the latest of them arrived."""
    ended: bool = False
    """Succeeded or failed for good: nothing more will come from it."""

    @property
    def left(self) -> int:
        return 0 if self.ended else max(0, self.size - self.done)


@dataclass(frozen=True)
class Estimate:
    """Time left, or None before the pace is known (no record in this run yet, or no interval to measure)."""

    seconds: float | None
    overdue: bool = False
    """A running shard is still busy after the time its pace gave it."""


@dataclass(frozen=True)
class Pace:
    startup: float | None
    """Mean seconds from a shard's start to its first record."""
    interval: float | None
    """Seconds between two records of one shard, pooled over shards."""


def pace(shards: Sequence[ShardProgress]) -> Pace:
    """The pooled start-up time and record interval of the shards' records in this run."""
    startups = [s.first - s.started for s in shards if s.started is not None and s.first is not None]
    spans = [
        (s.last - s.first, s.records - 1)
        for s in shards
        if s.records >= 2 and s.first is not None and s.last is not None
    ]
    gaps = sum(n for _, n in spans)
    return Pace(
        startup=sum(startups) / len(startups) if startups else None,
        interval=sum(span for span, _ in spans) / gaps if gaps else None,
    )


def estimate(shards: Sequence[ShardProgress], workers: int, now: float) -> Estimate:
    """Seconds until every shard with combinations left has recorded them, with ``workers`` shards at once."""
    speed = pace(shards)
    free: list[float] = []  # when each worker is free again
    overdue = False
    for shard in shards:
        left = shard.left
        if left == 0 or shard.started is None:
            continue
        if shard.first is not None and shard.last is not None:
            if speed.interval is None:
                return Estimate(None)
            countdown = shard.last + left * speed.interval - now
            # while a record stays away, the shard's own interval (as if it came now) bounds the rest from below
            slowed = max(speed.interval, (now - shard.first) / max(1, shard.records))
            overdue = overdue or countdown < 0
            finish = now + max(countdown, (left - 1) * slowed)
        else:
            if speed.startup is None or (left > 1 and speed.interval is None):
                return Estimate(None)
            rest = (left - 1) * (speed.interval or 0.0)
            due = shard.started + speed.startup + rest
            overdue = overdue or due < now
            # a start-up that runs long (a loaded machine, a slow file system) slows its records alike
            slowdown = max(1.0, (now - shard.started) / speed.startup) if speed.startup > 0 else 1.0
            finish = max(due, now + rest * slowdown)
        free.append(finish)
    pending = [s for s in shards if s.left > 0 and s.started is None]
    if pending and (speed.startup is None or (speed.interval is None and any(s.left > 1 for s in pending))):
        return Estimate(None)
    free += [now] * max(0, max(1, workers) - len(free))
    heapq.heapify(free)
    ends = list(free)
    for shard in pending:  # in index order, each on the first worker to come free
        assert speed.startup is not None
        end = heapq.heappop(free) + speed.startup + (shard.left - 1) * (speed.interval or 0.0)
        heapq.heappush(free, end)
        ends.append(end)
    return Estimate(max([now, *ends]) - now, overdue)


def per_minute(records: int, since: float, now: float) -> float | None:
    """Records per minute over ``since``..``now``; None before any time has passed."""
    return records * 60 / (now - since) if now > since else None
