"""Plan + records + shard states -> the HPScan status (phase, counts, best, per-shard progress, conditions). Pure."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from hpscan.api.status import (
    TERMINAL_SCAN_PHASES,
    Condition,
    ConditionType,
    Counts,
    HPScanStatus,
    Reason,
    ScanPhase,
    ShardCounts,
    ShardPhase,
    ShardStatus,
    SiteState,
    SiteStatus,
    Training,
)
from hpscan.core.brokering import Target
from hpscan.core.decisions import decide_phase
from hpscan.core.kstatus import Wanted, kstatus_conditions
from hpscan.core.planning import Plan
from hpscan.core.ranking import tie_note
from hpscan.core.results import Aggregate

NOTABLE_PHASES = frozenset({ShardPhase.RUNNING, ShardPhase.FAILED, ShardPhase.SUSPENDED})

MAX_STATUS_PARETO = 32
"""Pareto members the HPScan object lists at most (a few hundred bytes each); paretoSize counts them all, and
`hpscan results` has every record."""

MAX_STATUS_SHARDS = 256
"""Per-shard entries the HPScan object carries at most (about 200 bytes each): the status stays far below etcd's
object limit at any scan size."""


def shard_statuses(
    plan: Plan, agg: Aggregate, shard_states: Mapping[int, ShardStatus], held: Mapping[int, int] | None = None
) -> list[ShardStatus]:
    """One entry per shard: the backend's view (phase, site, job) with the record counts filled in. A shard whose
    job ended well without all its records failed: what it did not record was never trained (RecordsMissing).
    ``held``: for workers that pull, the trials each holds (its total), from hpscan.core.search."""
    out = []
    for index in range(plan.shard_count):
        state = shard_states.get(index) or ShardStatus(index=index)
        total = (held or {}).get(index, 0) if plan.pull else plan.shard_size(index)
        done = agg.shard_done[index]
        total = max(total, done)
        update: dict[str, object] = {"index": index, "total": total, "done": done, "failed": agg.shard_failed[index]}
        if state.phase == ShardPhase.SUCCEEDED and done < total:
            update |= {
                "phase": ShardPhase.FAILED,
                "reason": Reason.RECORDS_MISSING,
                "message": f"the job ended well but recorded {done} of {total} combinations",
            }
        out.append(state.model_copy(update=update))
    return out


def _conditions(
    phase: ScanPhase,
    reason: str,
    message: str,
    progress: str,
    shards: list[ShardStatus],
    previous: list[Condition],
    now: datetime,
    generation: int | None,
    sites: Sequence[SiteStatus] = (),
) -> list[Condition]:
    degraded = [s for s in shards if s.reason and s.phase != ShardPhase.SUCCEEDED]
    troubled = [s for s in sites if s.state in {SiteState.EXCLUDED, SiteState.UNREACHABLE}]
    why: str
    if sites and not any(s.state == SiteState.USABLE for s in sites) and phase not in TERMINAL_SCAN_PHASES:
        why, text = (
            Reason.NO_USABLE_SITE,
            "no usable site: "
            + "; ".join(f"site {s.name} {s.state.value}{': ' + s.message if s.message else ''}" for s in sites),
        )
    elif troubled:
        why = troubled[0].reason or Reason.SITE_TROUBLE
        text = "; ".join(f"site {s.name} {s.state.value}: {s.message or s.reason}" for s in troubled[:3])
    elif degraded:
        why = degraded[0].reason or Reason.SHARD_TROUBLE
        text = "; ".join(
            f"shard {s.index}{' on ' + s.site if s.site else ''}: {s.message or s.reason}" for s in degraded[:3]
        )
    else:
        why, text = Reason.ALL_SHARDS_HEALTHY, ""
    if troubled and degraded and why != Reason.NO_USABLE_SITE:
        text += "; " + "; ".join(f"shard {s.index}: {s.message or s.reason}" for s in degraded[:2])
    wanted: dict[ConditionType, Wanted] = {
        ConditionType.PLANNED: (True, Reason.PLANNED, ""),
        ConditionType.RUNNING: (phase == ScanPhase.RUNNING, reason, message if phase == ScanPhase.RUNNING else ""),
        ConditionType.COMPLETE: (
            phase == ScanPhase.SUCCEEDED,
            reason if phase == ScanPhase.SUCCEEDED else Reason.NOT_COMPLETE,
            "",
        ),
        ConditionType.FAILED: (
            phase == ScanPhase.FAILED,
            reason if phase == ScanPhase.FAILED else Reason.NOT_FAILED,
            message if phase == ScanPhase.FAILED else "",
        ),
        ConditionType.SUSPENDED: (
            phase == ScanPhase.SUSPENDED,
            Reason.SUSPENDED if phase == ScanPhase.SUSPENDED else Reason.NOT_SUSPENDED,
            "",
        ),
        ConditionType.DEGRADED: (why != Reason.ALL_SHARDS_HEALTHY, why, text),
    }
    health = kstatus_conditions(phase, reason, message, progress)
    reconciling, because, line = health[ConditionType.RECONCILING]
    if reconciling and why != Reason.ALL_SHARDS_HEALTHY:  # Flux and Helm show this message: say what holds it up
        health[ConditionType.RECONCILING] = (reconciling, because, f"{line}; {text}")
    return conditions_from(wanted | health, previous, now, generation)


def conditions_from(
    wanted: Mapping[ConditionType, Wanted], previous: Sequence[Condition], now: datetime, generation: int | None
) -> list[Condition]:
    """The conditions as decided, each keeping its lastTransitionTime while its status stays the same, and each
    naming the generation it was decided from (observedGeneration)."""
    before = {c.type: c for c in previous}
    out = []
    for kind, (is_true, because, line) in wanted.items():
        status = "True" if is_true else "False"
        old = before.get(kind.value)
        since = old.last_transition_time if old is not None and old.status == status else now
        out.append(
            Condition(
                type=kind.value,
                status=status,
                reason=because,
                message=line[:512],
                last_transition_time=since,
                observed_generation=generation,
            )
        )
    return out


def notable_shards(shards: list[ShardStatus]) -> list[ShardStatus]:
    """Shards a reader wants to see, most pressing first: trouble still unfolding (a reason such as Unschedulable or
    Held), then failed, running and suspended shards; by index within each."""

    def urgency(shard: ShardStatus) -> int:
        if shard.reason and shard.phase != ShardPhase.FAILED:
            return 0
        return {ShardPhase.FAILED: 1, ShardPhase.RUNNING: 2}.get(shard.phase, 3)

    notable = [s for s in shards if s.phase in NOTABLE_PHASES or s.reason]
    return sorted(notable, key=lambda s: (urgency(s), s.index))


def build_status(
    plan: Plan,
    agg: Aggregate,
    shard_states: Mapping[int, ShardStatus],
    *,
    suspend: bool = False,
    previous: HPScanStatus | None = None,
    now: datetime | None = None,
    generation: int | None = None,
    max_shards: int | None = None,
    targets: Sequence[Target] = (),
    sites: Sequence[SiteStatus] = (),
    held: Mapping[int, int] | None = None,
) -> HPScanStatus:
    """The status of a scan from what is known: the plan, the records so far, each shard's backend state, and each
    site's state. With ``max_shards`` the per-shard list keeps at most that many notable shards (etcd holds the
    object)."""
    now = now or datetime.now(UTC)
    shards = shard_statuses(plan, agg, shard_states, held)
    phase, reason, message = decide_phase(plan, agg, shards, suspend, targets, {s.name: s for s in sites})
    running = sum(s.total - s.done for s in shards if s.phase == ShardPhase.RUNNING)
    # will never run: a failed shard's combinations (a failed worker's trials go back to the queue instead)
    lost = 0 if plan.pull else sum(s.total - s.done for s in shards if s.phase == ShardPhase.FAILED)
    # never below 0, whatever the shards say (a trial recorded by a worker it was taken back from counts twice):
    # a status that cannot be built stalls the scan
    pending = max(0, plan.total - agg.recorded - running - lost)
    if plan.pull and phase in TERMINAL_SCAN_PHASES:
        pending = 0  # budget left when the scan ended (its space explored, or no worker left): nothing waits
    previous_status = previous or HPScanStatus()
    # when the first shard started: not while none has, nor for a scan suspended before one did (as a suspended Job)
    started = previous_status.start_time or (now if phase not in {ScanPhase.PENDING, ScanPhase.SUSPENDED} else None)
    completed = previous_status.completion_time or (now if phase in TERMINAL_SCAN_PHASES else None)
    if phase not in TERMINAL_SCAN_PHASES:
        completed = None
    progress = f"{agg.recorded}/{plan.total}"
    pareto = agg.pareto()
    listed = shards if max_shards is None or len(shards) <= max_shards else notable_shards(shards)[:max_shards]
    if agg.foreign:
        message += f"; {agg.foreign} records ignored (not of this plan)"
    if unreadable := sum(agg.unreadable.values()):
        where = ", ".join(sorted(source for source, count in agg.unreadable.items() if count))
        message += f"; {unreadable} unreadable record(s) skipped ({where})"
    tied = agg.tied()
    if tied:
        message += f"; best {plan.spec.objective.metric} {tie_note(tied, len(agg.top))}"
    return HPScanStatus(
        phase=phase,
        progress=progress,
        combinations=Counts(
            total=plan.total,
            succeeded=agg.succeeded,
            failed=agg.failed + lost,
            running=running,
            pending=pending,
            pruned=agg.pruned,
            suggested=sum((held or {}).values()) if plan.pull else plan.total,
        ),
        training=Training(epochs=agg.epochs, epochs_saved=agg.epochs_saved, epochs_resumed=agg.epochs_resumed),
        best=agg.best,
        top=list(agg.top),
        tied=tied,
        pareto=pareto[:MAX_STATUS_PARETO],
        pareto_size=len(pareto) if plan.spec.multi_objective else None,
        pareto_omitted=max(0, len(pareto) - MAX_STATUS_PARETO),
        shard_counts=ShardCounts(
            total=len(shards), **{str(p).lower(): n for p, n in Counter(s.phase for s in shards).items()}
        ),
        shards=listed,
        shards_omitted=len(shards) - len(listed),
        conditions=_conditions(
            phase, reason, message, progress, shards, previous_status.conditions, now, generation, sites
        ),
        sites=list(sites),
        usable_sites=f"{sum(s.state == SiteState.USABLE for s in sites)}/{len(sites)}" if sites else "",
        observed_generation=generation,
        start_time=started,
        completion_time=completed,
        message=message,
    )
