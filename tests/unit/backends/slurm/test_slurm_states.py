"""Slurm job states and pending reasons -> shard states (hpscan.backends.slurm.states), and the REST answers'
errors: pure functions of what slurmrestd and the shared file system say."""

from __future__ import annotations

import pytest

from hpscan.api.status import ShardPhase
from hpscan.backends.slurm.rest import answer_errors
from hpscan.backends.slurm.states import Attempt, SlurmJob, attempts_started, pending_reason, shard_verdict


def job(state: str, reason: str = "None", description: str = "", restarts: int = 0, exit_code: int = 0) -> SlurmJob:
    return SlurmJob(7, "hpscan.u.0.0.1", state, reason, description, exit_code, restarts, "gpu1")


def attempt(state: str | None, code: int | None = None, n: int = 1, **kwargs) -> Attempt:
    return Attempt(job_id=n, attempt=n, job=job(state) if state else None, exit_code=code, **kwargs)


@pytest.mark.parametrize("reason", ["Resources", "Priority", "None", "BeginTime", "Dependency", "QOSGrpGRES"])
def test_a_job_that_waits_its_turn_is_pending_with_slurms_words(reason):
    hpscan_reason, message = pending_reason(reason, "")
    assert hpscan_reason is None
    assert message == f"Slurm: {reason}"


@pytest.mark.parametrize(
    "reason",
    ["ReqNodeNotAvail", "PartitionConfig", "BadConstraints", "PartitionTimeLimit", "InvalidQOS", "QOSMaxGRESPerJob"],
)
def test_a_job_that_cannot_start_by_waiting_is_unschedulable_with_slurms_words(reason):
    hpscan_reason, message = pending_reason(reason, "UnavailableNodes:gpu1")
    assert hpscan_reason == "Unschedulable"
    assert message == f"Slurm: {reason} (UnavailableNodes:gpu1)"
    assert pending_reason(reason, f"{reason}, UnavailableNodes:gpu1")[1] == f"Slurm: {reason}, UnavailableNodes:gpu1"


def test_a_pending_job_makes_a_pending_shard_and_a_running_one_a_running_shard():
    waiting = Attempt(1, 1, job("PENDING", "PartitionConfig"))
    assert shard_verdict([waiting], retries=1, recorded=0, expected=2) == shard_verdict(
        [waiting], retries=5, recorded=0, expected=2
    )
    verdict = shard_verdict([waiting], retries=1, recorded=0, expected=2)
    assert (verdict.phase, verdict.reason, verdict.retry) == (ShardPhase.PENDING, "Unschedulable", False)
    running = shard_verdict([attempt("RUNNING")], retries=1, recorded=1, expected=2)
    assert (running.phase, running.message) == (ShardPhase.RUNNING, "Slurm job 7 on gpu1")


def test_exit_0_with_every_record_succeeds_and_with_fewer_is_retried():
    done = shard_verdict([attempt("COMPLETED", 0)], retries=1, recorded=4, expected=4)
    assert done.phase == ShardPhase.SUCCEEDED
    short = shard_verdict([attempt("COMPLETED", 0)], retries=1, recorded=3, expected=4)
    assert (short.phase, short.reason, short.retry) == (ShardPhase.PENDING, "Retrying", True)
    assert "recorded 3 of 4" in (short.message or "")


@pytest.mark.parametrize(("code", "reason"), [(2, "InvalidInput"), (3, "GPUUnavailable")])
def test_exit_2_and_3_fail_the_shard_at_once_whatever_retries_are_left(code, reason):
    verdict = shard_verdict([attempt("FAILED", code, last_words="no GPU visible")], retries=5, recorded=0, expected=4)
    assert (verdict.phase, verdict.reason, verdict.retry) == (ShardPhase.FAILED, reason, False)
    assert verdict.message == "no GPU visible"


