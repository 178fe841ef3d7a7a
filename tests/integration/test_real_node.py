"""A real node (opt-in, HPSCAN_REAL_NODE=1: containerd + runc + a kubelet, cluster/node/up.sh): a pod from the
payload image runs there under the restricted Pod Security profile, `kubectl logs` reaches it through the API
server, and the pod's network keeps every packet on the machine (no default route, no DNS)."""

from __future__ import annotations

import os

import pytest
from kubernetes import client

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.environ.get("HPSCAN_REAL_NODE") != "1",
        reason="opt-in until proven: HPSCAN_REAL_NODE=1 starts a real kubelet and containerd (cluster/node/up.sh)",
    ),
]

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
