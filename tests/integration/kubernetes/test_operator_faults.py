"""The operator and its shard pods on the real control plane, through a fault-injecting proxy (cluster/faultproxy.py).

Both talk to the API server only through the proxy: the operator through a kubeconfig that names it, the pods (on
the test node agent, with the real `hpscan shard-run` and its ConfigMap channel) through their in-cluster
configuration, whose port the scan's payload environment points at the proxy. The proxy answers 500/503, holds
requests and cuts them (before or after they took effect), cuts watch streams mid-way, or delivers one resource's
watch events late. Each scan must still end Succeeded with every trial or combination recorded exactly once.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from cluster.faultproxy import ERRORS, TIMEOUT_AFTER, TIMEOUT_BEFORE, WATCH_CUT, FaultPlan, FaultProxy, describe
from hpscan.job.pages import records_of
from support.operator_support import Operator, create, handed_trials, scan_manifest, wait_phase, watched_namespace

PREFIX = f"hpsflt-{secrets.token_hex(2)}"


def api_port(cluster: Any) -> int:
    """The real API server's port, from the admin kubeconfig."""
    config = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    return int(config["clusters"][0]["cluster"]["server"].rsplit(":", 1)[1])


class Proxied:
    """A fault proxy and an operator that talks to the API server through it, in one test's namespace."""

    def __init__(self, cluster: Any, folder: Path, plan: FaultPlan) -> None:
        pki = Path(cluster.kubeconfig).parent / "pki"
        self.proxy = FaultProxy(api_port(cluster), pki, folder / "proxy", plan).start()
        self.operator = Operator(
            cluster, folder / "operator.log", f"{PREFIX}-*", self.proxy.kubeconfig(folder / "kubeconfig")
        )
        self.operator.start()

    def pod_env(self) -> list[dict[str, str]]:
        """The payload environment that sends a shard pod's in-cluster client through the proxy."""
        port = str(self.proxy.port)
        return [
            {"name": "KUBERNETES_SERVICE_PORT", "value": port},
            {"name": "KUBERNETES_SERVICE_PORT_HTTPS", "value": port},
            {"name": "KUBERNETES_PORT", "value": f"tcp://127.0.0.1:{port}"},
        ]

    def stop(self) -> None:
        self.operator.stop()
        self.proxy.stop()


@pytest.fixture
def proxied(cluster: Any, crd: None, tmp_path: Path) -> Iterator[Any]:
    """A factory: proxied(plan) -> Proxied, stopped after the test (its namespace goes first, see ``ns``)."""
    started: list[Proxied] = []

    def make(plan: FaultPlan) -> Proxied:
        started.append(Proxied(cluster, tmp_path, plan))
        return started[-1]

    yield make
    for running in started:
        print(f"fault proxy: {describe(running.proxy)}")
        print("\n".join(running.proxy.log[-40:]))
        running.stop()


@pytest.fixture
def ns(k8s: client.ApiClient, cluster: Any, proxied: Any) -> Iterator[str]:
    """A namespace the operator watches (restricted Pod Security). Its scans are deleted while the operator runs."""
    yield from watched_namespace(k8s, cluster, PREFIX)


def trained(log: Path) -> Counter:
    return Counter(log.read_text().split()) if log.exists() else Counter()


def recorded(k8s: client.ApiClient, ns: str, scan: str) -> Counter:
    """How often each combination id is recorded across the scan's record pages (read past any proxy)."""
    pages = client.CoreV1Api(k8s).list_namespaced_config_map(ns, label_selector=f"hpscan.io/scan={scan}").items
    return Counter(record.id for page in pages for record in records_of(page.data)[0])


