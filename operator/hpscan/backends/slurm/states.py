"""Slurm jobs -> shard states (pure): Slurm's job states and pending reasons in hpscan's terms, the payload's exit
codes 2 and 3, and when a failed attempt is tried again."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hpscan.api.contract import PayloadExit
from hpscan.api.status import FINAL_EXITS, Reason, ShardPhase

MESSAGE_ROOM = 300

RUNNING_STATES = frozenset({"CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT"})
PENDING_STATES = frozenset({"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD", "SPECIAL_EXIT"})
SLURM_ENDINGS = {
    "TIMEOUT": "the job ran past its time limit (timeLimitMinutes) and Slurm ended it",
    "OUT_OF_MEMORY": "the job used more memory than it asked for (memory) and Slurm ended it",
    "NODE_FAIL": "the job's node failed",
    "PREEMPTED": "the job was preempted by a job of higher priority",
    "BOOT_FAIL": "the job's node failed to boot",
    "DEADLINE": "the job reached its deadline",
    "CANCELLED": "the job was cancelled at the centre (scancel by its user or an admin), not by hpscan",
    "FAILED": "the job script failed before the shard runner left an exit code",
    "COMPLETED": "the job script ended without the shard runner's exit code",
}
"""How a job ended without the shard runner's own exit code, in words a user reads after Slurm's state name."""

WAITING_REASONS = frozenset(
    {
        "None", "Priority", "Resources", "BeginTime", "Dependency", "Reservation", "Licenses", "Prolog",
        "Cleaning", "NodeDown", "PowerUp", "JobArrayTaskLimit", "BurstBufferResources", "BurstBufferStageIn",
        "Requeued", "FrontEndDown", "SchedDefer", "JobHeldUser",
    }
)  # fmt: skip
"""Pending reasons that clear by waiting: the shard is Pending and stays on its site."""
UNSCHEDULABLE_REASONS = frozenset(
    {
        "ReqNodeNotAvail", "PartitionConfig", "BadConstraints", "PartitionNodeLimit", "PartitionTimeLimit",
        "PartitionDown", "PartitionInactive", "InvalidAccount", "InvalidQOS", "AccountNotAllowed",
        "QOSNotAllowed", "NodeNotAvail", "JobHeldAdmin", "DependencyNeverSatisfied", "InactiveLimit",
    }
)  # fmt: skip
"""Pending reasons that will not clear by waiting (the job asks what the partition cannot give, or an admin holds
it): the shard is Unschedulable, with Slurm's words."""
PER_JOB_LIMIT = re.compile(r"^(QOS|Assoc)Max.*Per(Job|Node)")
"""A per-job limit of the QOS or association (e.g. QOSMaxGRESPerJob): the job exceeds it whatever runs."""
UNSCHEDULABLE_WORDS = ("are DOWN, DRAINED", "ReqNodeNotAvail", "UnavailableNodes")
"""Words of a pending job's description that name nodes it cannot have: Slurm 22.05 says "Resources" with the
description "Nodes required for job are DOWN, DRAINED or reserved for jobs in higher priority partitions" when
its partition's nodes are drained (seen on the test cluster)."""


@dataclass(frozen=True)
class SlurmJob:
    """One job as slurmrestd's GET /jobs describes it."""

    job_id: int
    name: str
    state: str
    reason: str = "None"
    description: str = ""
    exit_code: int | None = None
    restarts: int = 0
    node: str = ""

    @classmethod
    def from_rest(cls, entry: Mapping[str, Any]) -> SlurmJob:
        state = entry.get("job_state") or "PENDING"
        return cls(
            job_id=int(entry["job_id"]),
            name=str(entry.get("name") or ""),
            state=str(state[0] if isinstance(state, list) else state),
            reason=str(entry.get("state_reason") or "None"),
            description=str(entry.get("state_description") or ""),
            exit_code=_int(entry.get("exit_code")),
            restarts=int(entry.get("restart_cnt") or 0),
            node=str(entry.get("nodes") or ""),
        )


def _int(value: Any) -> int | None:
    if isinstance(value, dict):  # later API versions: {"return_code": {"number": 0}, ...}
        value = value.get("return_code", {}).get("number") if isinstance(value.get("return_code"), dict) else None
    return int(value) if isinstance(value, int | float) else None


def pending_reason(reason: str, description: str = "") -> tuple[str | None, str]:
    """A pending job's (hpscan reason, message): Unschedulable for reasons that will not clear by waiting,
    None (an ordinary wait) otherwise; the message is Slurm's reason and words."""
    if description.startswith(reason):  # e.g. "ReqNodeNotAvail, UnavailableNodes:gpu1"
        words = f"Slurm: {description}"
    else:
        words = f"Slurm: {reason}" + (f" ({description})" if description else "")
    if (
        reason in UNSCHEDULABLE_REASONS
        or PER_JOB_LIMIT.match(reason)
        or reason.startswith("ReqNodeNotAvail")
        or any(part in description for part in UNSCHEDULABLE_WORDS)
    ):
        return Reason.UNSCHEDULABLE, words[:MESSAGE_ROOM]
    return None, words[:MESSAGE_ROOM]


