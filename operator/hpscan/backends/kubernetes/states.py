"""What a scan's Jobs and pods on Kubernetes say, read as pure functions of the dicts the API returns: a shard's
phase, attempts, reason and message (shard_state), a probe's outcome (probe_outcome), and why a pod failed or waits,
in the words of whoever knew it (the payload's last line, the kubelet's, an eviction's, the scheduler's)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from hpscan.api.sites import KubernetesSite
from hpscan.api.status import FINAL_EXITS, Reason, ShardPhase, ShardStatus
from hpscan.backends.kubernetes.names import IMAGE_PULL_TIMEOUT_ANNOTATION, KUEUE_QUEUE_LABEL, LABEL_MOVES, LABEL_SHARD
from hpscan.core.brokering import ProbeOutcome


def probe_outcome(job: dict[str, Any] | None, pods: Sequence[dict[str, Any]]) -> ProbeOutcome:
    """A probe Job and its pods -> the probe's exit code and last words, or why it waits (not sent, not
    scheduled)."""
    if job is None:
        return ProbeOutcome(None, "not sent yet")
    for pod in sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "", reverse=True):
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            ended = (container.get("state") or {}).get("terminated")
            if ended is not None:
                lines = [line.strip() for line in (ended.get("message") or "").splitlines() if line.strip()]
                return ProbeOutcome(int(ended.get("exitCode", 1)), lines[-1][:300] if lines else "")
    conditions = {c["type"]: c for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"}
    if "Complete" in conditions:
        return ProbeOutcome(0, "")
    if "Failed" in conditions:  # e.g. the deadline passed before the pod ran
        failed = conditions["Failed"]
        return ProbeOutcome(1, f"{failed.get('reason')}: {failed.get('message') or ''}".strip(": "))
    trouble = image_trouble(pods)
    image = f"{trouble[0]}: {trouble[1]}"[:MESSAGE_ROOM] if trouble else None
    return ProbeOutcome(None, unscheduled(pods) or image or "waiting for the probe pod")


def _exit_code(message: str) -> int | None:
    """The exit code a podFailurePolicy message names ("... failed with exit code 3 matching FailJob rule ...")."""
    found = re.search(r"exit ?code:? ?(\d+)", message, re.IGNORECASE)
    return int(found.group(1)) if found else None


def unscheduled(pods: Sequence[dict[str, Any]]) -> str | None:
    """The scheduler's message when none of a Job's live pods runs and one cannot be scheduled, e.g. "0/2 nodes are
    available: 1 Insufficient nvidia.com/gpu, 1 node(s) had untolerated taint(s)"; None otherwise."""
    live = [p for p in pods if (p.get("status") or {}).get("phase") in ("Pending", "Running")]
    if not live or any(p["status"]["phase"] == "Running" for p in live):
        return None
    for pod in live:
        for condition in pod["status"].get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                return str(condition.get("message") or condition.get("reason") or "the pod cannot be scheduled")
    return None


MESSAGE_ROOM = 300
"""A shard's message is bounded (as the HTCondor backend's): the status of a 1,000-shard scan stays small."""
FAILURE_ANNOTATION = "hpscan.io/failure"
"""Set by the operator on a Job it failed itself (its pod could not get its image), with the kubelet's words; the
Job is suspended beside it, so its pod no longer holds a GPU."""
IMAGE_TROUBLE = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull", "CreateContainerConfigError"}
)
"""A container's waiting reasons that mean its image cannot be pulled or its container cannot be created."""
IMAGE_FINAL = frozenset({"InvalidImageName", "ErrImageNeverPull"})
"""Of those, the ones waiting cannot mend (a registry that is down may come back; a malformed name never will)."""


def _last_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _newest_first(pods: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "", reverse=True)


def pod_failure(pod: Mapping[str, Any]) -> str:
    """Why a pod failed, in the words of whoever knew it, most telling first: the kubelet's or the eviction's
    (``DeadlineExceeded``, ``Evicted: The node was low on resource: memory``), a disruption's (preempted, node
    drained), then the container's (``OOMKilled (exit code 137)``, ``exit code 1: <its last line>``: the
    termination message, which FallbackToLogsOnError fills with the log's tail). "" when it did not fail."""
    status = pod.get("status") or {}
    words = []
    if status.get("reason"):
        words.append(f"{status['reason']}: {status.get('message') or ''}".strip(": "))
    for condition in status.get("conditions") or []:
        if condition.get("type") == "DisruptionTarget" and condition.get("status") == "True":
            words.append(f"{condition.get('reason')}: {condition.get('message') or ''}".strip(": "))
    for container in status.get("containerStatuses") or []:
        ended = (container.get("state") or {}).get("terminated") or {}
        code = ended.get("exitCode") or 0
        if code == 0 and ended.get("reason") in (None, "Completed"):
            continue
        reason = ended.get("reason") or "Error"
        head = f"exit code {code}" if reason == "Error" else f"{reason} (exit code {code})"
        last = _last_line(ended.get("message"))
        words.append(f"{head}: {last}" if last else head)
    return "; ".join(words)[:MESSAGE_ROOM]


