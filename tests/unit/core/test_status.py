"""Status composition: the phase, counts and conditions a user reads in `kubectl get hps` and status.json."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hpscan.api.contract import ResultRecord
from hpscan.api.spec import HPScanSpec
from hpscan.api.status import ShardPhase, ShardStatus
from hpscan.core.planning import plan
from hpscan.core.results import aggregate
from hpscan.core.summary import build_status

SPEC = HPScanSpec.model_validate(
    {"parameters": [{"name": "x", "values": [1, 2, 3, 4, 5, 6]}], "sharding": {"shards": 3}, "payload": {"image": "p"}}
)
PLAN = plan("s", SPEC)


def shard(i: int, phase: str, **extra) -> ShardStatus:
    return ShardStatus(index=i, phase=ShardPhase(phase), **extra)


def rec(position: int, value: float | None) -> ResultRecord:
    combo = PLAN.combination(position)
    return ResultRecord(
        id=combo.id,
        shard=PLAN.shard_of(position),
        parameters=combo.parameters,
        metrics={} if value is None else {"val_loss": value},
        status="succeeded" if value is not None else "failed",
    )


def condition(status, kind):
    return next(c for c in status.conditions if c.type == kind)


def test_pending_then_running_then_succeeded():
    agg = aggregate(PLAN, [])
    assert build_status(PLAN, agg, {}).phase == "Pending"
    running = build_status(PLAN, agg, {0: shard(0, "Running")})
    assert running.phase == "Running"
    assert (running.combinations.running, running.combinations.pending) == (2, 4)
    agg.extend(rec(p, p / 10) for p in range(6))
    done = build_status(PLAN, agg, {i: shard(i, "Succeeded") for i in range(3)})
    assert done.phase == "Succeeded" and done.progress == "6/6" and done.best.value == 0.0
    assert condition(done, "Complete").status == "True"
    assert done.completion_time is not None


def test_a_failed_shard_degrades_the_scan_until_the_others_end():
    agg = aggregate(PLAN, [rec(0, 0.5)])
    trouble = shard(1, "Failed", reason="GPUUnavailable", site="gpu-cluster", message="no GPU visible")
    running = build_status(PLAN, agg, {0: shard(0, "Running"), 1: trouble})
    assert running.phase == "Running"
    degraded = condition(running, "Degraded")
    assert degraded.status == "True" and degraded.reason == "GPUUnavailable" and "gpu-cluster" in degraded.message
    agg.extend(rec(p, p / 10) for p in (3, 2, 5))  # shards 0 and 2 recorded everything; shard 1 never will
    ended = build_status(PLAN, agg, {0: shard(0, "Succeeded"), 1: trouble, 2: shard(2, "Succeeded")})
    assert ended.phase == "Failed"
    assert (ended.combinations.succeeded, ended.combinations.failed, ended.combinations.pending) == (4, 2, 0)
    failed = condition(ended, "Failed")
    assert failed.reason == "GPUUnavailable" and "site gpu-cluster" in failed.message


def test_too_many_failed_combinations_fails_at_once():
    spec = SPEC.model_copy(
        update={"failure_policy": SPEC.failure_policy.model_copy(update={"max_failed_combinations": 1})}
    )
    planned = plan("s", spec)
    agg = aggregate(planned, [rec(0, None), rec(1, None)])
    status = build_status(planned, agg, {0: shard(0, "Running")})
    assert status.phase == "Failed" and condition(status, "Failed").reason == "TooManyFailedCombinations"


def test_suspended_scan_says_so():
    status = build_status(PLAN, aggregate(PLAN, []), {0: shard(0, "Suspended")}, suspend=True)
    assert status.phase == "Suspended" and condition(status, "Suspended").status == "True"


def test_condition_transition_time_only_moves_when_the_status_flips():
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    agg = aggregate(PLAN, [])
    first = build_status(PLAN, agg, {0: shard(0, "Running")}, now=t0)
    second = build_status(PLAN, agg, {0: shard(0, "Running")}, previous=first, now=t0 + timedelta(minutes=5))
    assert condition(second, "Running").last_transition_time == t0
    third = build_status(
        PLAN, agg, {i: shard(i, "Succeeded") for i in range(3)}, previous=second, now=t0 + timedelta(minutes=9)
    )
    assert condition(third, "Running").last_transition_time == t0 + timedelta(minutes=9)
    assert third.start_time == t0


def test_a_shard_that_ends_well_without_its_records_failed():
    agg = aggregate(PLAN, [rec(0, 0.5)])
    status = build_status(PLAN, agg, {i: shard(i, "Succeeded") for i in range(3)})
    assert status.phase == "Failed"
    first = status.shards[0]
    assert (first.phase, first.reason) == ("Failed", "RecordsMissing") and "recorded 1 of 2" in first.message
    assert (status.combinations.succeeded, status.combinations.failed, status.combinations.pending) == (1, 5, 0)


def test_unreadable_records_are_counted_in_the_message_not_dropped_silently():
    agg = aggregate(PLAN, [rec(0, 0.5)])
    agg.unreadable.update({"results.jsonl": 1, "kubernetes channel": 2, "htcondor channel": 0})
    status = build_status(PLAN, agg, {0: shard(0, "Running")})
    assert "3 unreadable record(s) skipped (kubernetes channel, results.jsonl)" in status.message


def test_the_status_stays_small_with_a_hundred_thousand_shards():
    """combinationsPerShard: 1 on 100,000 combinations used to give a 13.8 MB status, past etcd's limit."""
    from hpscan.api.spec import HPScanSpec
    from hpscan.core.planning import plan
    from hpscan.core.summary import MAX_STATUS_SHARDS

    spec = HPScanSpec.model_validate(
        {
            "parameters": [{"name": "a", "values": list(range(1000))}, {"name": "b", "values": list(range(100))}],
            "sharding": {"combinationsPerShard": 1},
            "payload": {"image": "example.org/p:1"},
        }
    )
    big = plan("big", spec)
    # 89,700 shards ended "well" without records: failed (RecordsMissing), and listed after the unfolding trouble
    states = {i: shard(i, "Running") for i in range(300)} | {i: shard(i, "Succeeded") for i in range(300, 90_000)}
    states[95_000] = shard(95_000, "Pending", reason="Unschedulable", message="0/2 nodes are available")
    status = build_status(big, aggregate(big, []), states, max_shards=MAX_STATUS_SHARDS)
    size = len(status.model_dump_json(by_alias=True, exclude_none=True))
    assert size < 64 * 1024, size
    counts = status.shard_counts
    assert (counts.total, counts.running, counts.failed, counts.pending) == (100_000, 300, 89_700, 10_000)
    assert len(status.shards) == MAX_STATUS_SHARDS and status.shards_omitted == 100_000 - MAX_STATUS_SHARDS
    assert status.shards[0].index == 95_000 and status.shards[0].reason == "Unschedulable"
    assert all(s.phase == "Failed" for s in status.shards[1:])
