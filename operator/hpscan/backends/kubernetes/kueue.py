"""Kueue (docs/kueue.md): a Job of a site with a queueName is created suspended and Kueue unsuspends it once its
Workload is admitted.

Kueue also unsuspends an admitted Job that someone else suspends (its reconciler: "Job admitted, unsuspending"), so
hpscan pauses such a Job through its Workload instead: spec.active false makes Kueue evict it (the Job is
suspended, its pods go) and release its quota; spec.active true queues it again. Deleting the Job would free the
quota too, but its pods' recorded pages and its attempts would go with it, and the operator never deletes Jobs.
What a Workload says is read by the pure functions of ``states`` (kueue_queue, workload_active, kueue_words).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from hpscan.backends.kubernetes.api import KubernetesApi
from hpscan.backends.kubernetes.states import kueue_queue, workload_active, workloads_by_job

KUEUE_API = ("kueue.x-k8s.io", "v1beta2", "workloads")


class Kueue:
    """Reads Workloads and pauses or queues again the Jobs Kueue manages; Jobs it does not manage are suspended."""

    def __init__(self, api: KubernetesApi) -> None:
        self.api = api

    def workloads(self, namespace: str) -> dict[str, dict[str, Any]]:
        """The namespace's Kueue Workloads by the uid of their Job (one LIST; only for Kueue-managed Jobs)."""
        listed: Any = self.api.custom.list_namespaced_custom_object(KUEUE_API[0], KUEUE_API[1], namespace, KUEUE_API[2])
        return workloads_by_job(listed.get("items") or [])

    def activate(self, namespace: str, workload: dict[str, Any] | None, active: bool) -> None:
        """Set a Workload's spec.active (no Workload yet: nothing to do; the next step sees it)."""
        if workload is None or workload_active(workload) == active:
            return
        name = workload["metadata"]["name"]
        self.api.custom.patch_namespaced_custom_object(
            *KUEUE_API[:2], namespace, KUEUE_API[2], name, {"spec": {"active": active}}
        )

    def queue_again(self, namespace: str, name: str) -> bool:
        """Activate the Workload of a Kueue-managed Job (Kueue unsuspends it once admitted again); False when the Job
        is not there."""
        job = self.api.job(namespace, name)
        if job is None:
            return False
        self.activate(namespace, self.workloads(namespace).get(job["metadata"]["uid"]), True)
        return True

    def pause(self, namespace: str, names: Collection[str], jobs: Sequence[dict[str, Any]]) -> None:
        """Stop the pods of the Jobs named, keeping the Jobs: deactivate the Workload of those that ``jobs`` (as read)
        shows Kueue-managed (one LIST of Workloads for them all), suspend the others."""
        managed = {job["metadata"]["name"]: job for job in jobs if kueue_queue(job)}
        workloads = self.workloads(namespace) if managed.keys() & set(names) else {}
        for name in sorted(names):
            if name in managed:
                self.activate(namespace, workloads.get(managed[name]["metadata"]["uid"]), False)
            else:
                self.api.batch.patch_namespaced_job(name, namespace, {"spec": {"suspend": True}})
