"""A real node (opt-in, HPSCAN_REAL_NODE=1: containerd + runc + a kubelet, cluster/node/up.sh): a pod from the
payload image runs there under the restricted Pod Security profile, `kubectl logs` reaches it through the API
server, the pod's network keeps every packet on the machine (no default route, no DNS), and a shard Job made
by the operator's own manifest functions trains and publishes its record through the kubernetes Service."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path

import pytest
from kubernetes import client
from operator_support import tiny_shard

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.environ.get("HPSCAN_REAL_NODE") != "1",
        reason="opt-in until proven: HPSCAN_REAL_NODE=1 starts a real kubelet and containerd (cluster/node/up.sh)",
    ),
]

REPO = Path(__file__).resolve().parents[2]
NODE = os.environ.get("HPSCAN_NODE_NAME", "hpscan-real-0")
PAYLOAD = "localhost/hpscan/dl1-payload:dev"
SCRIPT = r"""
echo "uid=$(id -u) gid=$(id -g)"
hpscan shard-run --help | head -3
python3 -c 'import kubernetes, htchirp, dl1, hpscan; print("imports ok")'
touch /probe 2>/dev/null && echo "root filesystem writable" || echo "root filesystem read-only"
echo "nameservers: $(awk '$1 == "nameserver" && $2 !~ /^127\./' /etc/resolv.conf | wc -l)"
awk 'NR > 1 {print "route", $2, $3}' /proc/net/route
grep CapEff /proc/self/status
"""


def test_a_restricted_pod_runs_from_the_payload_image_and_kubectl_logs_works(cluster, k8s, new_namespace):
    ns = new_namespace(labels={"pod-security.kubernetes.io/enforce": "restricted"})
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "payload"},
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": {"hpscan.io/real-node": "true"},
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                {"key": "hpscan.io/real-node", "operator": "Exists", "effect": "NoSchedule"},
            ],
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 1000,
                "runAsGroup": 1000,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "payload",
                    "image": PAYLOAD,
                    "imagePullPolicy": "Never",
                    "command": ["sh", "-c", SCRIPT],
                    "resources": {"limits": {"nvidia.com/gpu": "1", "memory": "1Gi"}},
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                }
            ],
            "volumes": [{"name": "tmp", "emptyDir": {}}],
        },
    }
    core = client.CoreV1Api(k8s)
    core.create_namespaced_pod(ns, pod)

    def finished():
        status = core.read_namespaced_pod("payload", ns).status
        return status.phase if status.phase in ("Succeeded", "Failed") else None

    phase = cluster.wait(finished, 180, "the pod on the real node to finish")
    placed = core.read_namespaced_pod("payload", ns)
    assert placed.spec.node_name == NODE
    logs = cluster.kubectl("-n", ns, "logs", "payload", check=False)
    assert phase == "Succeeded", f"{phase}: {logs.stdout}{logs.stderr}"
    assert logs.returncode == 0, logs.stderr
    out = logs.stdout
    assert "uid=1000 gid=1000" in out
    assert "Usage" in out and "imports ok" in out
    assert "root filesystem read-only" in out
    assert "nameservers: 0" in out  # no DNS (the kubelet writes 127.0.0.1 when it has none: the pod's own loopback)
    routes = [line.split() for line in out.splitlines() if line.startswith("route ")]
    assert routes, out
    assert all(destination != "00000000" for _, destination, _ in routes), f"a default route: {routes}"
    assert len(routes) == 2, routes  # its own /24 on the bridge, the service range via the bridge's address
    assert "CapEff:\t0000000000000000" in out


TINY_SHARD = tiny_shard("tiny")


def test_a_shard_job_runs_on_the_real_node_and_publishes_its_record_through_the_api(cluster, k8s, new_namespace):
    """The operator's own manifests (payload RBAC, shard ConfigMap, Job) with the payload image: the pod trains
    one combination and its `--channel kubernetes` writes the record into the ConfigMap through the kubernetes
    Service (kube-proxy)."""
    from kubernetes import utils

    from hpscan.api.contract import ShardFile
    from hpscan.backends.base import ScanRef
    from hpscan.backends.kubernetes import job_manifest, job_name, payload_rbac, shard_configmap
    from hpscan.core.manifest import load_scan
    from hpscan.job.configmap import records_of

    ns = new_namespace(labels={"pod-security.kubernetes.io/enforce": "restricted"})
    spec = load_scan(REPO / "examples" / "dl1-seed-scan.yaml").spec
    ref = ScanRef(name="tiny", namespace=ns, uid="0")
    job = job_manifest(ref, spec, 0, spec.sites[0], image=PAYLOAD)
    manifests = [*payload_rbac(ref, 1), shard_configmap(ref, ShardFile.model_validate(TINY_SHARD)), job]
    for manifest in manifests:
        manifest["metadata"].pop("ownerReferences")  # no HPScan here: the garbage collector would take them
    pod = job["spec"]["template"]["spec"]
    pod["nodeSelector"]["hpscan.io/real-node"] = "true"
    pod["tolerations"].append({"key": "hpscan.io/real-node", "operator": "Exists", "effect": "NoSchedule"})
    container = pod["containers"][0]
    container["imagePullPolicy"] = "Never"
    container["resources"] = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"nvidia.com/gpu": "1"}}
    assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"])  # TensorFlow needs a writable /tmp
    for manifest in manifests:
        utils.create_from_dict(k8s, manifest, namespace=ns)

    batch = client.BatchV1Api(k8s)

    def finished():
        status = batch.read_namespaced_job(job_name("tiny", 0), ns).status
        return "Complete" if status.succeeded else "Failed" if status.failed else None

    outcome = cluster.wait(finished, 300, "the shard Job on the real node")
    logs = cluster.kubectl("-n", ns, "logs", f"job/{job_name('tiny', 0)}", check=False)
    assert outcome == "Complete", f"{outcome}: {logs.stdout[-3000:]}{logs.stderr[-2000:]}"
    configmap = client.CoreV1Api(k8s).read_namespaced_config_map(job["metadata"]["name"], ns)
    (record,), _ = records_of(configmap.data)
    assert (record.id, record.status, record.shard) == ("c-tiny", "succeeded", 0)
    assert "c-tiny" in logs.stdout


def test_the_operator_image_runs_a_scan_whose_jobs_run_the_payload_image_on_the_real_node(cluster, k8s, new_namespace):
    """Real containers end to end: the chart installs the operator image on the real node, and the scan's shard
    Jobs run the payload image there; records reach the status through the results ConfigMaps."""
    from operator_support import create, wait_phase

    restricted = {"pod-security.kubernetes.io/enforce": "restricted"}
    operator_ns, scans = new_namespace(labels=restricted), new_namespace(labels=restricted)
    release = f"hpo-{secrets.token_hex(3)}"
    tolerations = [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "hpscan.io/real-node", "operator": "Exists", "effect": "NoSchedule"},
    ]
    helm = [str(cluster.tools_bin / "helm"), "-n", operator_ns]
    installed = subprocess.run(
        [*helm, "install", release, str(REPO / "charts" / "hpscan-operator"), "--wait", "--timeout", "180s",
         "--set", "image.repository=localhost/hpscan/operator", "--set", "image.tag=dev",
         "--set", "image.pullPolicy=Never", "--set-json", f'watchNamespaces=["{scans}"]',
         "--set-json", 'nodeSelector={"hpscan.io/real-node": "true"}',
         "--set-json", f"tolerations={json.dumps(tolerations)}"],
        env=cluster.env(), capture_output=True, text=True, check=False,
    )  # fmt: skip
    try:
        assert installed.returncode == 0, installed.stderr
        (pod,) = client.CoreV1Api(k8s).list_namespaced_pod(operator_ns).items
        assert pod.spec.node_name == NODE
        scan = {
            "apiVersion": "hpscan.io/v1alpha1",
            "kind": "HPScan",
            "metadata": {"name": "real"},
            "spec": {
                "objective": {"metric": "val_loss", "goal": "minimize"},
                "parameters": [{"name": "layer1", "values": [8, 16]}],
                "sharding": {"shards": 2},
                "retries": 0,
                "gpu": {"count": 1, "required": False},
                "payload": {
                    "image": PAYLOAD,
                    "cpu": "250m",
                    "memory": "1Gi",
                    "settings": {"epochs": 1, "patience": 1, "data": {"synthetic": {"jets": 2000, "seed": 1}}},
                },
                "sites": [
                    {
                        "name": "real-node",
                        "kubernetes": {"nodeSelector": {"hpscan.io/real-node": "true"}, "tolerations": tolerations},
                    }
                ],
            },
        }
        create(k8s, scans, scan)
        done = wait_phase(cluster, k8s, scans, "real", {"Succeeded", "Failed"}, 300)
        assert done["status"]["phase"] == "Succeeded", done["status"]
        assert done["status"]["progress"] == "2/2", done["status"]
        pods = client.CoreV1Api(k8s).list_namespaced_pod(scans, label_selector="hpscan.io/scan=real").items
        assert pods and {p.spec.node_name for p in pods} == {NODE}
        assert {p.spec.containers[0].image for p in pods} == {PAYLOAD}
    finally:
        logs = cluster.kubectl("-n", operator_ns, "logs", "--tail=40", "-l", "app.kubernetes.io/name=hpscan-operator",
                               check=False)  # fmt: skip
        subprocess.run([*helm, "uninstall", release, "--wait", "--timeout", "60s"], env=cluster.env(), check=False)
        print(logs.stdout[-3000:])
