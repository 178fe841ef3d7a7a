"""kstatus, the library behind Flux's health checks, Helm 4's --wait and the cli-utils appliers, on statuses a real
operator wrote on the local control plane (issue 27): a running scan is InProgress, a suspended one Current, a
succeeded one Current, a failed one and one the operator refuses to run Failed. The verdicts come from the real
library (cluster/kstatus: sigs.k8s.io/cli-utils, built from the Go module proxy, cached), and Flux's own evaluator
of the healthCheckExprs in docs/gitops.md agrees; the scans run the contract-honouring stand-in payload as in
test_operator.py.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from operator_support import (
    Operator,
    apply_crd,
    create,
    get,
    operator_watching,
    scan_manifest,
    wait_phase,
    watched_namespace,
)

from cluster import kstatus
from hpscan.api.spec import GROUP, PLURAL, VERSION

PREFIX = f"hpsks-{secrets.token_hex(2)}"


@pytest.fixture(scope="module")
def crd(cluster: Any) -> None:
    apply_crd(cluster)


@pytest.fixture(scope="module")
def operator(cluster: Any, crd: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    yield from operator_watching(cluster, tmp_path_factory.mktemp("operator") / "operator.log", PREFIX)


@pytest.fixture
def ns(k8s: client.ApiClient, cluster: Any) -> Iterator[str]:
    yield from watched_namespace(k8s, cluster, PREFIX)


@pytest.fixture(scope="module")
def checker() -> None:
    """The checkers, built (or linked from the cache) before the first scan starts: a cold build takes minutes,
    which must not count against a scan's wait."""
    kstatus.checker("kstatus")
    kstatus.checker("flux-health")


def flux(body: dict[str, Any]) -> str:
    """What Flux makes of the scan with the healthCheckExprs of docs/gitops.md."""
    return kstatus.flux_health(body, kstatus.documented_flux_expressions())[0]


def conditions(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in body["status"]["conditions"]}


def assert_decided_from_this_generation(body: dict[str, Any]) -> None:
    """The API server kept each condition's observedGeneration (the schema has it), and the operator wrote it."""
    generation = body["metadata"]["generation"]
    assert body["status"]["observedGeneration"] == generation
    assert {c.get("observedGeneration") for c in body["status"]["conditions"]} == {generation}, body["status"]


def test_a_running_scan_is_in_progress_then_current_once_it_succeeded(cluster, k8s, ns, operator, checker):
    create(k8s, ns, scan_manifest("long", {"sleep": 2.0}, parallelism=1))
    running = wait_phase(cluster, k8s, ns, "long", {"Running", "Succeeded", "Failed"}, 90)
    assert running["status"]["phase"] == "Running", running["status"]  # 8 combinations of 2 s, one shard at a time
    verdict, message = kstatus.compute(running)
    assert verdict == "InProgress" == flux(running)
    assert message.startswith(f"{running['status']['progress']} recorded; "), message
    assert conditions(running)["Ready"]["status"] == "False"
    assert_decided_from_this_generation(running)

    done = wait_phase(cluster, k8s, ns, "long", {"Succeeded", "Failed"}, 240)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert kstatus.compute(done) == ("Current", "Resource is Ready")
    assert flux(done) == "Current"
    assert_decided_from_this_generation(done)
    cluster.kubectl("wait", "--for=condition=Ready", "hpscan/long", "-n", ns, "--timeout=10s")
    cluster.kubectl("wait", "--for=condition=Complete", "hpscan/long", "-n", ns, "--timeout=10s")  # still there


def test_a_suspended_scan_is_current(cluster, k8s, ns, operator, checker):
    create(k8s, ns, scan_manifest("paused", {}, suspend=True))
    paused = wait_phase(cluster, k8s, ns, "paused", {"Suspended"}, 60)
    assert kstatus.compute(paused) == ("Current", "Resource is current")
    assert flux(paused) == "Current"
    assert {k: c["status"] for k, c in conditions(paused).items() if k in {"Reconciling", "Stalled", "Ready"}} == {
        "Reconciling": "False",
        "Stalled": "False",
    }
    assert_decided_from_this_generation(paused)


def test_a_failed_scan_is_failed_with_the_reason(cluster, k8s, ns, operator, checker):
    create(k8s, ns, scan_manifest("nogpu", {"exitCode": 3}, retries=3))  # the payload finds no usable GPU
    failed = wait_phase(cluster, k8s, ns, "nogpu", {"Failed"}, 180)
    stalled = conditions(failed)["Stalled"]
    assert stalled["status"] == "True" and stalled["reason"] == conditions(failed)["Failed"]["reason"]
    assert kstatus.compute(failed) == ("Failed", stalled["message"])
    assert flux(failed) == "Failed"
    assert stalled["message"], failed["status"]
    assert_decided_from_this_generation(failed)
    cluster.kubectl("wait", "--for=condition=Stalled", "hpscan/nogpu", "-n", ns, "--timeout=10s")


def test_a_scan_the_operator_refuses_to_run_is_failed(cluster, k8s, ns, operator, checker):
    site = {"name": "borrowed", "kubernetes": {"serviceAccountName": "default"}}  # not the site admin's to grant
    create(k8s, ns, scan_manifest("borrow", {}, sites=[site]))
    refused = wait_phase(cluster, k8s, ns, "borrow", {"Failed"}, 60)
    verdict, message = kstatus.compute(refused)
    assert verdict == "Failed" == flux(refused) and "serviceAccountName 'default'" in message
    assert conditions(refused)["Stalled"]["reason"] == "NotAllowed"
    assert_decided_from_this_generation(refused)


def test_a_spec_change_reads_in_progress_until_the_operator_has_seen_it(cluster, k8s, ns, operator, checker):
    """kstatus's first rule, on the generations the API server keeps: an edit of a scan's spec makes it InProgress
    until the operator has written a status for the new generation. The operator is stopped meanwhile, so the
    verdict cannot race its next reconcile; a suspended scan, so that nothing runs while it is away."""
    create(k8s, ns, scan_manifest("edited", {}, suspend=True))
    wait_phase(cluster, k8s, ns, "edited", {"Suspended"}, 60)
    operator.stop()
    try:
        client.CustomObjectsApi(k8s).patch_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, "edited", {"spec": {"parallelism": 3}}
        )
        edited = get(k8s, ns, "edited")
        assert edited["metadata"]["generation"] == 2
        assert kstatus.compute(edited) == ("InProgress", "HPScan generation is 2, but latest observed generation is 1")
        assert flux(edited) == "InProgress"
    finally:
        operator.start()

    def seen() -> dict[str, Any] | None:
        body = get(k8s, ns, "edited")
        return body if body["status"].get("observedGeneration") == 2 else None

    assert kstatus.compute(cluster.wait(seen, 60, "the operator to see generation 2")) == (
        "Current",
        "Resource is current",
    )