def failure_cause(pods: Sequence[dict[str, Any]]) -> str:
    """The cause of a Job's newest failed attempt (pod_failure of its newest pod that failed), or ""."""
    for pod in _newest_first(pods):
        if said := pod_failure(pod):
            return said
    return ""


def image_trouble(pods: Sequence[dict[str, Any]]) -> tuple[str, str, str] | None:
    """(reason, the kubelet's message, the pod's start time) of a live pod whose container waits because its image
    cannot be pulled or its container created; None when no pod waits so."""
    for pod in _newest_first(pods):
        status = pod.get("status") or {}
        if status.get("phase") not in ("Pending", None):
            continue
        for container in status.get("containerStatuses") or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in IMAGE_TROUBLE:
                started = str(status.get("startTime") or pod["metadata"].get("creationTimestamp") or "")
                return str(waiting["reason"]), str(waiting.get("message") or ""), started
    return None


def image_verdict(pods: Sequence[dict[str, Any]], now: float, timeout_seconds: float) -> str | None:
    """The words that fail a shard whose pod could not get its image: at once for a name that waiting cannot mend,
    else after ``timeout_seconds`` of trying (the kubelet backs off up to 5 minutes between pulls); None while it
    may still come."""
    trouble = image_trouble(pods)
    if trouble is None:
        return None
    reason, message, started = trouble
    waited = now - _timestamp(started) if started else 0.0
    if reason not in IMAGE_FINAL and waited < timeout_seconds:
        return None
    said = f"{reason}: {message}".strip(": ")
    return said if reason in IMAGE_FINAL else f"{said} (for {waited:.0f} s)"


def image_pull_timeout(job: Mapping[str, Any]) -> float:
    """The site's imagePullTimeoutSeconds as the Job carries it (the default for a Job without it)."""
    said = (job.get("metadata", {}).get("annotations") or {}).get(IMAGE_PULL_TIMEOUT_ANNOTATION)
    return float(said) if said else float(KubernetesSite.model_fields["image_pull_timeout_seconds"].default)


