"""Job ads -> shard states (pure): phases, attempts, the hold and remove reasons a user must see, and which shards
have a job."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from hpscan.api.contract import PayloadExit, ResultRecord
from hpscan.api.status import FINAL_EXITS, Reason, ShardPhase, ShardStatus
from hpscan.backends.htcondor.schedd import (
    CANCELLED_ATTR,
    COMPLETED,
    HELD,
    HOLD_SPOOLING_INPUT,
    IDLE,
    MOVES_ATTR,
    REMOVE_REASON_PREFIX,
    REMOVED,
    RUNNING,
    SHARD_ATTR,
    SUSPENDED,
    TIMED_OUT_REASON,
    TOTAL_ATTR,
    TRANSFERRING_OUTPUT,
)
from hpscan.job.chirp import DONE_ATTR, FAILED_ATTR, chirped_records, record_page_attr


def attr(ad: Any, name: str, default: Any = None) -> Any:
    """An attribute's value from a ClassAd (or a dict), evaluated; ``default`` when missing or undefined."""
    try:
        value = ad.eval(name) if hasattr(ad, "eval") else ad.get(name, default)
    except (KeyError, TypeError, ValueError):
        return default
    if value is None or type(value).__name__ == "Value":  # classad2.Value.Undefined / Error
        return default
    return value


def job_id(ad: Any) -> str:
    return f"{attr(ad, 'ClusterId')}.{attr(ad, 'ProcId')}"


def shard_status(ad: Any, site: str | None) -> ShardStatus:
    """The shard state a job ad describes (phase, attempts, reason; hold and remove reasons surfaced)."""
    status = int(attr(ad, "JobStatus", IDLE))
    starts = int(attr(ad, "NumJobStarts", 0))
    common: dict[str, Any] = {
        "index": int(attr(ad, SHARD_ATTR, 0)),
        "site": site,
        "job": job_id(ad),
        "attempts": starts,
        "total": int(attr(ad, TOTAL_ATTR, 0)),
        "done": int(attr(ad, DONE_ATTR, 0)),
        "failed": int(attr(ad, FAILED_ATTR, 0)),
        "moves": int(attr(ad, MOVES_ATTR, 0)),
    }
    if status in (RUNNING, TRANSFERRING_OUTPUT):
        return ShardStatus(phase=ShardPhase.RUNNING, **common)
    if status == SUSPENDED:
        return ShardStatus(
            phase=ShardPhase.RUNNING,
            reason=Reason.SUSPENDED_BY_SITE,
            message="the execute node suspended the job",
            **common,
        )
    if status == HELD:
        if int(attr(ad, "HoldReasonCode", 0)) == HOLD_SPOOLING_INPUT:
            return ShardStatus(phase=ShardPhase.PENDING, reason=Reason.SPOOLING_INPUT, **common)
        entered = attr(ad, "EnteredCurrentStatus")
        since = datetime.fromtimestamp(int(entered), UTC) if entered is not None else None  # for holdTimeoutSeconds
        return ShardStatus(
            phase=ShardPhase.PENDING,
            reason=Reason.HELD,
            message=str(attr(ad, "HoldReason", "held")),
            since=since,
            **common,
        )
    if status == COMPLETED:
        if attr(ad, "ExitBySignal", False):
            signal = attr(ad, "ExitSignal", "?")
            message = f"the job was killed by signal {signal} after {starts} attempt(s)"
            return ShardStatus(phase=ShardPhase.FAILED, reason=Reason.PAYLOAD_FAILED, message=message, **common)
        code = int(attr(ad, "ExitCode", 0))
        if code == 0:
            return ShardStatus(phase=ShardPhase.SUCCEEDED, **common)
        if code in FINAL_EXITS:
            what = "found no usable GPU" if code == PayloadExit.GPU_UNAVAILABLE else "refused its input"
            message = f"the payload {what} (exit code {code}); not retried"
            return ShardStatus(phase=ShardPhase.FAILED, reason=FINAL_EXITS[code], message=message, **common)
        message = f"the payload exited with code {code} after {starts} attempt(s)"
        return ShardStatus(phase=ShardPhase.FAILED, reason=Reason.PAYLOAD_FAILED, message=message, **common)
    if status == REMOVED:
        reason = str(attr(ad, "RemoveReason", ""))
        if reason.startswith(REMOVE_REASON_PREFIX) or attr(ad, CANCELLED_ATTR) is True:
            return ShardStatus(phase=ShardPhase.SUSPENDED, reason=Reason.SUSPENDED, **common)
        if reason.startswith(TIMED_OUT_REASON):  # the submit's periodic_remove: its last attempt timed out too
            return ShardStatus(phase=ShardPhase.FAILED, reason=Reason.PAYLOAD_FAILED, message=reason, **common)
        return ShardStatus(
            phase=ShardPhase.FAILED,
            reason=Reason.REMOVED,
            message=f"the job was removed: {reason or 'no reason given'}",
            **common,
        )
    if starts > 0:
        return ShardStatus(
            phase=ShardPhase.PENDING, reason=Reason.RETRYING, message=f"attempt {starts + 1} waits for a slot", **common
        )
    if (rejected := attr(ad, "LastRejMatchReason")) is not None:
        # The last negotiation found no free slot for it (busy, or none with such GPUs: HTCondor does not say which).
        message = f"no free slot matches its GPUs, compute capability, memory and requirements ({rejected})"
        return ShardStatus(phase=ShardPhase.PENDING, reason=Reason.UNSCHEDULABLE, message=message, **common)
    return ShardStatus(phase=ShardPhase.PENDING, **common)


