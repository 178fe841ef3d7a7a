"""Boundaries a user depends on, each pinned at its exact edge (issue 22): mutations of these lines used to pass the
suite. One test per boundary; each docstring names the edge it holds."""

from __future__ import annotations

import sys
import types
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from hpscan.api.contract import ResultRecord
from hpscan.api.parameters import Parameter
from hpscan.api.spec import HPScanSpec
from hpscan.api.status import HPScanStatus, Reason, ShardPhase, ShardStatus, SiteState, SiteStatus
from hpscan.core.brokering import Target
from hpscan.core.decisions import decide
from hpscan.core.planning import Plan, axis_values, plan
from hpscan.core.results import aggregate
from hpscan.core.summary import build_status
from support import CONTRACT_PAYLOAD

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PAYLOAD = CONTRACT_PAYLOAD


def make_spec(**extra) -> HPScanSpec:
    return HPScanSpec.model_validate(
        {
            "parameters": [{"name": "x", "values": [1, 2, 3, 4, 5, 6]}],
            "sharding": {"shards": 3},
            "payload": {"image": "p"},
            **extra,
        }
    )


SPEC = make_spec()
PLAN = plan("s", SPEC)


def shard(i: int, phase: str, **extra) -> ShardStatus:
    return ShardStatus(index=i, phase=ShardPhase(phase), **extra)


def rec(planned: Plan, position: int, failed: bool = False) -> ResultRecord:
    combo = planned.combination(position)
    return ResultRecord(
        id=combo.id,
        shard=planned.shard_of(position),
        parameters=combo.parameters,
        metrics={} if failed else {"val_loss": position / 10},
        status="failed" if failed else "succeeded",
    )


def condition(status: HPScanStatus, kind: str):
    return next(c for c in status.conditions if c.type == kind)


ALL_DONE = {i: shard(i, "Succeeded") for i in range(3)}


# 1. completionTime ------------------------------------------------------------------------------------------------


def test_completion_time_is_cleared_when_a_finished_scan_runs_again_and_kept_while_it_stays_finished():
    """A terminal scan keeps the time it ended; a new generation that runs again clears it until it ends again."""
    agg = aggregate(PLAN, [rec(PLAN, p) for p in range(6)])
    done = build_status(PLAN, agg, ALL_DONE, now=T0, generation=1)
    assert (done.phase, done.completion_time) == ("Succeeded", T0)
    later = build_status(PLAN, agg, ALL_DONE, previous=done, now=T0 + timedelta(hours=1), generation=1)
    assert later.completion_time == T0  # not moved by a later step
    rerun = {0: shard(0, "Running"), 1: shard(1, "Succeeded"), 2: shard(2, "Succeeded")}
    running = build_status(PLAN, aggregate(PLAN, []), rerun, previous=later, now=T0 + timedelta(hours=2), generation=2)
    assert running.phase == "Running" and running.completion_time is None
    again = build_status(PLAN, agg, ALL_DONE, previous=running, now=T0 + timedelta(hours=3), generation=2)
    assert again.completion_time == T0 + timedelta(hours=3)


# 2. the ends of an integer log range ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("low", "high", "count", "expected"),
    [
        (16, 256, 2, [16, 256]),
        (1, 8, 4, [1, 2, 4, 8]),
        (1, 100, 3, [1, 10, 100]),
        (10, 1000, 3, [10, 100, 1000]),
        (2, 1024, 10, [2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]),
        (16, 256, 5, [16, 32, 64, 128, 256]),
    ],
)
def test_an_integer_log_range_is_whole_numbers_with_its_exact_ends_and_no_duplicates(low, high, count, expected):
    """min and max are the first and last points exactly, as the integers the user wrote; points whose values are
    whole numbers stay integers (exp(log(x)) is off by a few ulps), and no two points are the same."""
    values = axis_values(Parameter(name="layer1", range={"min": low, "max": high, "count": count, "scale": "log"}))
    assert values == expected and all(type(v) is int for v in values)
    assert values[0] == low and values[-1] == high
    assert len(set(values)) == count


def test_a_log_range_with_fractional_points_keeps_integer_ends_exact_and_distinct():
    values = axis_values(Parameter(name="layer1", range={"min": 16, "max": 512, "count": 4, "scale": "log"}))
    assert values[0] == 16 and values[-1] == 512 and len(set(values)) == 4 and values == sorted(values)
    assert values[1] == pytest.approx(16 * 32 ** (1 / 3), rel=1e-5)
    wide = axis_values(Parameter(name="jets", range={"min": 1000, "max": 1234567, "count": 3, "scale": "log"}))
    assert wide[0] == 1000 and wide[-1] == 1234567  # written with 7 digits, not rounded to SIGNIFICANT_DIGITS


# 3. a per-attempt deadline against retries ----------------------------------------------------------------------


