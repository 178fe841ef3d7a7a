"""The chart's read-only dashboard on the local control plane: installed with `dashboard.enabled`, reached through
its Service by the API server's service proxy (`kubectl proxy` in front, as a user would), in Debian's Chromium:
the index lists a scan of a watched namespace, its link opens the scan's page, and a status the operator patches
is on the page without a reload. Its ServiceAccount may read what the page needs and nothing more.

The dashboard's pod runs on the test node agent (a stand-in for a kubelet): `hpscan dashboard-server` as a local
process with the pod's projected ServiceAccount token, on the host's network. The API server proxies to no loopback
address, so the pod is annotated with the host's own address as its podIP (cluster/nodeagent.py,
POD_IP_ANNOTATION); the Service's Endpoints then hold it, as they hold a real pod's IP.
"""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from cluster.nodeagent import POD_IP_ANNOTATION
from hpscan.api.spec import GROUP, PLURAL, VERSION
from hpscan.backends.base import ScanRef
from hpscan.backends.kubernetes.manifests import pull_inbox
from hpscan.job.pages import PROGRESS_KEY
from support.dashboard_runs import FAILING_SITE, chromium
from support.operator_support import apply_crd, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "hpscan-operator"


def host_address() -> str:
    """This machine's own non-loopback IPv4 address (the one its default route leaves from; nothing is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError as error:
            pytest.fail(f"no non-loopback address to give the dashboard's pod: {error}", pytrace=False)
        address = probe.getsockname()[0]
    assert not address.startswith("127."), address
    return address


def wait_for(condition: Callable[[], Any], seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while not (result := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {seconds:g} s", pytrace=False)
        time.sleep(0.2)
    return result


def fetch(url: str, method: str = "GET") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")
    except OSError as error:  # the proxy not up yet
        return 0, str(error)


@pytest.fixture
def kubectl_proxy(cluster: Any) -> Iterator[str]:
    """`kubectl proxy` on a free 127.0.0.1 port with the admin kubeconfig: the user's way to the API server."""
    port = free_port()
    proxy = subprocess.Popen(
        [str(cluster.tools_bin / "kubectl"), "proxy", f"--port={port}", "--address=127.0.0.1"],
        env=cluster.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: fetch(f"http://127.0.0.1:{port}/readyz")[0] == 200, 30, "kubectl proxy")
        yield f"http://127.0.0.1:{port}"
    finally:
        proxy.terminate()
        proxy.wait(10)


