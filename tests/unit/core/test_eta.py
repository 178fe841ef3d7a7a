"""hpscan.core.eta: the live ETA from made-up record arrival times (seconds on one clock)."""

from __future__ import annotations

import pytest

from hpscan.core.eta import ShardProgress, estimate, pace, per_minute


def shard(size: int, records: tuple[float, ...] = (), started: float | None = 0.0, ended: bool = False, earlier=0):
    """A shard whose records of this run arrived at the given times."""
    return ShardProgress(
        size=size,
        done=earlier + len(records),
        started=started,
        records=len(records),
        first=records[0] if records else None,
        last=records[-1] if records else None,
        ended=ended,
    )


def test_constant_rate_counts_down_between_records_and_is_right():
    # 10 combinations, first record 10 s after the start, then one every 10 s: the last lands at t=100
    running = [shard(10, (10.0, 20.0, 30.0))]
    assert pace(running).startup == 10.0 and pace(running).interval == 10.0
    assert estimate(running, workers=1, now=30.0).seconds == pytest.approx(70.0)
    assert estimate(running, workers=1, now=35.0).seconds == pytest.approx(65.0)  # no record, still moving
    assert estimate(running, workers=1, now=39.0).seconds == pytest.approx(61.0)
    later = [shard(10, tuple(10.0 * i for i in range(1, 8)))]
    assert estimate(later, workers=1, now=72.0).seconds == pytest.approx(28.0)
    assert not estimate(later, workers=1, now=72.0).overdue


def test_a_stall_makes_the_estimate_grow_and_says_overdue():
    stalled = [shard(10, (10.0, 20.0, 30.0))]
    at = {now: estimate(stalled, workers=1, now=now) for now in (40.0, 60.0, 100.0, 130.0, 160.0)}
    assert at[40.0].seconds == pytest.approx(60.0)  # on pace so far
    # nothing since t=30: the shard's own interval, as if a record came now, is (now - 10) / 3
    assert at[100.0].seconds == pytest.approx(6 * 30.0)
    assert at[130.0].seconds == pytest.approx(6 * 40.0)
    assert at[100.0].seconds < at[130.0].seconds < at[160.0].seconds  # grows, never sits
    assert not at[60.0].overdue and at[130.0].overdue  # past t=100, when the pace said it would be done


def test_the_last_record_late_is_overdue_not_a_frozen_figure():
    # the case of issue 14: one record left, and it does not come
    late = [shard(4, (10.0, 20.0, 30.0))]
    assert estimate(late, workers=1, now=35.0).seconds == pytest.approx(5.0)
    stuck = estimate(late, workers=1, now=60.0)
    assert stuck.seconds == 0.0 and stuck.overdue


def test_uneven_shards_wait_for_the_longest_not_the_total_over_the_rate():
    # two workers; the short shard is done, the long one has 8 of 12 left at one record per 5 s
    shards = [shard(2, (5.0, 10.0), ended=True), shard(12, (5.0, 10.0, 15.0, 20.0))]
    left = estimate(shards, workers=2, now=20.0).seconds
    assert left == pytest.approx(8 * 5.0)
    # a scan-wide rate (6 records in 20 s) would say 8 / 0.3 = 26.7 s: wrong once only one shard still runs
    assert left != pytest.approx(8 / (6 / 20.0))


def test_pending_shards_queue_for_free_workers_with_the_start_up_time():
    # one worker; shard 0 took 10 s to its first record, then 2 s a record; shards 1 and 2 have not started
    shards = [shard(4, (10.0, 12.0, 14.0)), shard(4, started=None), shard(4, started=None)]
    # shard 0: 2 s more; then each pending shard 10 s start-up + 3 x 2 s, one after the other
    assert estimate(shards, workers=1, now=14.0).seconds == pytest.approx(2.0 + 16.0 + 16.0)
    # with two workers the pending shards run side by side on the second worker and the freed first one
    assert estimate(shards, workers=2, now=14.0).seconds == pytest.approx(2.0 + 16.0)


def test_a_running_shard_without_records_is_due_one_start_up_after_its_start():
    shards = [shard(3, (10.0, 14.0, 18.0)), shard(3, started=12.0)]
    assert estimate(shards, workers=2, now=18.0).seconds == pytest.approx(12.0 + 10.0 + 2 * 4.0 - 18.0)
    # its start-up runs long: the rest is still ahead, slowed as much as the start-up (28 s for 10 s)
    late = estimate(shards, workers=2, now=40.0)
    assert late.seconds == pytest.approx(2 * 4.0 * 2.8) and late.overdue
    assert estimate(shards, workers=2, now=60.0).seconds == pytest.approx(2 * 4.0 * 4.8)  # grows, never sits


def test_unknown_until_the_pace_is_measured():
    assert estimate([shard(5), shard(5, started=None)], workers=2, now=50.0).seconds is None  # no record yet
    assert estimate([shard(5, (10.0,))], workers=1, now=12.0).seconds is None  # one record: no interval yet
    assert estimate([shard(1, (10.0,)), shard(1, started=None)], workers=1, now=12.0).seconds == pytest.approx(10.0)


def test_a_resumed_scan_counts_only_what_is_left():
    # 6 recorded in an earlier run; this run's records give the pace
    resumed = [shard(10, (30.0, 33.0), earlier=6), shard(5, earlier=5, started=None, ended=True)]
    assert estimate(resumed, workers=2, now=33.0).seconds == pytest.approx(2 * 3.0)
    assert estimate([shard(5, earlier=5, started=None)], workers=1, now=1.0).seconds == 0.0  # nothing left


def test_records_per_minute():
    assert per_minute(6, since=0.0, now=120.0) == pytest.approx(3.0)
    assert per_minute(0, since=5.0, now=5.0) is None