@dataclass(frozen=True)
class Attempt:
    """One submitted job of a shard, with what the shared file system says of it."""

    job_id: int
    attempt: int
    job: SlurmJob | None
    """Slurm's view; None when the job is no longer in slurmctld's memory (MinJobAge) or not yet listed."""
    exit_code: int | None = None
    """The shard runner's exit code the job script left (exit-<job id>), None when there is none."""
    cancelled: bool = False
    """hpscan cancelled it (cancelled-<job id>)."""
    last_words: str = ""
    """The last line of the job's stderr, for a failed payload."""

    @property
    def stopping(self) -> bool:
        """A cancelled job that still runs: Slurm sent SIGTERM and waits KillWait before SIGKILL, and the payload
        may record the combination it was training meanwhile (into results.jsonl, which the next attempt reads)."""
        return self.cancelled and self.job is not None and self.job.state in RUNNING_STATES


@dataclass(frozen=True)
class Verdict:
    """What a shard's newest attempt means: its phase, reason and message, and whether to submit another attempt."""

    phase: ShardPhase
    reason: str | None = None
    message: str | None = None
    retry: bool = False


def attempt_outcome(attempt: Attempt) -> tuple[str, str | None, str | None]:
    """("ok" | "final" | "retryable" | "pending" | "running" | "cancelled", reason, message) of one attempt."""
    job, code = attempt.job, attempt.exit_code
    state = job.state if job is not None else ""
    if attempt.cancelled:
        return "cancelled", Reason.SUSPENDED, "stopped; recorded results are kept"
    if code is not None:
        if code == PayloadExit.OK:
            return "ok", None, None
        slurm = f" (Slurm: {state}, {SLURM_ENDINGS[state]})" if state in SLURM_ENDINGS and state != "FAILED" else ""
        words = f"{attempt.last_words}{slurm}" if attempt.last_words else f"the payload exited with code {code}{slurm}"
        if code in FINAL_EXITS:
            return "final", FINAL_EXITS[code], words[:MESSAGE_ROOM]
        return "retryable", Reason.PAYLOAD_FAILED, f"exit code {code}: {words}"[:MESSAGE_ROOM]
    if job is None:
        return "retryable", Reason.JOB_FAILED, "the job left Slurm's queue without the shard runner's exit code"
    if state in PENDING_STATES:
        reason, message = pending_reason(job.reason, job.description)
        return "pending", reason, message
    if state in RUNNING_STATES:
        return "running", None, f"Slurm job {job.job_id} on {job.node}" if job.node else None
    ending = SLURM_ENDINGS.get(state, "the job ended")
    exit_words = f", exit code {job.exit_code}" if state == "FAILED" and job.exit_code else ""
    return "retryable", Reason.JOB_FAILED, f"Slurm: {state}: {ending}{exit_words}"[:MESSAGE_ROOM]


def attempts_started(attempts: Sequence[Attempt]) -> int:
    """Attempts so far: hpscan's submissions plus Slurm's own requeues of them (preemption, node failure)."""
    return len(attempts) + sum(a.job.restarts for a in attempts if a.job is not None)


def shard_verdict(attempts: Sequence[Attempt], retries: int, recorded: int, expected: int) -> Verdict:
    """The shard's state from its newest attempt: a failure that exit 2 or 3 names ends it at once, another is
    tried again (``retry``) while attempts <= retries, then ends it; exit 0 succeeds when every combination
    was recorded."""
    kind, reason, message = attempt_outcome(attempts[-1])
    if kind == "ok":
        if recorded >= expected:
            return Verdict(ShardPhase.SUCCEEDED)
        kind, reason = "retryable", Reason.RECORDS_MISSING
        message = f"the payload exited 0 but recorded {recorded} of {expected} combinations"
    if kind == "pending":
        return Verdict(ShardPhase.PENDING, reason, message)
    if kind == "running":
        return Verdict(ShardPhase.RUNNING, None, message)
    if kind == "cancelled":
        return Verdict(ShardPhase.SUSPENDED, reason, message)
    if kind == "final":
        return Verdict(ShardPhase.FAILED, reason, message)
    if attempts_started(attempts) <= retries:
        return Verdict(ShardPhase.PENDING, Reason.RETRYING, f"attempt {len(attempts)} failed ({message})", retry=True)
    return Verdict(ShardPhase.FAILED, reason, message)
