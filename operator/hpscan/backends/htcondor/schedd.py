"""Talking to an access point: the job attributes hpscan sets and reads, and how a site's schedd is found."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from hpscan.api.sites import HTCondorSite, Site
from hpscan.backends.htcondor.credentials import Credential, refused
from hpscan.errors import BackendError, CredentialRefused, SchedulerUnavailable
from hpscan.job.chirp import (
    BEST_ATTR,
    DONE_ATTR,
    FAILED_ATTR,
    PROGRESS_ATTR,
    RECORD_PAGES_ATTR,
    STOPS_ATTR,
    TRIALS_ATTR,
    classad_string,
)

# Job attributes hpscan sets at submit time (+Attr in the description) and reads back.
UID_ATTR = "HPScanUid"
SHARD_ATTR = "HPScanShard"
NAME_ATTR = "HPScanName"
NAMESPACE_ATTR = "HPScanNamespace"
SITE_ATTR = "HPScanSite"
TOTAL_ATTR = "HPScanTotal"
PROBE_ATTR = "HPScanProbe"
"""Set on a site probe job: the site's name (probe jobs carry no shard)."""
MOVES_ATTR = "HPScanMoves"
"""The job's move count: how often its shard moved to another site before (ShardLaunch.moves)."""
RELEASED_ATTR = "HPScanReleased"
"""Set on a deleted scan's completed jobs so they leave the queue (see leave_in_queue)."""
CANCELLED_ATTR = "HPScanCancelled"
"""Set on jobs just before hpscan removes them (suspend, delete): a real 25.x schedd leaves RemoveReason undefined
after a Remove with a reason, so the reason alone cannot tell our removals from a site's."""

PROJECTION = [
    "ClusterId",
    "ProcId",
    "JobStatus",
    UID_ATTR,
    SHARD_ATTR,
    SITE_ATTR,
    TOTAL_ATTR,
    MOVES_ATTR,
    PROBE_ATTR,
    "NumJobStarts",
    "EnteredCurrentStatus",
    "ExitCode",
    "ExitBySignal",
    "ExitSignal",
    "HoldReason",
    "HoldReasonCode",
    "RemoveReason",
    "LastRejMatchReason",
    "RemoteHost",  # a removed job still stopping has one (removal.Removal reads its records once it is gone)
    CANCELLED_ATTR,
    RELEASED_ATTR,
    DONE_ATTR,
    FAILED_ATTR,
    BEST_ATTR,
    RECORD_PAGES_ATTR,  # the pages themselves are read only from jobs that chirped since (backend)
    TRIALS_ATTR,  # workers that pull: what each was handed (a restarted operator rebuilds its search from these)
    STOPS_ATTR,
    PROGRESS_ATTR,
    "TransferCheckpoint",  # with the two below: ads.spooled_output_repair
    "TransferOutput",
    "SpooledOutputFiles",
]
"""The attributes one poll cycle asks for: enough for phases, reasons and live progress, nothing more."""
EXISTING_PROJECTION = [
    "ClusterId",
    "ProcId",
    SHARD_ATTR,
    MOVES_ATTR,
    "JobStatus",
    "HoldReasonCode",
    "QDate",
    "StageInFinish",
]
"""What submit asks of a scan's jobs in the queue (ads.present_and_orphaned)."""

# htcondor2.JobStatus values (kept as ints: the bindings need not be importable to map a job ad).
IDLE, RUNNING, REMOVED, COMPLETED, HELD, TRANSFERRING_OUTPUT, SUSPENDED = 1, 2, 3, 4, 5, 6, 7
HOLD_SPOOLING_INPUT = 16
SPOOL_GRACE_SECONDS = 600
"""How long a job may wait for its spooled input before it counts as orphaned (a crash between submit and spool).
The schedd sets StageInStart about a second after a spooling submit whether or not spool() is ever called, so only
StageInFinish and time tell an orphan from input still on its way."""
"""HoldReasonCode of a job submitted with spool=True whose input has not been spooled yet."""

REMOVE_REASON_PREFIX = "hpscan:"
"""RemoveReason of the jobs hpscan removes itself (suspend, delete); other removals fail the shard."""

KEEP_COMPLETED_SECONDS = 14 * 24 * 3600
"""How long a completed job stays in the queue so its output can be retrieved and its state polled."""

