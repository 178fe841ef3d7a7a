"""Why a shard's Job is in trouble, from its pods. Pods are read only when they say something the Job does not: why
an active pod is not ready (the scheduler cannot place it, its image cannot be pulled), or why an attempt failed
(once per failed attempt). A Job whose pod cannot get its image is failed by the operator (an annotation, read by
states.shard_state, and the Job suspended). What the pods say is read by the pure functions of ``states``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hpscan.backends.base import ScanRef
from hpscan.backends.kubernetes.api import KubernetesApi
from hpscan.backends.kubernetes.kueue import Kueue
from hpscan.backends.kubernetes.shard_objects import shard_selector
from hpscan.backends.kubernetes.state import ScanState
from hpscan.backends.kubernetes.states import (
    FAILURE_ANNOTATION,
    failure_cause,
    image_pull_timeout,
    image_verdict,
    kueue_queue,
)


def failed_attempts(job: dict[str, Any]) -> int:
    """A Job's failed attempts, or 1 for a Job failed before any attempt counted (e.g. by its deadline)."""
    status = job.get("status") or {}
    failed = any(c.get("type") == "Failed" and c.get("status") == "True" for c in status.get("conditions") or [])
    return max(status.get("failed") or 0, 1 if failed else 0)


def cause_of(state: ScanState, job: dict[str, Any]) -> tuple[int, str]:
    """(the Job's failed attempts when its pods were read, the newest one's cause); (0, "") when never read."""
    return state.causes.get(job["metadata"]["name"], (0, ""))


class JobFailures:
    """Reads the pods of a scan's shard Jobs when needed; ``clock`` is wall time (pods carry wall-clock times): how
    long a pod has tried to pull its image."""

    def __init__(self, api: KubernetesApi, kueue: Kueue, clock: Callable[[], float]) -> None:
        self.api = api
        self.kueue = kueue
        self.clock = clock

    def read_pods(self, state: ScanState, jobs: list[dict[str, Any]]) -> tuple[bool, dict[str, list[dict[str, Any]]]]:
        """Whether an active pod is not ready, and the pods by Job when they need reading (one LIST); the causes of
        attempts that failed since the last read are kept in ``state``."""
        waiting = any(
            (j.get("status") or {}).get("active", 0) > ((j.get("status") or {}).get("ready") or 0) for j in jobs
        )
        unexplained = [j for j in jobs if failed_attempts(j) and failed_attempts(j) != cause_of(state, j)[0]]
        pods_by_job: dict[str, list[dict[str, Any]]] = {}
        if waiting or unexplained:
            for pod in self.api.pods(state.scan.namespace, shard_selector(state.scan)):
                labels = pod["metadata"].get("labels") or {}
                job = labels.get("batch.kubernetes.io/job-name") or labels.get("job-name") or ""
                pods_by_job.setdefault(job, []).append(pod)
        for job in unexplained:
            name = job["metadata"]["name"]
            state.causes[name] = (failed_attempts(job), failure_cause(pods_by_job.get(name, [])))
        return waiting, pods_by_job

    def image_failure(self, job: dict[str, Any], pods: list[dict[str, Any]]) -> str | None:
        """The kubelet's words when the Job's pod cannot get its image and should wait no longer (image_verdict)."""
        if not pods or (job.get("spec") or {}).get("suspend"):
            return None
        return image_verdict(pods, self.clock(), image_pull_timeout(job))

    def fail(self, scan: ScanRef, job: dict[str, Any], said: str, workload: dict[str, Any] | None) -> dict[str, Any]:
        """Fail a Job whose pod cannot get its image: the words on an annotation (shard_state reads them, also after
        a restart) and the Job suspended (its pod goes and frees its GPU; under Kueue, its Workload deactivated,
        which suspends it and frees the quota). The Job as patched."""
        patch: dict[str, Any] = {"metadata": {"annotations": {FAILURE_ANNOTATION: said[:1024]}}}
        if kueue_queue(job):
            self.kueue.activate(scan.namespace, workload, False)
        else:
            patch["spec"] = {"suspend": True}
        self.api.batch.patch_namespaced_job(job["metadata"]["name"], scan.namespace, patch)
        annotations = dict(job["metadata"].get("annotations") or {}, **{FAILURE_ANNOTATION: said})
        spec = (job.get("spec") or {}) | {"suspend": True}
        return job | {"metadata": job["metadata"] | {"annotations": annotations}, "spec": spec}
