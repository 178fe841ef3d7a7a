"""Every decision about a scan, pure: which shards to start or stop, where, and what phase the scan is in.

Shared by `hpscan run` and the operator through hpscan.engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from hpscan.api.spec import HPScanSpec
from hpscan.api.status import ACTIVE_PHASES, ENDED_PHASES, Reason, ScanPhase, ShardPhase, ShardStatus, SiteStatus
from hpscan.core.brokering import Start, Target, broker, no_site_left
from hpscan.core.planning import Plan
from hpscan.core.results import Aggregate


@dataclass(frozen=True)
class Decision:
    """What to do next for one scan."""

    start: list[Start] = field(default_factory=list)
    """Shards to submit now, in order, each with its site."""
    stop: list[int] = field(default_factory=list)
    """Shards whose jobs must stop (suspend)."""
    withdraw: dict[int, tuple[str, str]] = field(default_factory=dict)
    """Shards whose unfinished job is removed because its site failed it (reason, message); they move."""
    waiting: dict[int, str] = field(default_factory=dict)
    """Shards that must move but that no site can take now: they wait (NoUsableSite)."""

    @property
    def start_shards(self) -> list[int]:
        return [s.shard for s in self.start]


def decide(
    spec: HPScanSpec,
    shard_count: int,
    states: Mapping[int, ShardStatus],
    targets: Sequence[Target],
    sites: Mapping[str, SiteStatus],
    now: datetime,
) -> Decision:
    """Start waiting shards on usable sites up to spec.parallelism (hpscan.core.brokering.broker); stop active
    ones when suspended.

    `states` holds what the backends report; a shard missing from it has never been submitted. Shards that ended
    (Succeeded, or Failed for a reason of their own) are never started again: retries happen inside the backend.
    A shard that failed for its site's sake (GPUUnavailable, held too long, its site excluded) moves instead.
    """
    active = sorted(i for i, s in states.items() if s.phase in ACTIVE_PHASES)
    if spec.suspend:
        return Decision(stop=active)
    brokered = broker(shard_count, states, targets, sites, parallelism=spec.parallelism, now=now)
    return Decision(start=brokered.starts, withdraw=brokered.withdraw, waiting=brokered.waiting)


def decide_phase(
    plan: Plan,
    agg: Aggregate,
    shards: list[ShardStatus],
    suspend: bool,
    targets: Sequence[Target] = (),
    sites: Mapping[str, SiteStatus] | None = None,
) -> tuple[ScanPhase, str, str]:
    """The scan's phase, with a CamelCase reason and a one-line message. A scan whose every site is excluded
    fails (nothing can run it); one whose sites are only unreachable waits for them."""
    limit = plan.spec.failure_policy.max_failed_combinations
    if limit is not None and agg.failed > limit:
        return (
            ScanPhase.FAILED,
            Reason.TOO_MANY_FAILED_COMBINATIONS,
            f"{agg.failed} combinations failed, more than {limit}",
        )
    failed = [s for s in shards if s.phase == ShardPhase.FAILED]
    ended = all(s.phase in ENDED_PHASES for s in shards)
    if not ended and not suspend and sites and (why := no_site_left(targets, sites)):
        excluded = next(iter(sites.values()))
        return ScanPhase.FAILED, excluded.reason or Reason.NO_USABLE_SITE, f"no usable site is left: {why}"
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
            f"{agg.succeeded} of {plan.total} combinations succeeded"
            + (f", {agg.pruned} pruned" if agg.pruned else ""),
        )
    if suspend:
        return ScanPhase.SUSPENDED, Reason.SUSPENDED, "spec.suspend is true; recorded results are kept"
    if any(s.phase in {ShardPhase.RUNNING, ShardPhase.SUCCEEDED} for s in shards) or agg.recorded:
        running = sum(s.phase == ShardPhase.RUNNING for s in shards)
        return ScanPhase.RUNNING, Reason.SHARDS_RUNNING, f"{running} of {plan.shard_count} shards running"
    return ScanPhase.PENDING, Reason.SHARDS_PENDING, "waiting for shards to start"
