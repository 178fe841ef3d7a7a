"""Which shards to start, stop, and where: pure decisions shared by the local runner and the operator."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from hpscan.api.sites import Site
from hpscan.api.spec import HPScanSpec
from hpscan.api.status import ShardPhase, ShardStatus

ACTIVE = {ShardPhase.PENDING, ShardPhase.RUNNING}
"""Phases of a shard whose job exists and is not finished."""


@dataclass(frozen=True)
class Decision:
    """What to do next for one scan."""

    start: list[int] = field(default_factory=list)
    """Shards to submit now, in order."""
    stop: list[int] = field(default_factory=list)
    """Shards whose jobs must stop (suspend)."""


def assign_sites(shard_count: int, sites: Sequence[Site]) -> dict[int, Site | None]:
    """Spread shards over sites in proportion to their weights, deterministically (smooth weighted round-robin)."""
    if not sites:
        return dict.fromkeys(range(shard_count))
    total = sum(s.weight for s in sites)
    credit = [0] * len(sites)
    assignment: dict[int, Site | None] = {}
    for shard in range(shard_count):
        for i, site in enumerate(sites):
            credit[i] += site.weight
        pick = max(range(len(sites)), key=lambda i: (credit[i], -i))
        credit[pick] -= total
        assignment[shard] = sites[pick]
    return assignment


def decide(spec: HPScanSpec, shard_count: int, states: Mapping[int, ShardStatus]) -> Decision:
    """Start unsubmitted shards up to spec.parallelism (lowest index first); stop active ones when suspended.

    `states` holds what the backend reports; a shard missing from it has never been submitted. Shards that
    ended (Succeeded or Failed for good) are never started again: retries happen inside the backend.
    """
    active = sorted(i for i, s in states.items() if s.phase in ACTIVE)
    if spec.suspend:
        return Decision(stop=active)
    waiting = [i for i in range(shard_count) if i not in states or states[i].phase == ShardPhase.SUSPENDED]
    limit = spec.parallelism if spec.parallelism is not None else shard_count
    room = max(0, limit - len(active))
    return Decision(start=waiting[:room])
