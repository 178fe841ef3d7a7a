"""What the real node's tests share (tests/integration/kubernetes: test_real_node.py, test_upgrade.py,
test_real_node_checkpoints.py): the tolerations that reach it, containerd's own client on its socket, a scan's end,
and a server of the host's loopback (the S3 server) as a Service its pods reach."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from support.operator_support import get, wait_phase

REPO = Path(__file__).resolve().parents[2]
CLUSTER_DIR = Path(os.environ.get("HPSCAN_CLUSTER_DIR", REPO / ".cluster"))
NODE = os.environ.get("HPSCAN_NODE_NAME", "hpscan-real-0")
PAYLOAD = "localhost/hpscan/dl1-payload:dev"
TOLERATIONS = [
    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "hpscan.io/real-node", "operator": "Exists", "effect": "NoSchedule"},
]


def ctr(*args: str) -> subprocess.CompletedProcess[str]:
    """containerd's own client on the real node's socket (what runc was handed, not what the API server admitted)."""
    sock = CLUSTER_DIR / "node" / "containerd.sock"
    return subprocess.run(
        ["ctr", "--address", str(sock), "--namespace", "k8s.io", *args], capture_output=True, text=True, check=True
    )


def finished(cluster, k8s, ns: str, name: str, timeout: float) -> dict:
    """The scan's status once Succeeded or Failed; on a timeout, a failure that shows where it stands."""
    try:
        return wait_phase(cluster, k8s, ns, name, {"Succeeded", "Failed"}, timeout)["status"]
    except TimeoutError:
        pytest.fail(f"{name} did not finish in {timeout:g}s: {json.dumps(get(k8s, ns, name).get('status'))[-3000:]}")


REAL_SITE = {
    "name": "real",
    "kubernetes": {"nodeSelector": {"hpscan.io/real-node": "true"}, "tolerations": TOLERATIONS},
}
"""A Kubernetes site of the real node alone."""


def node_address() -> str:
    """The bridge's host address (cluster/node/up.sh): the one host address the node's pods reach directly."""
    settings = dict(
        line.split("=", 1) for line in (CLUSTER_DIR / "node" / "node.env").read_text().splitlines() if "=" in line
    )
    return f"{settings['NODE_NET']}.1"


@contextmanager
def host_service(k8s, ns: str, name: str, port: int) -> Iterator[str]:
    """A server on the host's 127.0.0.1:``port`` as the Service ``ns/name``, the way pods reach the API server
    (cluster/node/up.sh): a forwarder (cluster/node/apiforward.py) from the bridge's address to it, that address
    as the Service's endpoint, and kube-proxy's rules from the Service's address to it. Yields ``http://<cluster
    IP>:<port>``, which the host reaches too (kube-proxy's rules apply to the host's own connections)."""
    bridge = node_address()
    forwarder = subprocess.Popen(
        [sys.executable, str(REPO / "cluster" / "node" / "apiforward.py"), "--listen", f"{bridge}:{port}",
         "--to", f"127.0.0.1:{port}"],
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    core: Any = client.CoreV1Api(k8s)  # takes manifests as dicts
    try:
        service = core.create_namespaced_service(
            ns, {"metadata": {"name": name}, "spec": {"ports": [{"name": "http", "port": port, "protocol": "TCP"}]}}
        )  # no selector: the endpoint below is the host's
        slice_ = {
            "metadata": {"name": name, "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [bridge], "conditions": {"ready": True}}],
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        }
        client.DiscoveryV1Api(k8s).create_namespaced_endpoint_slice(ns, slice_)
        address = (service.spec.cluster_ip, port)
        deadline = time.monotonic() + 60
        while not _answers(address):  # kube-proxy's rules come a moment after the Service
            assert time.monotonic() < deadline, f"{name} at {address} unreachable from the host after 60 s"
            time.sleep(0.5)
        yield f"http://{address[0]}:{port}"
    finally:
        forwarder.terminate()
        forwarder.wait(10)


def _answers(address: tuple[str, int]) -> bool:
    try:
        socket.create_connection(address, timeout=2).close()
    except OSError:
        return False
    return True