def test_tpe_with_asha_through_api_faults_records_every_trial_once(cluster, k8s, ns, proxied, pod_visible_dir):
    """The operator and its pulling workers' pods reach the API server through a proxy that answers 500/503,
    holds and cuts requests (some after they took effect) and cuts watch streams: the TPE + ASHA scan still spends
    its budget exactly, each trial handed out, trained and recorded once."""
    started = time.monotonic()
    plan = FaultPlan(
        seed=22, error_rate=0.06, timeout_rate=0.03, watch_cut_rate=0.91,  # every watch not failed is cut (6 at most)
        max_errors=30, max_timeouts=8, max_watch_cuts=6, hold_seconds=2.0, watch_cut_after=8.0, start_after=3.0,
        fail_first=r"^GET /api/v1/namespaces/[^/]+/configmaps/faulty-shard-\d+-p0 ",  # each pod's first read
    )  # fmt: skip
    run = proxied(plan)
    log = pod_visible_dir / "trained.log"
    body = scan_manifest(
        "faulty",
        {"sleep": 1.2, "epochs": 4, "trainedLog": str(log)},
        parameters=[{"name": "x", "values": list(range(1, 13))}, {"name": "act", "values": ["relu", "elu"]}],
        sampling={"strategy": "tpe", "samples": 12, "seed": 1, "trialsPerWorker": 1},
        earlyStopping={"strategy": "asha", "minEpochs": 1, "reductionFactor": 2},
        sharding={"shards": 3},
    )
    body["spec"]["payload"]["env"] = run.pod_env()
    create(k8s, ns, body)
    status = wait_phase(cluster, k8s, ns, "faulty", {"Succeeded", "Failed"}, 240)["status"]
    print(f"TPE + ASHA through faults: {time.monotonic() - started:.1f} s")
    assert status["phase"] == "Succeeded", status["message"]
    counts = status["combinations"]
    assert counts["suggested"] == counts["total"] == 12 and counts["succeeded"] + counts["pruned"] == 12
    assert len(trained(log)) == 12 and max(trained(log).values()) == 1  # the budget exactly, each trial once
    assert len(recorded(k8s, ns, "faulty")) == 12 and max(recorded(k8s, ns, "faulty").values()) == 1
    handed = handed_trials(k8s, ns, "faulty")
    assert len(handed) == 12 and max(handed.values()) == 1
    jobs = client.BatchV1Api(k8s).list_namespaced_job(ns, label_selector="hpscan.io/scan=faulty,hpscan.io/role=shard")
    failed = {job.metadata.name: job.status.failed for job in jobs.items if job.status.failed}
    assert not failed, f"attempts spent on transient API errors: {failed}"
    injected = run.proxy.injected
    assert injected[ERRORS] > 0 and injected[TIMEOUT_BEFORE] + injected[TIMEOUT_AFTER] > 0 and injected[WATCH_CUT] > 0
    assert injected["500"] > 0 and injected["503"] > 0


def test_a_job_complete_before_its_last_page_reaches_the_cache_loses_no_record(cluster, k8s, ns, proxied):
    """The operator's ConfigMap watch lags its Job watch by seconds (the proxy delays the record pages' events): a
    shard's Job is seen Complete before its last record patch reaches the cache. The scan still ends Succeeded with
    every combination recorded once (the operator reads a Complete Job's pages directly when its cache lacks
    records), not RecordsMissing and Failed."""
    started = time.monotonic()
    run = proxied(FaultPlan(seed=4, lag={"configmaps": 6.0}))
    body = scan_manifest("lagging", {"sleep": 0.2}, parallelism=4, gpu={"count": 1, "required": False})
    body["spec"]["payload"]["env"] = run.pod_env()
    create(k8s, ns, body)
    status = wait_phase(cluster, k8s, ns, "lagging", {"Succeeded", "Failed"}, 120)["status"]
    print(f"Complete before the last page: {time.monotonic() - started:.1f} s")
    assert status["phase"] == "Succeeded", status
    assert status["progress"] == "8/8" and status["combinations"]["succeeded"] == 8
    assert len(recorded(k8s, ns, "lagging")) == 8 and max(recorded(k8s, ns, "lagging").values()) == 1
    assert run.proxy.injected["lagged"] > 0


def test_a_namespace_deleted_while_its_listing_is_held_does_not_stall_the_operator(cluster, k8s, ns, proxied):
    """A namespace the operator watches is deleted while the API server still holds the operator's first listing of
    its Jobs (a loaded API server; the proxy holds that list). kopf waits for every indexed listing before it calls
    any handler, and kept waiting for the cancelled one for good (hpscan/controller/kopf_fixes.py): every scan in
    every namespace stayed Pending with no status, the operator alive and silent (ci-12). A scan in another
    namespace must still run to Succeeded."""
    doomed = f"{PREFIX}-gone{secrets.token_hex(2)}"
    run = proxied(FaultPlan(slow=rf"^GET /apis/batch/v1/namespaces/{doomed}/jobs[? ]", slow_seconds=240.0))
    core = client.CoreV1Api(k8s)
    core.create_namespace({"metadata": {"name": doomed}})
    cluster.wait(lambda: run.proxy.injected["slow"] >= 1, 60, f"the operator listing the Jobs of {doomed}")
    core.delete_namespace(doomed)

    def gone() -> bool:
        try:
            core.read_namespace(doomed)
        except client.ApiException as error:
            return error.status == 404
        return False

    cluster.wait(gone, 120, f"namespace {doomed} deleted")
    create(k8s, ns, scan_manifest("after", {"sleep": 0.1}, gpu={"count": 1, "required": False}))
    status = wait_phase(cluster, k8s, ns, "after", {"Succeeded", "Failed"}, 150)["status"]
    assert status["phase"] == "Succeeded", status
    assert run.proxy.injected["slow"] == 1  # the held listing was never answered before the namespace went