HOLD_EXECUTE_EXCEEDED = 47
"""HoldReasonCode of a job that ran past its allowed_execute_duration (JobExecuteExceeded): HTCondor holds it, and
max_retries and retry_until act only when a job exits, so the submit description's periodic_release retries it."""
TIMED_OUT_REASON = "the attempt ran past spec.payload.timeoutSeconds"
"""How the RemoveReason of a job removed after its last timed-out attempt begins (the submit's periodic_remove)."""
TIMED_OUT_REMOVED = (
    f"JobStatus == {REMOVED} && {CANCELLED_ATTR} =!= true"
    f" && (HoldReasonCode =?= {HOLD_EXECUTE_EXCEEDED} || LastHoldReasonCode =?= {HOLD_EXECUTE_EXCEEDED})"
)
"""A job removed while held for its timeout (the schedd moves HoldReasonCode to LastHoldReasonCode on removal),
not by hpscan: kept in the queue as a completed job is (leave_in_queue), so the poller sees its shard fail instead
of finding no job and submitting the shard again."""
CANCELLED_REMOVED = f"JobStatus == {REMOVED} && {CANCELLED_ATTR} =?= true"
"""A job hpscan removed (suspend, delete, a move): kept in the queue (leave_in_queue) until hpscan read the records it
chirped while it stopped and released it (removal.Removal), so a record chirped in its last seconds is never lost."""


class ScheddLike(Protocol):
    """The part of ``htcondor2.Schedd`` the backend uses (same names and signatures)."""

    def query(self, constraint: Any = ..., projection: list[str] = ..., *args: Any, **kwargs: Any) -> list[Any]: ...

    def submit(self, description: Any, count: int = ..., spool: bool = ..., itemdata: Any = ...) -> Any: ...

    def act(self, action: Any, job_spec: Any, reason: str | None = ...) -> Any: ...

    def spool(self, result: Any) -> None: ...

    def retrieve(self, job_spec: Any) -> None: ...

    def edit(self, job_spec: Any, attr: str, value: Any, *args: Any, **kwargs: Any) -> Any: ...


ScheddFactory = Callable[[HTCondorSite], ScheddLike]
"""Returns the schedd of a site; tests pass one that returns a stand-in."""


def condor_of(site: Site) -> HTCondorSite:
    """The htcondor block of a site; BackendError for a site of another backend."""
    condor = site.settings_as(HTCondorSite)
    if condor is None:
        raise BackendError(f"site {site.name!r} is not an htcondor site (it has a {site.backend} block)")
    return condor


def default_site() -> Site:
    """The site of a launch or probe that names none: the local schedd, with the block's defaults."""
    return Site.model_validate({"name": "htcondor", "htcondor": {}})


def schedd_label(site: HTCondorSite) -> str:
    """How messages name a site's schedd."""
    if not site.remote:
        return "the local HTCondor schedd"
    name = f"HTCondor schedd {site.schedd}" if site.schedd else "the pool's HTCondor schedd"
    return f"{name} (pool {site.pool})" if site.pool else name


def locate_schedd(site: HTCondorSite) -> ScheddLike:
    """The real ``htcondor2.Schedd`` of a site: the local one, or located through the site's collector."""
    import htcondor2

    if not site.remote:
        return htcondor2.Schedd()
    collector = htcondor2.Collector(site.pool) if site.pool else htcondor2.Collector()
    if site.schedd:
        location = collector.locate(htcondor2.DaemonTypes.Schedd, site.schedd)
    else:
        location = collector.locate(htcondor2.DaemonTypes.Schedd)
    return htcondor2.Schedd(location)


def call_failed(
    site: HTCondorSite, doing: str, error: BaseException, credential: Credential | None = None, name: str | None = None
) -> BackendError:
    """The error of a schedd call that failed: CredentialRefused when the schedd refused the caller (naming the
    credential), else SchedulerUnavailable; ``name`` (a site's) leads the message when given."""
    cause = str(error).strip() or type(error).__name__
    where = f"site {name!r}: " if name else ""
    if refused(cause):
        who = credential.describe() if credential is not None else "the operator's own HTCondor credentials"
        return CredentialRefused(f"{where}{schedd_label(site)} refused {who} while {doing}: {cause}")
    return SchedulerUnavailable(f"{where}{schedd_label(site)} did not answer while {doing}: {cause}")


@dataclass
class ScheddView:
    """What the last cycle saw on one schedd."""

    site: HTCondorSite
    ads: list[Any] = field(default_factory=list)
    error: str | None = None
    answered: bool = False
    retrieved: set[str] = field(default_factory=set)


def uid_constraint(uids: Iterable[str]) -> str:
    """The constraint that selects the jobs of these scans."""
    return f"member({UID_ATTR}, {{{', '.join(classad_string(u) for u in sorted(uids))}}})"
