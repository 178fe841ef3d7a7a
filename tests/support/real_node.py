"""What the real node's tests share (tests/integration/kubernetes: test_real_node.py, test_upgrade.py): the
tolerations that reach it, containerd's own client on its socket, and a scan's end."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from support.operator_support import get, wait_phase

REPO = Path(__file__).resolve().parents[2]
CLUSTER_DIR = Path(os.environ.get("HPSCAN_CLUSTER_DIR", REPO / ".cluster"))
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
