"""The chart's read-only dashboard (`dashboard.enabled`), rendered by `helm template` (no cluster): off by default;
when on, its own ServiceAccount with read-only rights on HPScans and ConfigMaps only, a ClusterIP Service, a pod
as locked down as the operator's, and selectors the operator's objects never share. The installed dashboard is
tested on the control plane in tests/integration/kubernetes/test_chart_dashboard.py.

helm comes from the repository's tools (`make tools`, which `make test` runs first) or PATH.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "hpscan-operator"
HELM = REPO / ".tools" / "bin" / "helm"
READ_ONLY = [
    {"apiGroups": ["hpscan.io"], "resources": ["hpscans"], "verbs": ["get", "list"]},
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]},
]


def helm() -> str:
    found = str(HELM) if HELM.exists() else shutil.which("helm")
    if found is None:
        pytest.skip("no helm: `make tools` builds it into .tools/bin")
    return found


def render(*args: str, check: bool = True) -> list[dict[str, Any]] | subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [helm(), "template", "hpo", str(CHART), "--namespace", "hpscan-system", *args], capture_output=True, text=True
    )
    if not check:
        return result
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def dashboard_objects(docs: Any) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        if doc["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "dashboard":
            found.setdefault(doc["kind"], []).append(doc)
    return found


def test_the_dashboard_is_off_by_default():
    assert dashboard_objects(render()) == {}


def test_the_dashboard_reads_scans_and_their_configmaps_and_nothing_else():
    docs = render("--set", "dashboard.enabled=true")
    objects = dashboard_objects(docs)
    assert sorted(objects) == [
        "ClusterRole", "ClusterRoleBinding", "Deployment", "NetworkPolicy", "Service", "ServiceAccount",
    ]  # fmt: skip
    (role,) = objects["ClusterRole"]
    assert role["rules"] == READ_ONLY  # no Secrets, no write, no pods or logs
    (binding,) = objects["ClusterRoleBinding"]
    (account,) = objects["ServiceAccount"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "hpscan-system"}
    ]
    operator_accounts = [d for d in docs if d["kind"] == "ServiceAccount" and d not in objects["ServiceAccount"]]
    assert [a["metadata"]["name"] for a in operator_accounts] != [account["metadata"]["name"]]  # not the operator's

    (deployment,) = objects["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    (container,) = pod["containers"]
    assert container["command"] == ["hpscan", "dashboard-server"]
    assert container["args"] == ["--address=0.0.0.0", "--port=8081"]  # every namespace
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-dashboard"}
    assert {v["name"]: "emptyDir" in v for v in pod["volumes"]} == {"tmp": True}

    (service,) = objects["Service"]
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "http-dashboard", "port": 8081, "targetPort": "http-dashboard", "protocol": "TCP"}
    ]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    # the operator's Deployment, Service and NetworkPolicy never select the dashboard's pods, nor its the operator's
    (operator,) = [d for d in docs if d["kind"] == "Deployment" and d is not deployment]
    for selector in (
        operator["spec"]["selector"]["matchLabels"],
        *(d["spec"]["selector"] for d in docs if d["kind"] == "Service" and d is not service),
        *(d["spec"]["podSelector"]["matchLabels"] for d in docs if d["kind"] == "NetworkPolicy"),
    ):
        matches = selector.items() <= pod_labels.items()
        assert matches == (selector == service["spec"]["selector"])
    assert not service["spec"]["selector"].items() <= operator["spec"]["template"]["metadata"]["labels"].items()

    (policy,) = objects["NetworkPolicy"]
    assert policy["spec"]["ingress"] == [{"ports": [{"port": "http-dashboard", "protocol": "TCP"}]}]
    assert [sorted(p["port"] for p in rule["ports"]) for rule in policy["spec"]["egress"]] == [[53, 53], [443, 6443]]


def test_watched_namespaces_get_read_only_roles_and_the_page_shows_only_them():
    docs = render(
        "--set", "dashboard.enabled=true", "--set-json", 'watchNamespaces=["team-a","team-b"]',
        "--set-json", 'dashboard.allowedHosts=["k8s.example.org"]', "--set", "dashboard.port=9000",
        "--set", "networkPolicy.enabled=false",
    )  # fmt: skip
    objects = dashboard_objects(docs)
    assert sorted(objects) == ["Deployment", "Role", "RoleBinding", "Service", "ServiceAccount"]
    assert sorted(r["metadata"]["namespace"] for r in objects["Role"]) == ["team-a", "team-b"]
    assert all(r["rules"] == READ_ONLY for r in objects["Role"])
    (deployment,) = objects["Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"] == [
        "--address=0.0.0.0", "--port=9000", "--namespace=team-a", "--namespace=team-b", "--allow-host=k8s.example.org",
    ]  # fmt: skip
    assert container["ports"] == [{"name": "http-dashboard", "containerPort": 9000, "protocol": "TCP"}]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--set", "dashboard.port=0"], "/dashboard/port"),
        (["--set", "dashboard.enable=true"], "additional properties 'enable' not allowed"),
        (["--set-json", 'dashboard.allowedHosts=["https://k8s"]'], "/dashboard/allowedHosts/0"),
    ],
)
def test_the_schema_refuses_wrong_dashboard_values(arguments, message):
    result = render(*arguments, check=False)
    assert isinstance(result, subprocess.CompletedProcess) and result.returncode != 0
    assert message in result.stderr, result.stderr


def test_the_notes_say_how_to_reach_the_page():
    result = subprocess.run(
        [helm(), "install", "hpo", str(CHART), "-n", "hpscan-system", "--dry-run=client", "--set", "dashboard.enabled=true"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "port-forward svc/hpo-hpscan-operator-dashboard 8081:8081" in result.stdout
    assert "http://localhost:8081/" in result.stdout
