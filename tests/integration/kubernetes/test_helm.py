"""The Helm chart on the local control plane: `helm lint --strict`, the schema refusing wrong values, the rendered
manifests (default values and the site value files in charts/hpscan-operator/ci/) accepted by the API server's
server-side dry run, and an installed operator running a scan with the chart's ServiceAccount credentials.

The installed operator's pod runs on the test node agent (a stand-in for a kubelet): `hpscan operator` as a local
process with the pod's projected ServiceAccount token, so it authenticates exactly as in a real pod, and every
request it makes is checked against the chart's RBAC. It watches only this test's namespace; the admin operator of
test_operator.py watches only its own `hpsop-*` namespaces, so the two never handle the same scan.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import tarfile
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from hpscan.api.spec import GROUP, PLURAL, VERSION
from support.operator_support import create, free_port, get, scan_manifest, wait_phase

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "hpscan-operator"
SITE_VALUES = sorted((CHART / "ci").glob("*.yaml"))
SERVED_ELSEWHERE = {"ServiceMonitor"}  # prometheus-operator's CRD is not installed on the local control plane

# What the operator needs (README.md of the chart says why each is there).
RULES = [
    {"apiGroups": ["hpscan.io"], "resources": ["hpscans"], "verbs": ["list", "watch", "patch"]},
    {"apiGroups": ["hpscan.io"], "resources": ["hpscans/status"], "verbs": ["patch"]},
    {"apiGroups": ["hpscan.io"], "resources": ["hpscans/finalizers"], "verbs": ["update"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["list", "watch", "create", "patch"]},
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch", "create", "patch"]},
    {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["create"]},
    {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    {"apiGroups": ["kueue.x-k8s.io"], "resources": ["workloads"], "verbs": ["list", "patch"]},  # docs/kueue.md
]


@pytest.fixture(scope="module")
def helm(cluster: Any) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(cluster.tools_bin / "helm"), *map(str, args)], env=cluster.env(), capture_output=True, text=True
        )
        if check and result.returncode != 0:
            pytest.fail(f"helm {' '.join(map(str, args))} failed ({result.returncode}):\n{result.stderr}")
        return result

    return run


def render(helm: Callable[..., Any], *args: str | Path, namespace: str = "hpscan-system") -> list[dict[str, Any]]:
    out = helm("template", "hpo", CHART, "--namespace", namespace, *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def values_args(values: Path | None) -> list[str | Path]:
    return ["-f", values] if values is not None else []


# --- static: lint, schema, what is rendered ---


@pytest.mark.parametrize("values", [None, *SITE_VALUES], ids=lambda v: v.stem if v else "defaults")
def test_helm_lint_strict_is_clean(helm, values):
    result = helm("lint", "--strict", CHART, *values_args(values))
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


def test_helm_package_carries_the_repository_crd(helm, tmp_path):
    helm("package", CHART, "--destination", tmp_path)
    (archive,) = tmp_path.glob("hpscan-operator-*.tgz")
    with tarfile.open(archive) as packaged:
        crd = packaged.extractfile("hpscan-operator/crds/hpscan.io_hpscans.yaml")
        assert crd is not None and crd.read() == (REPO / "crds" / "hpscan.io_hpscans.yaml").read_bytes()
        assert "hpscan-operator/values.schema.json" in packaged.getnames()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--set", "replicaCount=2"], "/replicaCount"),
        (["--set", "imageTag=1"], "additional properties 'imageTag' not allowed"),
        (["--set", "watchNamespaces={team-*}"], "/watchNamespaces/0"),
        (["--set", "operator.healthPort=http"], "/operator/healthPort"),
        (["--set-json", 'defaults.sites=[{"name":"a","kubernetes":{},"htcondor":{}}]'], "/defaults/sites/0"),
        (["--set-json", 'defaults.sites=[{"name":"a","kubernetes":{"nodeSelektor":{}}}]'], "'nodeSelektor' not allowed"),
        (["--set-json", 'defaults.sites=[{"name":"a","htcondor":{"universe":"vanilla"}}]'], "'executable'"),
        (["--set-json", 'defaults.sites=[{"name":"Bad_Name","kubernetes":{}}]'], "/defaults/sites/0/name"),
        (["--set", "resources.requests.cpu=lots"], "/resources/requests/cpu"),
        (["--set", "metrics.port=70000"], "/metrics/port"),
        (["--set-json", 'defaults.artifactStore={"s3":{"endpoint":"s3.example.org","bucket":"m","secretRef":{"name":"k"}}}'], "/defaults/artifactStore"),
    ],
)  # fmt: skip
def test_the_schema_refuses_wrong_values_at_install(helm, arguments, message):
    result = helm("template", "hpo", CHART, *arguments, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_default_install_is_cluster_wide_non_root_read_only_with_probes_and_least_rights(helm):
    docs = render(helm)
    assert sorted(d["kind"] for d in docs) == [
        "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "NetworkPolicy", "Service", "ServiceAccount",
    ]  # fmt: skip
    (role,) = by_kind(docs, "ClusterRole")
    assert role["rules"] == RULES  # no Secrets, no deletes, no namespaces or CRDs
    (deployment,) = by_kind(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["requests"] == {"cpu": "100m", "memory": "256Mi", "ephemeral-storage": "256Mi"}
    assert container["resources"]["limits"] == {"memory": "1Gi", "ephemeral-storage": "3Gi"}  # above both emptyDirs
    assert container["command"] == ["hpscan", "operator"]
    assert container["args"] == ["--health-port=8080", "--metrics-port=9090", "--no-scanning"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http-health": 8080, "http-metrics": 9090}
    # two questions: alive (a restart helps) and ready (started, the API server answers)
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http-health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-health"}
    env = {e["name"]: e.get("value") for e in container["env"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts[env["HPSCAN_CONDOR_DIR"]]] and "emptyDir" in volumes[mounts["/tmp"]]
    (service,) = by_kind(docs, "Service")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http-metrics", "http-health"]


def egress_ports(policy: dict[str, Any]) -> list[list[int]]:
    return [sorted(p["port"] for p in rule["ports"]) for rule in policy["spec"]["egress"]]


def test_the_operators_network_policy_is_on_by_default_and_widens_with_values(helm):
    (policy,) = by_kind(render(helm), "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "hpscan-operator"
    (inbound,) = policy["spec"]["ingress"]
    assert [p["port"] for p in inbound["ports"]] == ["http-health", "http-metrics"] and "from" not in inbound
    assert egress_ports(policy) == [[53, 53], [443, 6443], [9618], [443]]  # DNS, API server, schedds, S3

    store = {"s3": {"endpoint": "http://minio.storage:9000", "bucket": "models", "secretRef": {"name": "k"}}}
    peers = [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]
    (widened,) = by_kind(
        render(
            helm, "--set-json", f"defaults.artifactStore={json.dumps(store)}",
            "--set-json", f"networkPolicy.ingressFrom={json.dumps(peers)}",
            "--set-json", 'networkPolicy.apiServer.cidrs=["10.96.0.1/32"]',
            "--set-json", 'networkPolicy.extraEgress=[{"ports": [{"port": 5432}]}]',
        ),
        "NetworkPolicy",
    )  # fmt: skip
    assert widened["spec"]["ingress"][0]["from"] == peers
    assert egress_ports(widened) == [[53, 53], [443, 6443], [9618], [443, 9000], [5432]]
    assert widened["spec"]["egress"][1]["to"] == [{"ipBlock": {"cidr": "10.96.0.1/32"}}]
    assert not by_kind(render(helm, "--set", "networkPolicy.enabled=false"), "NetworkPolicy")


def test_watch_namespaces_grant_roles_there_and_nothing_cluster_wide(helm):
    docs = render(helm, "--set", "watchNamespaces={team-a,team-b}", "--set", "rbac.secretNames={idtoken}")
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")
    roles = by_kind(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    secret_rule = {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["idtoken"], "verbs": ["get"]}
    assert all(r["rules"] == [*RULES, secret_rule] for r in roles)
    bindings = by_kind(docs, "RoleBinding")
    assert {b["subjects"][0]["namespace"] for b in bindings} == {"hpscan-system"}
    (deployment,) = by_kind(docs, "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["--namespace=team-a", "--namespace=team-b"] and "--no-scanning" in args


def test_site_token_secrets_are_the_only_secrets_the_operator_may_read(helm):
    docs = render(helm, "-f", CHART / "ci" / "grid-only-values.yaml")
    (role,) = by_kind(docs, "ClusterRole")
    secret_rules = [r for r in role["rules"] if "secrets" in r["resources"]]
    assert secret_rules == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["desy-idtoken", "manchester-idtoken", "shared-idtoken"],
            "verbs": ["get"],
        }
    ]
    (config,) = by_kind(docs, "ConfigMap")
    defaults = yaml.safe_load(config["data"]["defaults.yaml"])
    assert [s["name"] for s in defaults["sites"]] == ["de-desy", "uk-manchester"]
    (monitor,) = by_kind(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0] | {"interval": None, "scrapeTimeout": None} == {
        "port": "http-metrics", "path": "/metrics", "interval": None, "scrapeTimeout": None,
    }  # fmt: skip


def test_the_default_model_stores_secret_is_one_the_operator_may_read(helm):
    store = {"s3": {"endpoint": "https://s3.example.org", "bucket": "ftag-models", "secretRef": {"name": "s3-keys"}}}
    docs = render(helm, "--set-json", f"defaults.artifactStore={json.dumps(store)}", "--set", "rbac.secretNames={idt}")
    (role,) = by_kind(docs, "ClusterRole")
    assert [r["resourceNames"] for r in role["rules"] if "secrets" in r["resources"]] == [["idt", "s3-keys"]]
    (config,) = by_kind(docs, "ConfigMap")
    from hpscan.controller.defaults import OperatorDefaults

    defaults = OperatorDefaults.model_validate(yaml.safe_load(config["data"]["defaults.yaml"]))
    assert defaults.artifact_store is not None and defaults.artifact_store.s3.bucket == "ftag-models"


# --- against the API server ---


@pytest.mark.parametrize("values", [None, *SITE_VALUES], ids=lambda v: v.stem if v else "defaults")
def test_rendered_manifests_pass_the_api_servers_dry_run(cluster, helm, new_namespace, values):
    release_ns = new_namespace()
    args = values_args(values)
    watched = yaml.safe_load(values.read_text()).get("watchNamespaces") if values else None
    if watched:  # Roles go into namespaces that must exist: use fresh ones of the same count
        fresh = [new_namespace() for _ in watched]
        args += ["--set-json", f"watchNamespaces={json.dumps(fresh)}"]
    docs = render(helm, "--include-crds", *args, namespace=release_ns)
    assert by_kind(docs, "CustomResourceDefinition")
    applied = [d for d in docs if d["kind"] not in SERVED_ELSEWHERE]
    result = subprocess.run(
        [str(cluster.tools_bin / "kubectl"), "apply", "--dry-run=server", "--validate=strict", "-f", "-"],
        input=yaml.safe_dump_all(applied), env=cluster.env(), capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("(server dry run)") == len(applied)


def test_cluster_wide_rbac_grants_the_rules_and_no_more(cluster, helm, new_namespace):
    """Installed with replicaCount 0 (a cluster-wide operator would handle other tests' scans), the ServiceAccount's
    rights are asked of the API server's authorizer in a namespace the release never saw."""
    release_ns, elsewhere = new_namespace(), new_namespace()
    release = f"hpo-{secrets.token_hex(3)}"
    helm("install", release, CHART, "-n", release_ns, "--set", "replicaCount=0", "--wait", "--timeout", "60s")
    try:
        account = f"system:serviceaccount:{release_ns}:{release}-hpscan-operator"

        def can(verb: str, resource: str) -> bool:
            asked = cluster.kubectl("auth", "can-i", verb, resource, "-n", elsewhere, "--as", account, check=False)
            return asked.stdout.strip() == "yes"

        for verb, resource in [
            ("watch", "hpscans.hpscan.io"), ("patch", "hpscans.hpscan.io/status"), ("create", "jobs.batch"),
            ("patch", "jobs.batch"), ("patch", "configmaps"), ("create", "roles.rbac.authorization.k8s.io"),
            ("create", "rolebindings.rbac.authorization.k8s.io"), ("create", "serviceaccounts"), ("create", "events"),
            ("list", "pods"), ("create", "networkpolicies.networking.k8s.io"),
        ]:  # fmt: skip
            assert can(verb, resource), f"cannot {verb} {resource}"
        for verb, resource in [
            ("get", "secrets"), ("delete", "jobs.batch"), ("delete", "configmaps"), ("create", "pods"),
            ("update", "hpscans.hpscan.io"), ("create", "hpscans.hpscan.io"), ("list", "namespaces"),
            ("escalate", "roles.rbac.authorization.k8s.io"), ("bind", "roles.rbac.authorization.k8s.io"),
            ("create", "clusterroles.rbac.authorization.k8s.io"), ("get", "pods/log"), ("delete", "networkpolicies"),
        ]:  # fmt: skip
            assert not can(verb, resource), f"may {verb} {resource}"

        # an upgrade that names an access point's token Secret: readable, that one only; the operator restarts
        before = _pod_template_checksum(cluster, release_ns, release)
        assert len(before) == 64
        site = [{"name": "uk-manchester", "htcondor": {"schedd": "ce01.example.org", "tokenSecret": {"name": "idt"}}}]
        helm(
            "upgrade",
            release,
            CHART,
            "-n",
            release_ns,
            "--reuse-values",
            "--set-json",
            f"defaults.sites={json.dumps(site)}",
        )
        assert can("get", "secrets/idt") and not can("get", "secrets/other") and not can("list", "secrets")
        assert _pod_template_checksum(cluster, release_ns, release) != before
    finally:
        helm("uninstall", release, "-n", release_ns, "--wait", "--timeout", "60s")


def _pod_template_checksum(cluster: Any, namespace: str, release: str) -> str:
    path = "jsonpath={.spec.template.metadata.annotations.checksum/defaults}"
    return cluster.kubectl("get", "deployment", f"{release}-hpscan-operator", "-n", namespace, "-o", path).stdout


def _left_by(k8s: client.ApiClient, release: str, namespaces: list[str]) -> list[str]:
    """Everything labelled as the release's, anywhere it could be."""
    selector = f"app.kubernetes.io/instance={release}"
    core, apps, rbac = client.CoreV1Api(k8s), client.AppsV1Api(k8s), client.RbacAuthorizationV1Api(k8s)
    networking = client.NetworkingV1Api(k8s)
    left = [f"ClusterRole/{o.metadata.name}" for o in rbac.list_cluster_role(label_selector=selector).items]
    left += [
        f"ClusterRoleBinding/{o.metadata.name}" for o in rbac.list_cluster_role_binding(label_selector=selector).items
    ]
    for ns in namespaces:
        for kind, lister in [
            ("Deployment", apps.list_namespaced_deployment), ("Pod", core.list_namespaced_pod),
            ("ServiceAccount", core.list_namespaced_service_account), ("ConfigMap", core.list_namespaced_config_map),
            ("Service", core.list_namespaced_service), ("Role", rbac.list_namespaced_role),
            ("RoleBinding", rbac.list_namespaced_role_binding),
            ("NetworkPolicy", networking.list_namespaced_network_policy),
        ]:  # fmt: skip
            left += [f"{kind}/{ns}/{o.metadata.name}" for o in lister(ns, label_selector=selector).items]
    return left


@pytest.mark.slow
def test_installed_operator_runs_scans_with_the_charts_rbac_and_uninstalls_clean(cluster, k8s, helm, new_namespace):
    """The stand-in payload scan (GPU node) and examples/quickstart.yaml (real dl1 training with TensorFlow, CPU
    node) run side by side through the installed operator; about a minute for both."""
    restricted = {"pod-security.kubernetes.io/enforce": "restricted"}  # the operator's pod passes it too
    operator_ns, scans = new_namespace(labels=restricted), new_namespace(labels=restricted)
    release = f"hpo-{secrets.token_hex(3)}"
    port, metrics_port = free_port(), free_port()  # pods share the host network on the node agent
    helm(
        "install", release, CHART, "-n", operator_ns, "--wait", "--timeout", "120s",
        "--set-json", f'watchNamespaces=["{scans}"]', "--set", f"operator.healthPort={port}",
        "--set", f"metrics.port={metrics_port}", "--set", "networkPolicy.enabled=true",
    )  # fmt: skip
    (pod,) = client.CoreV1Api(k8s).list_namespaced_pod(operator_ns).items
    try:
        # The pod's only credential is its projected ServiceAccount token: no kubeconfig in its volumes or
        # environment (the node agent's pod environment is hermetic), so every request passes the chart's RBAC.
        assert pod.spec.service_account_name == f"{release}-hpscan-operator"
        (container,) = pod.spec.containers
        assert not any("kube" in (v.name or "").lower() and "config" in v.name for v in pod.spec.volumes)
        assert all(e.name != "KUBECONFIG" for e in container.env or [])

        create(k8s, scans, scan_manifest("through-helm", {"sleep": 0.2}, parallelism=2))
        cluster.kubectl("apply", "-n", scans, "-f", str(REPO / "examples" / "quickstart.yaml"))
        done = wait_phase(cluster, k8s, scans, "through-helm", {"Succeeded", "Failed"}, 180)
        assert done["status"]["phase"] == "Succeeded", done["status"]
        assert done["status"]["progress"] == "8/8" and done["status"]["best"]["parameters"]["x"] == 3
        cluster.kubectl("wait", "--for=condition=Complete", "hpscan/through-helm", "-n", scans, "--timeout=30s")
        assert done["metadata"]["generation"] == 1  # the operator wrote status and metadata only: no GitOps drift
        events = client.CoreV1Api(k8s).list_namespaced_event(scans, field_selector="involvedObject.name=through-helm")
        assert {"Running", "Succeeded"} <= {e.reason for e in events.items}
        # RBAC let the operator grant the payload get/patch on the results ConfigMaps (it holds those rights)
        role = client.RbacAuthorizationV1Api(k8s).read_namespaced_role("through-helm-payload", scans)
        assert role.rules[0].verbs == ["get", "patch"] and len(role.rules[0].resource_names) == 4

        # the metrics the Service exposes (the pod shares the host network here)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
            exposed = response.read().decode()
        assert 'hpscan_scans{phase="Succeeded"}' in exposed and "hpscan_reconcile_seconds" in exposed

        quickstart = wait_phase(cluster, k8s, scans, "quickstart", {"Succeeded", "Failed"}, 420)
        assert quickstart["status"]["phase"] == "Succeeded", quickstart["status"]
        assert quickstart["status"]["progress"] == "24/24" and quickstart["status"]["best"]["value"] > 0
        cluster.kubectl("wait", "--for=condition=Complete", "hpscan/quickstart", "-n", scans, "--timeout=10s")

        # deleting the scans goes through the operator's finalizer while it is still installed
        for name in ("through-helm", "quickstart"):
            client.CustomObjectsApi(k8s).delete_namespaced_custom_object(GROUP, VERSION, scans, PLURAL, name)
        for name in ("through-helm", "quickstart"):
            cluster.wait(lambda name=name: _gone(lambda: get(k8s, scans, name)), 60, f"HPScan {name} deleted")
    finally:
        log = cluster.pod_log(operator_ns, pod.metadata.name, "operator")
        uninstalled = helm("uninstall", release, "-n", operator_ns, "--wait", "--timeout", "60s", check=False)
    assert "forbidden" not in log.lower(), log[-3000:]
    assert uninstalled.returncode == 0, uninstalled.stderr
    cluster.wait(lambda: not _left_by(k8s, release, [operator_ns, scans]), 60, f"release {release} gone")
    # and nothing unlabelled either: every namespaced object in both namespaces is one a new namespace has
    kinds = cluster.kubectl("api-resources", "--verbs=list", "--namespaced", "-o", "name").stdout.split()
    listed = ",".join(k for k in kinds if k.split(".")[0] != "events")
    fresh = {"configmap/kube-root-ca.crt", "serviceaccount/default"}
    for ns in (operator_ns, scans):  # garbage collection of the scans' pods may take a moment
        cluster.wait(lambda ns=ns: set(cluster.kubectl("get", listed, "-n", ns, "-o", "name").stdout.split()) == fresh,
                     60, f"namespace {ns} back to what a new namespace holds")  # fmt: skip
    assert cluster.kubectl("get", "crd", "hpscans.hpscan.io", check=False).returncode == 0  # the CRD stays


def _gone(read: Callable[[], Any]) -> bool:
    try:
        read()
    except ApiException as error:
        if error.status == 404:
            return True
        raise
    return False