def _timestamp(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# Kueue (docs/kueue.md): a Job labelled with a queue is admitted by Kueue through its Workload, an object Kueue
# creates and owns beside the Job (kueue.x-k8s.io/v1beta2, owner reference: the Job).


def kueue_queue(job: Mapping[str, Any]) -> str | None:
    """The Kueue LocalQueue a Job waits in (its kueue.x-k8s.io/queue-name label), or None for a Job Kueue leaves be."""
    return (job.get("metadata", {}).get("labels") or {}).get(KUEUE_QUEUE_LABEL)


def workloads_by_job(workloads: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Workloads by the uid of the Job that owns them (Kueue names them job-<name>-<hash>)."""
    return {
        str(owner.get("uid")): dict(workload)
        for workload in workloads
        for owner in workload.get("metadata", {}).get("ownerReferences") or []
        if owner.get("kind") == "Job"
    }


def workload_active(workload: Mapping[str, Any] | None) -> bool:
    """Whether a Workload may be admitted: spec.active, true unless someone (hpscan's suspend) set it false."""
    return workload is None or (workload.get("spec") or {}).get("active") is not False


def kueue_words(job: Mapping[str, Any], workload: Mapping[str, Any] | None) -> str:
    """Why a Kueue-managed Job still waits, in Kueue's words: the Workload's QuotaReserved=False message (e.g.
    "couldn't assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu in flavor default, 1
    more needed"), else its Admitted=False or Evicted message; before Kueue made the Workload, that it has not."""
    queue = kueue_queue(job)
    if workload is None:
        return f"waiting in Kueue queue {queue} (no Workload yet)"
    conditions = {c.get("type"): c for c in (workload.get("status") or {}).get("conditions") or []}
    for kind, status in (("QuotaReserved", "False"), ("Admitted", "False"), ("Evicted", "True")):
        said = conditions.get(kind)
        if said is not None and said.get("status") == status and said.get("message"):
            return f"Kueue queue {queue}: {said['message']}"[:MESSAGE_ROOM]
    return f"waiting in Kueue queue {queue} for admission"


def shard_state(
    job: dict[str, Any],
    causes: Mapping[str, str] | None = None,
    pods: Sequence[dict[str, Any]] = (),
    workload: Mapping[str, Any] | None = None,
) -> ShardStatus:
    """A Job (as a dict from the API) -> the shard's phase, attempts, reason and message. ``causes`` maps a Job's
    name to the cause of its newest failed attempt (failure_cause of its pods): a failed shard's message says it
    before the Job's own words, so the user reads "OOMKilled (exit code 137)", not only "backoff limit". ``pods``
    are the Job's pods, read when it has pods that are not ready (a pod the scheduler cannot place shows as
    Pending, Unschedulable; one that cannot get its image as Pending with the kubelet's reason). ``workload``: the
    Kueue Workload of a Job labelled with a queue: such a Job is suspended until Kueue admits it, so it is Pending,
    Queued, with Kueue's words (kueue_words), and Suspended only once hpscan deactivated its Workload."""
    causes = causes or {}
    meta, spec, status = job.get("metadata", {}), job.get("spec", {}), job.get("status") or {}
    shard = int(meta.get("labels", {}).get(LABEL_SHARD, 0))
    moves = int(meta.get("labels", {}).get(LABEL_MOVES, 0))
    site = meta.get("annotations", {}).get("hpscan.io/site")
    cause = causes.get(str(meta.get("name")), "")
    attempts = (status.get("failed") or 0) + (status.get("succeeded") or 0) + (status.get("active") or 0)
    conditions = {c["type"]: c for c in status.get("conditions") or [] if c.get("status") == "True"}
    base = {"index": shard, "site": site, "attempts": attempts, "job": meta.get("name"), "moves": moves}
    if "Complete" in conditions:
        return ShardStatus(phase=ShardPhase.SUCCEEDED, **base)
    if "Failed" in conditions:
        failed = conditions["Failed"]
        reason = failed.get("reason") or Reason.JOB_FAILED
        message = failed.get("message") or ""
        if reason == "PodFailurePolicy" and (code := _exit_code(message)) in FINAL_EXITS:
            reason = FINAL_EXITS[code]  # says the exit code: the payload's own words are the message
            message = cause.removeprefix(f"exit code {code}: ") or f"the payload exited with code {code} ({message})"
        elif cause:
            message = f"{cause} ({message})" if message else cause
        return ShardStatus(phase=ShardPhase.FAILED, reason=reason, message=message[:MESSAGE_ROOM], **base)
    if failure := (meta.get("annotations") or {}).get(FAILURE_ANNOTATION):
        return ShardStatus(
            phase=ShardPhase.FAILED, reason=Reason.IMAGE_UNAVAILABLE, message=failure[:MESSAGE_ROOM], **base
        )
    if spec.get("suspend") and kueue_queue(job) and workload_active(workload):
        words = kueue_words(job, workload)
        return ShardStatus(phase=ShardPhase.PENDING, reason=Reason.QUEUED, message=words[:MESSAGE_ROOM], **base)
    if spec.get("suspend"):
        return ShardStatus(phase=ShardPhase.SUSPENDED, reason=None, **base)
    if status.get("active"):
        if (why := unscheduled(pods)) is not None:
            return ShardStatus(
                phase=ShardPhase.PENDING, reason=Reason.UNSCHEDULABLE, message=why[:MESSAGE_ROOM], **base
            )
        if (trouble := image_trouble(pods)) is not None:
            said = f"{trouble[0]}: {trouble[1]}".strip(": ")
            return ShardStatus(phase=ShardPhase.PENDING, reason=trouble[0], message=said[:MESSAGE_ROOM], **base)
        retrying = (status.get("failed") or 0) > 0
        so_far = f"{status.get('failed')} failed attempt(s)" + (f", the last: {cause}" if cause else "")
        return ShardStatus(
            phase=ShardPhase.RUNNING,
            reason=Reason.RETRYING if retrying else None,
            message=so_far[:MESSAGE_ROOM] if retrying else None,
            **base,
        )
    return ShardStatus(phase=ShardPhase.PENDING, **base)
