"""Kueue on a Kubernetes site, as pure functions: the Jobs hpscan makes for a site with a queueName, what a Job and
its Workload say about a shard, and brokering's view of a site whose quota is full (docs/kueue.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hpscan.api.sites import Site
from hpscan.api.spec import HPScanSpec
from hpscan.api.status import Reason, ShardPhase, ShardStatus, SiteState, SiteStatus
from hpscan.backends.base import ScanRef
from hpscan.backends.kubernetes.manifests import job_manifest, probe_manifest
from hpscan.backends.kubernetes.names import KUEUE_QUEUE_LABEL
from hpscan.backends.kubernetes.states import kueue_words, shard_state, workload_active, workloads_by_job
from hpscan.controller.defaults import OperatorDefaults
from hpscan.core.brokering import Target, broker

SCAN = ScanRef(name="scan", namespace="physics", uid="u-1")
NOW = datetime(2026, 1, 1, tzinfo=UTC)
NO_QUOTA = (
    "couldn't assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu in flavor default, "
    "1 more needed"
)


def spec() -> HPScanSpec:
    return HPScanSpec.model_validate(
        {
            "parameters": [{"name": "x", "values": [1, 2, 3, 4]}],
            "sharding": {"shards": 4},
            "gpu": {"count": 1, "required": True},
            "payload": {"image": "registry.example.org/p:1", "command": ["train"], "gpuCheck": ["check"]},
        }
    )


def site(name: str = "gpu", queue: str | None = "gpu-queue") -> Site:
    return Site.model_validate({"name": name, "kubernetes": {"queueName": queue} if queue else {}})


def kueue_job(suspend: bool = True, status: dict | None = None) -> dict[str, Any]:
    job = job_manifest(SCAN, spec(), 1, site())
    job["metadata"]["uid"] = "job-uid-1"
    job["spec"]["suspend"] = suspend
    job["status"] = status or {}
    return job


def workload(active: bool | None = None, conditions: list[dict] | None = None, owner: str = "job-uid-1") -> dict:
    body: dict[str, Any] = {
        "metadata": {"name": "job-scan-shard-001-abcde", "ownerReferences": [{"kind": "Job", "uid": owner}]},
        "spec": {"queueName": "gpu-queue"},
        "status": {"conditions": conditions or []},
    }
    if active is not None:
        body["spec"]["active"] = active
    return body


def test_a_site_with_a_queue_labels_its_shard_and_probe_jobs_and_creates_them_suspended():
    shard, probe = job_manifest(SCAN, spec(), 0, site()), probe_manifest(SCAN, spec(), site())
    for job in (shard, probe):
        assert job["metadata"]["labels"][KUEUE_QUEUE_LABEL] == "gpu-queue"
        assert job["spec"]["suspend"] is True  # Kueue unsuspends it once admitted
        assert KUEUE_QUEUE_LABEL not in job["spec"]["template"]["metadata"]["labels"]  # the Job's, not its pods'
        assert "managedBy" not in job["spec"]  # MultiKueue only
    plain = job_manifest(SCAN, spec(), 0, site(queue=None))
    assert KUEUE_QUEUE_LABEL not in plain["metadata"]["labels"] and "suspend" not in plain["spec"]


def test_the_charts_default_queue_reaches_the_default_site_and_an_empty_one_means_none():
    (default,) = OperatorDefaults.model_validate({"queueName": "team-a"}).default_sites()
    assert job_manifest(SCAN, spec(), 0, default)["metadata"]["labels"][KUEUE_QUEUE_LABEL] == "team-a"
    (none,) = OperatorDefaults.model_validate({"queueName": ""}).default_sites()
    assert KUEUE_QUEUE_LABEL not in job_manifest(SCAN, spec(), 0, none)["metadata"]["labels"]


def test_a_shard_waiting_for_quota_is_pending_queued_in_kueues_words_not_suspended_or_unschedulable():
    waiting = workload(
        conditions=[{"type": "QuotaReserved", "status": "False", "reason": "Pending", "message": NO_QUOTA}]
    )
    state = shard_state(kueue_job(), pods=[], workload=waiting)
    assert (state.phase, state.reason) == (ShardPhase.PENDING, Reason.QUEUED)
    assert state.message == f"Kueue queue gpu-queue: {NO_QUOTA}"
    before = shard_state(kueue_job(), workload=None)  # Kueue has not made its Workload yet
    assert (before.phase, before.reason) == (ShardPhase.PENDING, Reason.QUEUED)
    assert before.message == "waiting in Kueue queue gpu-queue (no Workload yet)"


def test_a_shard_whose_workload_hpscan_deactivated_is_suspended_and_an_admitted_one_runs():
    assert shard_state(kueue_job(), workload=workload(active=False)).phase == ShardPhase.SUSPENDED
    admitted = workload(conditions=[{"type": "Admitted", "status": "True", "message": "admitted"}])
    running = shard_state(kueue_job(suspend=False, status={"active": 1, "ready": 1}), workload=admitted)
    assert (running.phase, running.reason) == (ShardPhase.RUNNING, None)


def test_a_plain_suspended_job_stays_suspended_without_kueue():
    job = job_manifest(SCAN, spec(), 1, site(queue=None)) | {"spec": {"suspend": True}, "status": {}}
    assert shard_state(job).phase == ShardPhase.SUSPENDED


def test_kueues_words_prefer_the_quota_then_admission_then_eviction_message():
    job = kueue_job()
    admission = {"type": "Admitted", "status": "False", "message": "waiting for admission checks"}
    evicted = {"type": "Evicted", "status": "True", "message": "preempted by a higher priority workload"}
    assert kueue_words(job, workload(conditions=[admission, evicted])).endswith("waiting for admission checks")
    assert kueue_words(job, workload(conditions=[evicted])).endswith("preempted by a higher priority workload")
    assert kueue_words(job, workload()) == "waiting in Kueue queue gpu-queue for admission"


def test_workloads_are_found_by_their_jobs_uid_and_are_active_unless_set_false():
    found = workloads_by_job([workload(owner="a"), workload(owner="b") | {"metadata": {"ownerReferences": []}}])
    assert list(found) == ["a"]
    assert workload_active(workload()) and workload_active(workload(active=True)) and workload_active(None)
    assert not workload_active(workload(active=False))


def usable(*names: str) -> dict[str, SiteStatus]:
    return {n: SiteStatus(name=n, backend="kubernetes", state=SiteState.USABLE) for n in names}


def test_a_site_whose_quota_is_full_takes_no_more_shards_while_another_site_has_room():
    targets = [Target.of(site("kueue")), Target.of(site("other", queue=None))]
    queued = ShardStatus(index=0, site="kueue", phase=ShardPhase.PENDING, reason=Reason.QUEUED, message=NO_QUOTA)
    states = {0: queued, 1: ShardStatus(index=1, site="other", phase=ShardPhase.RUNNING)}
    decided = broker(4, states, targets, usable("kueue", "other"), parallelism=None, now=NOW)
    assert [(s.shard, s.site) for s in decided.starts] == [(2, "other"), (3, "other")]
    # Once admitted (Running), the site takes its share again.
    states[0] = queued.model_copy(update={"phase": ShardPhase.RUNNING, "reason": None})
    decided = broker(4, states, targets, usable("kueue", "other"), parallelism=None, now=NOW)
    assert [s.site for s in decided.starts] == ["kueue", "other"]
