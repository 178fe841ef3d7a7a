"""kstatus, the library behind Flux's health checks, Helm 4's --wait and the cli-utils appliers, on statuses a real
operator wrote on the local control plane (issue 27): a running scan is InProgress, a suspended one Current, a
succeeded one Current, a failed one and one the operator refuses to run Failed. The verdicts come from the real
library (cluster/kstatus: sigs.k8s.io/cli-utils, built from the Go module proxy, cached), and Flux's own evaluator
of the healthCheckExprs in docs/gitops.md agrees; the scans run the contract-honouring stand-in payload as in
test_operator.py. `helm install --wait` (Helm 4, whose default wait is kstatus's watcher) of a release that ships a
scan returns once the scan succeeded, and fails as soon as it failed.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from cluster import kstatus
from hpscan.api.spec import GROUP, PLURAL, VERSION
from support.operator_support import (
    create,
    get,
    scan_manifest,
    wait_phase,
)

PREFIX = f"hpsks-{secrets.token_hex(2)}"


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


def test_a_new_scan_is_in_progress_before_the_operator_wrote_its_status(cluster, k8s, ns, checker):
    """The CRD's status default: a scan no operator has seen (none watches this namespace) is not Current, else
    `helm install --wait` and Flux would pass it at once."""
    unwatched = f"hpsks-unseen-{secrets.token_hex(2)}"
    client.CoreV1Api(k8s).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=unwatched)))
    try:
        create(k8s, unwatched, scan_manifest("unseen", {}))
        unseen = get(k8s, unwatched, "unseen")
        # the schema's defaults: `kubectl get` shows it Pending with 0/0 done
        assert unseen["status"]["observedGeneration"] == 0 and unseen["status"]["phase"] == "Pending"
        assert "conditions" not in unseen["status"]
        assert kstatus.compute(unseen) == ("InProgress", "HPScan generation is 1, but latest observed generation is 0")
        assert flux(unseen) == "InProgress"
    finally:
        client.CoreV1Api(k8s).delete_namespace(unwatched)


def scan_chart(where: Path, scan: dict[str, Any]) -> Path:
    """A chart (apiVersion v2: Helm 3 installs it too) whose one template is the scan, as a GitOps repo ships it."""
    (where / "templates").mkdir(parents=True)
    (where / "Chart.yaml").write_text(yaml.safe_dump({"apiVersion": "v2", "name": "scans", "version": "0.1.0"}))
    (where / "templates" / "scan.yaml").write_text(yaml.safe_dump(scan))
    return where


def helm_install(cluster: Any, ns: str, chart: Path, timeout_s: int) -> tuple[subprocess.CompletedProcess[str], float]:
    """`helm install --wait` (kstatus's watcher in Helm 4) and how long it took."""
    started = time.monotonic()
    installed = subprocess.run(
        [str(cluster.tools_bin / "helm"), "install", chart.name, str(chart), "-n", ns, "--wait",
         "--timeout", f"{timeout_s}s"],
        env=cluster.env(), capture_output=True, text=True, timeout=timeout_s + 60,
    )  # fmt: skip
    return installed, time.monotonic() - started


def test_helm_install_wait_returns_once_the_shipped_scan_succeeded(cluster, k8s, ns, operator, checker, tmp_path):
    version = subprocess.run([str(cluster.tools_bin / "helm"), "version", "--short"], capture_output=True, text=True)
    assert version.stdout.startswith("v4."), version.stdout  # the tools build Helm 4 (cluster/versions.env)
    chart = scan_chart(tmp_path / "shipped", scan_manifest("shipped", {"sleep": 0.5}, parallelism=2))
    installed, _ = helm_install(cluster, ns, chart, 180)
    assert installed.returncode == 0, installed.stderr
    shipped = get(k8s, ns, "shipped")  # read at once: helm returned only when kstatus read the scan Current
    assert shipped["status"]["phase"] == "Succeeded", shipped["status"]
    assert shipped["status"]["progress"] == "8/8"


def test_helm_install_wait_fails_as_soon_as_the_shipped_scan_failed(cluster, k8s, ns, operator, checker, tmp_path):
    chart = scan_chart(tmp_path / "broken", scan_manifest("broken", {"exitCode": 3}, retries=2))
    installed, took = helm_install(cluster, ns, chart, 300)
    assert installed.returncode != 0
    stalled = conditions(get(k8s, ns, "broken"))["Stalled"]
    assert stalled["status"] == "True"
    assert "HPScan/" + ns + "/broken not ready. status: Failed" in installed.stderr, installed.stderr
    assert stalled["message"] in installed.stderr
    assert took < 240, f"helm waited {took:.0f} s: to its timeout, not to the failure"


def test_a_running_operator_is_alive_and_ready(cluster, operator):
    """What the chart's probes ask (controller/health.py), of a real operator process: alive, and ready because
    it started and the API server answers."""

    def answer(path: str) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{operator.health_port}{path}", timeout=5) as response:
                return json.loads(response.read())
        except OSError:
            return None  # not serving yet, or 503 while it starts

    assert cluster.wait(lambda: answer("/readyz"), 60, "the operator ready") == {"ok": True, "problem": None}
    assert answer("/livez") == {"ok": True, "problem": None}