def test_another_exit_is_retried_while_attempts_are_left_then_fails_with_the_payloads_words():
    first = shard_verdict([attempt("FAILED", 1, last_words="boom")], retries=1, recorded=0, expected=4)
    assert (first.phase, first.retry) == (ShardPhase.PENDING, True)
    assert first.message == "attempt 1 failed (exit code 1: boom)"
    both = [attempt("FAILED", 1, n=1, last_words="boom"), attempt("FAILED", 1, n=2, last_words="boom again")]
    last = shard_verdict(both, retries=1, recorded=0, expected=4)
    assert (last.phase, last.reason, last.retry) == (ShardPhase.FAILED, "PayloadFailed", False)
    assert last.message == "exit code 1: boom again"


@pytest.mark.parametrize(
    ("state", "words"),
    [
        ("TIMEOUT", "ran past its time limit"),
        ("OUT_OF_MEMORY", "more memory than it asked for"),
        ("NODE_FAIL", "node failed"),
        ("PREEMPTED", "preempted"),
        ("CANCELLED", "not by hpscan"),
    ],
)
def test_a_job_slurm_ended_is_retried_and_then_fails_with_slurms_state_in_words(state, words):
    retried = shard_verdict([attempt(state)], retries=1, recorded=0, expected=4)
    assert (retried.phase, retried.retry) == (ShardPhase.PENDING, True)
    ended = shard_verdict([attempt(state)], retries=0, recorded=0, expected=4)
    assert (ended.phase, ended.reason) == (ShardPhase.FAILED, "JobFailed")
    assert (ended.message or "").startswith(f"Slurm: {state}: ") and words in (ended.message or "")


def test_a_payload_killed_with_slurms_state_keeps_both_words():
    """The payload's exit code (137: killed) and why Slurm killed it (OUT_OF_MEMORY) are both shown."""
    killed = Attempt(1, 1, job("OUT_OF_MEMORY"), exit_code=137, last_words="Killed")
    verdict = shard_verdict([killed], retries=0, recorded=0, expected=4)
    assert (
        verdict.message
        == "exit code 137: Killed (Slurm: OUT_OF_MEMORY, the job used more memory than it asked for (memory) and Slurm ended it)"
    )


def test_a_job_hpscan_cancelled_is_suspended_not_retried():
    verdict = shard_verdict([attempt("CANCELLED", cancelled=True)], retries=3, recorded=1, expected=4)
    assert (verdict.phase, verdict.reason, verdict.retry) == (ShardPhase.SUSPENDED, "Suspended", False)


def test_a_job_slurm_forgot_without_an_exit_code_counts_as_a_failed_attempt():
    verdict = shard_verdict([attempt(None)], retries=0, recorded=0, expected=4)
    assert (verdict.phase, verdict.reason) == (ShardPhase.FAILED, "JobFailed")


def test_slurms_own_requeues_count_as_attempts():
    requeued = Attempt(1, 1, job("PENDING", restarts=2))
    assert attempts_started([requeued]) == 3
    assert shard_verdict([Attempt(1, 1, job("NODE_FAIL", restarts=1))], retries=1, recorded=0, expected=1).phase == (
        ShardPhase.FAILED
    )


def test_a_job_from_the_rest_answer():
    entry = {
        "job_id": 12,
        "name": "hpscan.u.1.0.2",
        "job_state": "PENDING",
        "state_reason": "Resources",
        "state_description": "",
        "exit_code": 0,
        "restart_cnt": 1,
        "nodes": "",
    }
    parsed = SlurmJob.from_rest(entry)
    assert (parsed.job_id, parsed.state, parsed.reason, parsed.restarts) == (12, "PENDING", "Resources", 1)


def test_the_answers_errors_in_slurms_words():
    answer = {"errors": [{"error_code": 2002, "error": "Invalid partition name specified", "description": ""}]}
    assert answer_errors(answer) == [(2002, "Invalid partition name specified")]
    assert answer_errors({"errors": []}) == []


def test_a_job_whose_nodes_are_drained_is_unschedulable_though_slurm_says_resources():
    """Slurm 22.05's answer for a GPU partition whose only node is drained (seen on the test cluster)."""
    words = "Nodes required for job are DOWN, DRAINED or reserved for jobs in higher priority partitions"
    assert pending_reason("Resources", words) == ("Unschedulable", f"Slurm: Resources ({words})")
