"""Every decision about a scan, pure: which shards to start or stop, where, and what phase the scan is in.

Shared by `hpscan run` and the operator through hpscan.engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from hpscan.api.sites import Site
from hpscan.api.spec import HPScanSpec
from hpscan.api.status import ACTIVE_PHASES, ENDED_PHASES, Reason, ScanPhase, ShardPhase, ShardStatus
from hpscan.core.planning import Plan
from hpscan.core.results import Aggregate


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
    active = sorted(i for i, s in states.items() if s.phase in ACTIVE_PHASES)
    if spec.suspend:
        return Decision(stop=active)
    waiting = [i for i in range(shard_count) if i not in states or states[i].phase == ShardPhase.SUSPENDED]
    limit = spec.parallelism if spec.parallelism is not None else shard_count
    room = max(0, limit - len(active))
    return Decision(start=waiting[:room])


def decide_phase(plan: Plan, agg: Aggregate, shards: list[ShardStatus], suspend: bool) -> tuple[ScanPhase, str, str]:
    """The scan's phase, with a CamelCase reason and a one-line message."""
    limit = plan.spec.failure_policy.max_failed_combinations
    if limit is not None and agg.failed > limit:
        return (
            ScanPhase.FAILED,
            Reason.TOO_MANY_FAILED_COMBINATIONS,
            f"{agg.failed} combinations failed, more than {limit}",
        )
    failed = [s for s in shards if s.phase == ShardPhase.FAILED]
    ended = all(s.phase in ENDED_PHASES for s in shards)
    if failed and ended:
        # A failed shard does not stop the others: their results are worth having. The scan fails when all ended.
        first = failed[0]
        reason = first.reason or Reason.SHARD_FAILED
        where = f" on site {first.site}" if first.site else ""
        detail = f": {first.message}" if first.message else ""
        return ScanPhase.FAILED, reason, f"{len(failed)} shard(s) failed for good; shard {first.index}{where}{detail}"
    if ended:
        return (
            ScanPhase.SUCCEEDED,
            Reason.ALL_SHARDS_SUCCEEDED,
            f"{agg.succeeded} of {plan.total} combinations succeeded",
        )
    if suspend:
        return ScanPhase.SUSPENDED, Reason.SUSPENDED, "spec.suspend is true; recorded results are kept"
    if any(s.phase in {ShardPhase.RUNNING, ShardPhase.SUCCEEDED} for s in shards) or agg.recorded:
        running = sum(s.phase == ShardPhase.RUNNING for s in shards)
        return ScanPhase.RUNNING, Reason.SHARDS_RUNNING, f"{running} of {plan.shard_count} shards running"
    return ScanPhase.PENDING, Reason.SHARDS_PENDING, "waiting for shards to start"
