"""GPU quotas managed by Kueue: the real Kueue controller manager (cluster/kueue, built from sigs.k8s.io/kueue) and
the operator on the local control plane. A ClusterQueue holds quota for one GPU; a scan of four GPU shards on a site
with that queue runs them one at a time, a waiting shard shows Pending/Queued in Kueue's words, suspending the scan
gives the quota back and resuming completes it (docs/kueue.md)."""

from __future__ import annotations

import secrets
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from cluster.kueue import Kueue  # the harness (conftest.py puts the repository on sys.path)
from hpscan.api.spec import GROUP, PLURAL, VERSION
from support.operator_support import (
    Operator,
    create,
    custom,
    get,
    operator_watching,
    scan_manifest,
    wait_phase,
    watched_namespace,
)

PREFIX = f"hpskq-{secrets.token_hex(2)}"
KUEUE = ("kueue.x-k8s.io", "v1beta2")
QUEUE = "gpu-queue"


@pytest.fixture(scope="module")
def kueue(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kueue]:
    running = Kueue.start(cluster, tmp_path_factory.mktemp("kueue"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def operator(cluster: Any, kueue: Kueue, crd: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    yield from operator_watching(cluster, tmp_path_factory.mktemp("operator") / "operator.log", PREFIX)


@pytest.fixture
def ns(k8s: client.ApiClient, cluster: Any, kueue: Kueue) -> Iterator[str]:
    """A watched namespace with a LocalQueue onto a ClusterQueue of one GPU (plenty of CPU and memory)."""
    api = client.CustomObjectsApi(k8s)
    flavor = {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor", "metadata": {"name": f"{PREFIX}-f"}}
    quota = [("cpu", "64"), ("memory", "256Gi"), ("ephemeral-storage", "200Gi"), ("nvidia.com/gpu", "1")]
    queue = {
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "kind": "ClusterQueue",
        "metadata": {"name": f"{PREFIX}-gpu"},
        "spec": {
            "namespaceSelector": {},
            "resourceGroups": [
                {
                    "coveredResources": [name for name, _ in quota],
                    "flavors": [
                        {"name": f"{PREFIX}-f", "resources": [{"name": n, "nominalQuota": q} for n, q in quota]}
                    ],
                }
            ],
        },
    }
    api.create_cluster_custom_object(*KUEUE, "resourceflavors", flavor)
    api.create_cluster_custom_object(*KUEUE, "clusterqueues", queue)
    for name in watched_namespace(k8s, cluster, PREFIX):
        local = {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue", "metadata": {"name": QUEUE},
                 "spec": {"clusterQueue": f"{PREFIX}-gpu"}}  # fmt: skip
        api.create_namespaced_custom_object(*KUEUE, name, "localqueues", local)
        yield name
    api.delete_cluster_custom_object(*KUEUE, "clusterqueues", f"{PREFIX}-gpu")
    api.delete_cluster_custom_object(*KUEUE, "resourceflavors", f"{PREFIX}-f")


class QuotaWatch:
    """Samples, every 0.2 s until stopped, which of the namespace's Workloads hold quota (QuotaReserved=True, not
    Finished) and
    which shard pods run: the most at once of each."""

    def __init__(self, k8s: client.ApiClient, ns: str) -> None:
        self.api, self.core, self.ns = client.CustomObjectsApi(k8s), client.CoreV1Api(k8s), ns
        self.most_reserved: list[str] = []
        self.most_running: list[str] = []
        self.reserved_ever: Counter[str] = Counter()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.done.wait(0.2):
            workloads = self.api.list_namespaced_custom_object(*KUEUE, self.ns, "workloads")["items"]
            reserved = [  # a finished Workload keeps QuotaReserved=True, but its quota is back
                w["metadata"]["name"]
                for w in workloads
                if _condition(w, "QuotaReserved") == "True" and _condition(w, "Finished") != "True"
            ]
            pods = self.core.list_namespaced_pod(self.ns, label_selector="hpscan.io/role").items
            running = [p.metadata.name for p in pods if p.status.phase == "Running"]
            self.reserved_ever.update(reserved)
            self.most_reserved = max(self.most_reserved, reserved, key=len)
            self.most_running = max(self.most_running, running, key=len)

    def __enter__(self) -> QuotaWatch:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.done.set()
        self.thread.join()


def _condition(body: dict, kind: str) -> str | None:
    found = [c for c in (body.get("status") or {}).get("conditions") or [] if c["type"] == kind]
    return found[0]["status"] if found else None


def kueue_scan(name: str, knobs: dict) -> dict:
    body = scan_manifest(name, knobs)
    body["spec"]["sites"][0]["kubernetes"]["queueName"] = QUEUE
    return body


def test_four_gpu_shards_share_one_gpu_of_quota_one_at_a_time_and_suspend_gives_it_back(
    cluster: Any, k8s: client.ApiClient, ns: str, operator: Operator, pod_visible_dir: Path
) -> None:
    log = pod_visible_dir / "trained.log"
    api = client.CustomObjectsApi(k8s)
    with QuotaWatch(k8s, ns) as watch:
        create(k8s, ns, kueue_scan("quota", {"sleep": 1.5, "trainedLog": str(log)}))

        def queued() -> list[dict] | None:
            shards = (get(k8s, ns, "quota").get("status") or {}).get("shards") or []
            waiting = [
                s for s in shards if s.get("reason") == "Queued" and "nvidia.com/gpu" in (s.get("message") or "")
            ]
            return waiting or None

        waiting = cluster.wait(queued, 120, "a shard Pending/Queued in Kueue's words")
        assert all(s["phase"] == "Pending" for s in waiting)
        assert f"Kueue queue {QUEUE}: " in waiting[0]["message"] and "quota" in waiting[0]["message"]
        jobs = client.BatchV1Api(k8s).list_namespaced_job(ns, label_selector="hpscan.io/role=shard").items
        assert len(jobs) == 4 and all(j.metadata.labels["kueue.x-k8s.io/queue-name"] == QUEUE for j in jobs)
        cluster.wait(lambda: log.exists() and len(log.read_text().split()) >= 1, 120, "a combination trained")

        # Suspending the scan deactivates its Workloads: Kueue evicts them, suspends the Jobs, frees the quota.
        custom(k8s).patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "quota", {"spec": {"suspend": True}})
        wait_phase(cluster, k8s, ns, "quota", {"Suspended"}, 60)

        def released() -> dict | None:
            status = api.get_cluster_custom_object_status(*KUEUE, "clusterqueues", f"{PREFIX}-gpu").get("status") or {}
            held = (status.get("reservingWorkloads") or 0) + (status.get("admittedWorkloads") or 0)
            return status if held == 0 else None

        status = cluster.wait(released, 60, "the ClusterQueue holding no workload")
        usage = [
            r for f in status.get("flavorsReservation") or [] for r in f["resources"] if r["name"] == "nvidia.com/gpu"
        ]
        assert all(r["total"] in ("0", 0) for r in usage), usage
        workloads = api.list_namespaced_custom_object(*KUEUE, ns, "workloads")["items"]
        unfinished = [w for w in workloads if _condition(w, "Finished") != "True"]
        assert unfinished and all(w["spec"].get("active") is False for w in unfinished)
        shards = get(k8s, ns, "quota")["status"]["shards"]
        assert {s["phase"] for s in shards} <= {"Suspended", "Succeeded"}, shards

        custom(k8s).patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "quota", {"spec": {"suspend": False}})
        done = wait_phase(cluster, k8s, ns, "quota", {"Succeeded", "Failed"}, 240)["status"]
    assert done["phase"] == "Succeeded" and done["progress"] == "8/8", done
    assert len(watch.most_reserved) == 1, f"Workloads holding quota at once: {watch.most_reserved}"
    assert len(watch.most_running) == 1, f"pods running at once: {watch.most_running}"
    shard_workloads = [name for name in watch.reserved_ever if "shard" in name]
    assert len(shard_workloads) >= 4, watch.reserved_ever  # every shard ran under Kueue's admission