@pytest.mark.slow
def test_the_charts_dashboard_lists_the_scans_and_shows_one_live_through_its_service(
    cluster: Any, k8s: Any, new_namespace: Callable[..., str], kubectl_proxy: str
):
    from selenium.webdriver.common.by import By

    release_ns, scans, elsewhere = new_namespace(), new_namespace(), new_namespace()
    release, port = f"hpo-{secrets.token_hex(3)}", free_port()  # pods share the host's network here
    apply_crd(cluster)
    objects = client.CustomObjectsApi(k8s)
    scan = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    name = scan["metadata"]["name"]
    for namespace in (scans, elsewhere):  # one it may show, one it may not
        objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, scan)

    def patch_status(message: str) -> None:
        sites = [{"name": "gpu-cluster", "backend": "kubernetes", "state": "Excluded", "reason": "GPUUnavailable",
                  "message": message}]  # fmt: skip
        body = {"status": {"phase": "Running", "message": message, "progress": "0/24", "sites": sites}}
        objects.patch_namespaced_custom_object_status(GROUP, VERSION, scans, PLURAL, name, body)

    patch_status(FAILING_SITE)
    helm = [str(cluster.tools_bin / "helm")]
    subprocess.run(
        [*helm, "install", release, str(CHART), "-n", release_ns, "--skip-crds", "--wait", "--timeout", "120s",
         "--set", "replicaCount=0", "--set-json", f"watchNamespaces={json.dumps([scans])}",
         "--set", "dashboard.enabled=true", "--set", f"dashboard.port={port}",
         "--set-json", f"podAnnotations={json.dumps({POD_IP_ANNOTATION: host_address()})}"],
        env=cluster.env(), check=True, capture_output=True, text=True,
    )  # fmt: skip
    browser = chromium()
    try:
        # what its ServiceAccount may do, asked of the API server's authorizer
        account = f"system:serviceaccount:{release_ns}:{release}-hpscan-operator-dashboard"

        def can(verb: str, resource: str, namespace: str = scans) -> bool:
            asked = cluster.kubectl("auth", "can-i", verb, resource, "-n", namespace, "--as", account, check=False)
            return asked.stdout.strip() == "yes"

        assert all(can(v, r) for v, r in [("get", "hpscans.hpscan.io"), ("list", "hpscans.hpscan.io"),
                                           ("list", "configmaps")])  # fmt: skip
        for verb, resource in [
            ("get", "secrets"), ("list", "secrets"), ("patch", "hpscans.hpscan.io"), ("patch", "hpscans.hpscan.io/status"),
            ("delete", "hpscans.hpscan.io"), ("create", "hpscans.hpscan.io"), ("get", "configmaps"),
            ("patch", "configmaps"), ("list", "pods"), ("get", "pods/log"), ("patch", "jobs.batch"),
        ]:  # fmt: skip
            assert not can(verb, resource), f"the dashboard may {verb} {resource}"
        assert not can("list", "hpscans.hpscan.io", elsewhere)

        # through the Service, by the API server's proxy: the index lists the watched namespace's scan only
        service = f"{release}-hpscan-operator-dashboard"
        index = f"{kubectl_proxy}/api/v1/namespaces/{release_ns}/services/http:{service}:{port}/proxy/"
        wait_for(lambda: fetch(index)[0] == 200, 60, "the index through the Service")
        assert fetch(index, method="POST")[0] == 501  # GET only: nothing can change a scan
        browser.get(index)
        rows = browser.find_elements(By.CSS_SELECTOR, "#scans tbody tr")
        assert [row.text.split()[:3] for row in rows] == [[scans, name, "Running"]]

        # its link opens the scan's page, live: a patched status shows without a reload
        browser.find_element(By.LINK_TEXT, name).click()
        assert browser.current_url == f"{index}scans/{scans}/{name}/"
        sites = lambda: browser.find_element(By.ID, "sites").text  # noqa: E731
        wait_for(lambda: FAILING_SITE in sites(), 60, "the site's reason on the scan's page")
        assert browser.find_element(By.ID, "progress").text == "0/24"
        updates = browser.execute_script("return window.hpscanDashboard.updates")
        patch_status("probe: CUDA driver 470 too old")
        wait_for(lambda: "CUDA driver 470" in sites(), 10, "the patched status, live")
        assert browser.execute_script("return window.hpscanDashboard.updates") > updates  # pushed, not reloaded
        origins = browser.execute_script("return performance.getEntriesByType('resource').map((r) => r.name)")
        assert all(url.startswith(index) for url in origins), origins  # all of it through the proxy, nothing else
        assert fetch(f"{index}scans/{elsewhere}/{name}/state.json")[0] == 404  # a namespace it does not watch

        # a trial's per-epoch curve comes from its worker's inbox (the ConfigMap the operator made, the reports the
        # pod wrote), read with the dashboard's own rights
        uid = objects.get_namespaced_custom_object(GROUP, VERSION, scans, PLURAL, name)["metadata"]["uid"]
        inbox = pull_inbox(ScanRef(name=name, namespace=scans, uid=uid), 0, page_size=10)
        epochs = [{"id": "c7-trial", "epoch": e, "metrics": {"val_loss": 1.0 / e}} for e in (1, 2, 3)]
        inbox["data"][PROGRESS_KEY] = "".join(json.dumps(e) + "\n" for e in epochs)
        client.CoreV1Api(k8s).create_namespaced_config_map(scans, inbox)
        status, body = fetch(f"{index}scans/{scans}/{name}/curve.json?id=c7-trial")
        assert status == 200 and json.loads(body)["epochs"] == [1, 2, 3], body
        assert json.loads(body)["metrics"] == {"val_loss": [1.0, 0.5, 1 / 3]}
    finally:
        browser.quit()
        subprocess.run([*helm, "uninstall", release, "-n", release_ns, "--wait", "--timeout", "60s"],
                       env=cluster.env(), check=False, capture_output=True)  # fmt: skip