@pytest.mark.parametrize("retries", [0, 5])
def test_the_kubernetes_deadline_bounds_each_pod_whatever_the_retries(retries):
    """activeDeadlineSeconds on the pod (each attempt), never on the Job (which would bound all attempts)."""
    from hpscan.backends.base import ScanRef
    from hpscan.backends.kubernetes import job_manifest

    spec = make_spec(retries=retries, payload={"image": "p", "timeoutSeconds": 900})
    job = job_manifest(ScanRef(name="s", namespace="ns", uid="u"), spec, 0, None)
    assert job["spec"]["template"]["spec"]["activeDeadlineSeconds"] == 900
    assert "activeDeadlineSeconds" not in job["spec"] and job["spec"]["backoffLimit"] == retries


@pytest.mark.parametrize("retries", [0, 5])
def test_the_htcondor_deadline_bounds_each_execution_whatever_the_retries(retries):
    """allowed_execute_duration counts one execution; nothing bounds the job's whole life in the queue."""
    import classad2

    from hpscan.backends.base import ScanRef
    from hpscan.backends.htcondor import submit_description

    spec = make_spec(
        retries=retries, payload={"image": "p", "timeoutSeconds": 900}, sites=[{"name": "grid", "htcondor": {}}]
    )
    planned = plan("s", spec)
    description = submit_description(
        ScanRef(name="s", namespace="ns", uid="u"), spec, spec.sites[0], list(planned.shard_files()), Path("/srv/s")
    ).description
    assert description.expand("allowed_execute_duration") == "900"
    assert description.expand("max_retries") == str(retries)
    assert "allowed_job_duration" not in description
    # periodic_remove ends a job only once its last attempt timed out, never for its age in the queue
    remove = classad2.ExprTree(description.expand("periodic_remove"))
    old = {"QDate": 0, "EnteredCurrentStatus": 0, "NumJobStarts": retries + 1}
    assert all(remove.eval(classad2.ClassAd({**old, "JobStatus": status})) is False for status in (1, 2, 5))
    assert remove.eval(classad2.ClassAd({**old, "JobStatus": 5, "HoldReasonCode": 47})) is True


