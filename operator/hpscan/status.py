"""Plan + records + shard states -> the HPScan status. Pure: every backend and the local runner call this."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from hpscan.api.status import (
    Condition,
    ConditionType,
    Counts,
    HPScanStatus,
    ScanPhase,
    ShardPhase,
    ShardStatus,
)
from hpscan.planning import Plan
from hpscan.results import Aggregate

TERMINAL = {ScanPhase.SUCCEEDED, ScanPhase.FAILED}


def shard_statuses(plan: Plan, agg: Aggregate, shard_states: Mapping[int, ShardStatus]) -> list[ShardStatus]:
    """One entry per shard: the backend's view (phase, site, job) with the record counts filled in."""
    out = []
    for index in range(plan.shard_count):
        state = shard_states.get(index) or ShardStatus(index=index)
        out.append(
            state.model_copy(
                update={
                    "index": index,
                    "total": plan.shard_size(index),
                    "done": agg.shard_done[index],
                    "failed": agg.shard_failed[index],
                }
            )
        )
    return out


def decide_phase(plan: Plan, agg: Aggregate, shards: list[ShardStatus], suspend: bool) -> tuple[ScanPhase, str, str]:
    """The scan's phase, with a CamelCase reason and a one-line message."""
    limit = plan.spec.failure_policy.max_failed_combinations
    if limit is not None and agg.failed > limit:
        return ScanPhase.FAILED, "TooManyFailedCombinations", f"{agg.failed} combinations failed, more than {limit}"
    failed = [s for s in shards if s.phase == ShardPhase.FAILED]
    ended = all(s.phase in {ShardPhase.SUCCEEDED, ShardPhase.FAILED} for s in shards)
    if failed and ended:
        # A failed shard does not stop the others: their results are worth having. The scan fails when all ended.
        first = failed[0]
        reason = first.reason or "ShardFailed"
        where = f" on site {first.site}" if first.site else ""
        detail = f": {first.message}" if first.message else ""
        return ScanPhase.FAILED, reason, f"{len(failed)} shard(s) failed for good; shard {first.index}{where}{detail}"
    if ended:
        return ScanPhase.SUCCEEDED, "AllShardsSucceeded", f"{agg.succeeded} of {plan.total} combinations succeeded"
    if suspend:
        return ScanPhase.SUSPENDED, "Suspended", "spec.suspend is true; recorded results are kept"
    if any(s.phase in {ShardPhase.RUNNING, ShardPhase.SUCCEEDED} for s in shards) or agg.recorded:
        running = sum(s.phase == ShardPhase.RUNNING for s in shards)
        return ScanPhase.RUNNING, "ShardsRunning", f"{running} of {plan.shard_count} shards running"
    return ScanPhase.PENDING, "ShardsPending", "waiting for shards to start"


def _conditions(
    phase: ScanPhase,
    reason: str,
    message: str,
    shards: list[ShardStatus],
    previous: list[Condition],
    now: datetime,
    generation: int | None,
) -> list[Condition]:
    degraded = [s for s in shards if s.reason and s.phase != ShardPhase.SUCCEEDED]
    wanted = {
        ConditionType.PLANNED: (True, "Planned", ""),
        ConditionType.RUNNING: (phase == ScanPhase.RUNNING, reason, message if phase == ScanPhase.RUNNING else ""),
        ConditionType.COMPLETE: (
            phase == ScanPhase.SUCCEEDED,
            reason if phase == ScanPhase.SUCCEEDED else "NotComplete",
            "",
        ),
        ConditionType.FAILED: (
            phase == ScanPhase.FAILED,
            reason if phase == ScanPhase.FAILED else "NotFailed",
            message if phase == ScanPhase.FAILED else "",
        ),
        ConditionType.SUSPENDED: (
            phase == ScanPhase.SUSPENDED,
            "Suspended" if phase == ScanPhase.SUSPENDED else "NotSuspended",
            "",
        ),
        ConditionType.DEGRADED: (
            bool(degraded),
            degraded[0].reason or "ShardTrouble" if degraded else "AllShardsHealthy",
            "; ".join(
                f"shard {s.index}{' on ' + s.site if s.site else ''}: {s.message or s.reason}" for s in degraded[:3]
            ),
        ),
    }
    before = {c.type: c for c in previous}
    out = []
    for kind, (is_true, why, text) in wanted.items():
        status = "True" if is_true else "False"
        old = before.get(kind.value)
        since = old.last_transition_time if old is not None and old.status == status else now
        out.append(
            Condition(
                type=kind.value,
                status=status,
                reason=why,
                message=text[:512],
                last_transition_time=since,
                observed_generation=generation,
            )
        )
    return out


def build_status(
    plan: Plan,
    agg: Aggregate,
    shard_states: Mapping[int, ShardStatus],
    *,
    suspend: bool = False,
    previous: HPScanStatus | None = None,
    now: datetime | None = None,
    generation: int | None = None,
) -> HPScanStatus:
    """The status of a scan from what is known: the plan, the records so far, and each shard's backend state."""
    now = now or datetime.now(UTC)
    shards = shard_statuses(plan, agg, shard_states)
    phase, reason, message = decide_phase(plan, agg, shards, suspend)
    running = sum(s.total - s.done for s in shards if s.phase == ShardPhase.RUNNING)
    previous_status = previous or HPScanStatus()
    started = previous_status.start_time or (now if phase != ScanPhase.PENDING else None)
    completed = previous_status.completion_time or (now if phase in TERMINAL else None)
    if phase not in TERMINAL:
        completed = None
    if agg.foreign:
        message += f"; {agg.foreign} records ignored (not of this plan)"
    return HPScanStatus(
        phase=phase,
        progress=f"{agg.recorded}/{plan.total}",
        combinations=Counts(
            total=plan.total,
            succeeded=agg.succeeded,
            failed=agg.failed,
            running=running,
            pending=plan.total - agg.recorded - running,
        ),
        best=agg.best,
        top=list(agg.top),
        shards=shards,
        conditions=_conditions(phase, reason, message, shards, previous_status.conditions, now, generation),
        observed_generation=generation,
        start_time=started,
        completion_time=completed,
        message=message,
    )