def records_chirped_by(ad: Any, pages: range) -> list[ResultRecord]:
    """The records on these record pages of a job's ad (HPScanRecords<N>; a page the ad lacks holds none)."""
    return [record for page in pages for record in chirped_records(attr(ad, record_page_attr(page)))]


def present_and_orphaned(ads: Iterable[Any], spool_grace_seconds: float) -> tuple[set[tuple[int, int]], list[str]]:
    """Of a scan's jobs in the queue: the (shard, moves) that have a job (a moved shard's new job is not its old
    one), and the ids of orphans, jobs held for spooled input that never came (a crash between submit and spool),
    to remove and submit again once their input had ``spool_grace_seconds`` to arrive. Removed jobs count as none."""
    present: set[tuple[int, int]] = set()
    orphans: list[str] = []
    for ad in ads:
        status = int(attr(ad, "JobStatus", IDLE))
        if status == REMOVED:
            continue
        # A spooled job stays held a moment after spool() returns: it is present.
        if status == HELD and int(attr(ad, "HoldReasonCode", 0)) == HOLD_SPOOLING_INPUT:
            now = float(attr(ad, "ServerTime", time.time()))
            waited = now - float(attr(ad, "QDate", now))
            if attr(ad, "StageInFinish") is None and waited > spool_grace_seconds:
                orphans.append(job_id(ad))
                continue
        present.add((int(attr(ad, SHARD_ATTR, -1)), int(attr(ad, MOVES_ATTR, 0))))
    return present, orphans


def spooled_output_repair(ad: Any) -> str | None:
    """The SpooledOutputFiles a completed self-checkpointing job should have, or None when its own is right.

    The 25.x schedd joins a spooled job's checkpoint list and output list without a comma once it checkpointed
    (``checkpoints,results.jsonlresults.jsonl``, seen on the test pool), and retrieving the output then fails on a
    file that does not exist, for ever: hpscan sets the list right before it retrieves."""
    checkpoint = attr(ad, "TransferCheckpoint")
    spooled = attr(ad, "SpooledOutputFiles")
    if not checkpoint or spooled is None:
        return None
    listed = f"{checkpoint},{attr(ad, 'TransferOutput', '')}"
    wanted = list(dict.fromkeys(name.strip() for name in listed.split(",") if name.strip()))
    return None if set(str(spooled).split(",")) <= set(wanted) else ",".join(wanted)