def test_a_local_retry_gets_the_whole_timeout_again(tmp_path, monkeypatch):
    """The local backend measures the timeout from each attempt's start, not from the first attempt's."""
    from hpscan.backends import local
    from hpscan.backends.base import ScanRef, ShardLaunch
    from hpscan.core.shardfiles import write_shard_files

    clock = [1000.0]
    monkeypatch.setattr(local, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    spec = make_spec(
        retries=1,
        payload={
            "image": "local",
            "command": [sys.executable, str(PAYLOAD)],
            "settings": {"contractPayload": {"sleep": 60}},
        },
    )
    planned = plan("timeout", spec)
    write_shard_files(planned, tmp_path / "shards")
    backend = local.LocalBackend(tmp_path, retries=1, timeout_seconds=100)
    ref = ScanRef("timeout", "local")
    backend.submit(ref, spec, [ShardLaunch(planned.shard_file(0), None)])
    try:
        clock[0] += 101  # attempt 1 ran past the timeout: stopped and retried
        first = backend.poll(ref)[0]
        assert (first.phase, first.attempts, first.reason) == ("Running", 2, Reason.RETRYING)
        clock[0] += 60  # 161 s since attempt 1 began, 60 s since attempt 2 did: it runs on
        second = backend.poll(ref)[0]
        assert (second.phase, second.attempts) == ("Running", 2), second
    finally:
        backend.cancel(ref)


# 4. maxFailedCombinations -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [0, 2])
def test_max_failed_combinations_allows_exactly_the_limit_and_fails_one_over(limit):
    spec = make_spec(failurePolicy={"maxFailedCombinations": limit})
    planned = plan("s", spec)
    running = {i: shard(i, "Running") for i in range(3)}
    at_limit = build_status(planned, aggregate(planned, [rec(planned, p, failed=True) for p in range(limit)]), running)
    assert at_limit.phase == "Running" and condition(at_limit, "Failed").status == "False"
    over = aggregate(planned, [rec(planned, p, failed=True) for p in range(limit + 1)])
    failed = build_status(planned, over, running)
    assert failed.phase == "Failed" and condition(failed, "Failed").reason == Reason.TOO_MANY_FAILED_COMBINATIONS
    assert failed.message == f"{limit + 1} combinations failed, more than {limit}"


# 5. Degraded --------------------------------------------------------------------------------------------------------


def test_a_succeeded_shard_that_still_carries_a_reason_does_not_degrade_the_scan():
    """A shard that succeeded after a retry keeps its last reason (Retrying); it is healthy. The same reason on a
    shard still running degrades the scan."""
    agg = aggregate(PLAN, [rec(PLAN, 0), rec(PLAN, 3)])  # shard 0's two combinations
    retried = shard(0, "Succeeded", reason=Reason.RETRYING, message="attempt 1 failed (exit code 1)")
    healthy = build_status(PLAN, agg, {0: retried, 1: shard(1, "Running"), 2: shard(2, "Running")})
    degraded = condition(healthy, "Degraded")
    assert (degraded.status, degraded.reason, degraded.message) == ("False", Reason.ALL_SHARDS_HEALTHY, "")
    still = retried.model_copy(update={"phase": ShardPhase.RUNNING})
    troubled = build_status(PLAN, agg, {0: still, 1: shard(1, "Running"), 2: shard(2, "Running")})
    assert condition(troubled, "Degraded").status == "True"
    assert condition(troubled, "Degraded").reason == Reason.RETRYING


# 6. ROC points with few background jets passing ------------------------------------------------------------------


def test_roc_points_keep_exactly_min_passing_jets_and_leave_out_fewer():
    """A ROC point is left out when fewer than MIN_PASSING background jets pass the cut, and kept at exactly
    MIN_PASSING, even where n / (n / 5) is 4.999... in floating point (23 light jets)."""
    from ftag.utils.metrics import calculate_rejection

    from dl1.report.performance import B_EFFICIENCIES, MIN_PASSING, TRUTH_LABELS, TaggerScores, evaluate

    b = np.linspace(0.0, 1.0, 1000)
    light = np.linspace(0.0, 0.6, 23)  # as the cut falls from 0.5 to 0, 4 .. 23 pass: every count on the way
    charm = np.linspace(0.0, 0.55, 41)
    scores = np.concatenate([b, light, charm])
    labels = np.array(
        [TRUTH_LABELS["bjets"]] * len(b) + [TRUTH_LABELS["ujets"]] * len(light) + [TRUTH_LABELS["cjets"]] * len(charm)
    )
    performance = evaluate(TaggerScores("bdt", "BDT", discriminant=scores), labels)
    for flavour, background in (("ujets", light), ("cjets", charm)):
        rejection = calculate_rejection(b, background, target_eff=B_EFFICIENCIES)
        passing = [round(len(background) / r) if np.isfinite(r) else 0 for r in rejection]
        assert {MIN_PASSING - 1, MIN_PASSING} <= set(passing)  # both sides of the edge are on the curve
        kept = [value is not None for value in performance.rejection[flavour]]
        assert kept == [n >= MIN_PASSING for n in passing], flavour


# 7. startTime while Pending -------------------------------------------------------------------------------------


def test_start_time_is_unset_while_pending_set_when_a_shard_runs_and_kept_after():
    agg = aggregate(PLAN, [])
    pending = build_status(PLAN, agg, {0: shard(0, "Pending")}, now=T0)
    assert pending.phase == "Pending" and pending.start_time is None
    still = build_status(PLAN, agg, {0: shard(0, "Pending")}, previous=pending, now=T0 + timedelta(minutes=1))
    assert still.start_time is None
    running = build_status(PLAN, agg, {0: shard(0, "Running")}, previous=still, now=T0 + timedelta(minutes=2))
    assert running.start_time == T0 + timedelta(minutes=2)
    waiting = shard(0, "Pending", reason=Reason.RETRYING)  # its attempt failed; the retry waits for a slot
    back = build_status(PLAN, agg, {0: waiting}, previous=running, now=T0 + timedelta(minutes=3))
    assert back.phase == "Pending" and back.start_time == T0 + timedelta(minutes=2)


def test_a_scan_suspended_before_any_shard_ran_has_no_start_time_until_one_runs():
    """startTime is when the first shard started: a scan created suspended has none (as a suspended Job)."""
    agg = aggregate(PLAN, [])
    suspended = build_status(PLAN, agg, {}, suspend=True, now=T0)
    assert suspended.phase == "Suspended" and suspended.start_time is None
    resumed = build_status(PLAN, agg, {0: shard(0, "Running")}, previous=suspended, now=T0 + timedelta(hours=1))
    assert resumed.start_time == T0 + timedelta(hours=1)
    paused = build_status(
        PLAN, agg, {0: shard(0, "Suspended")}, suspend=True, previous=resumed, now=T0 + timedelta(hours=2)
    )
    assert paused.start_time == T0 + timedelta(hours=1)  # suspending a started scan keeps when it started


# 8. suspend after the scan ended --------------------------------------------------------------------------------


def test_suspending_a_finished_scan_changes_nothing_and_resuming_it_starts_nothing():
    agg = aggregate(PLAN, [rec(PLAN, p) for p in range(6)])
    done = build_status(PLAN, agg, ALL_DONE, now=T0, generation=1)
    suspended = build_status(
        PLAN, agg, ALL_DONE, suspend=True, previous=done, now=T0 + timedelta(hours=1), generation=2
    )
    assert suspended.phase == "Succeeded" and suspended.completion_time == T0
    assert condition(suspended, "Suspended").status == "False" and condition(suspended, "Complete").status == "True"
    failed_shard = shard(1, "Failed", reason=Reason.PAYLOAD_FAILED)
    ended = {0: shard(0, "Succeeded"), 1: failed_shard, 2: shard(2, "Succeeded")}
    assert build_status(PLAN, agg, ended, suspend=True).phase == "Failed"

    local = [Target(name="local", backend="local")]
    usable = {"local": SiteStatus(name="local", backend="local", state=SiteState.USABLE)}
    for suspend in (True, False):  # set, then cleared again: no shard stops, none starts again
        decision = decide(make_spec(suspend=suspend), 3, ended, local, usable, T0)
        assert (decision.start, decision.stop, decision.withdraw, decision.waiting) == ([], [], {}, {})
