"""What the operator benchmarks share: the local control plane, an `hpscan operator` process watching one fresh
namespace, and its API-request metric. Not a benchmark itself."""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.request import urlopen

from kubernetes import client, config

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class OperatorRun:
    namespace: str
    metrics_port: int
    process: subprocess.Popen[bytes]

    def api_requests(self) -> float:
        """The operator's Kubernetes-client requests so far (hpscan_api_requests_total, all methods)."""
        with urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        return sum(float(v) for v in re.findall(r"^hpscan_api_requests_total\{[^}]*\} (\S+)$", text, re.M))


@contextmanager
def operator_on_local_cluster(prefix: str) -> Iterator[OperatorRun]:
    """Start (or reuse) the local control plane, apply the CRD, make a namespace, run the operator on it; on exit
    stop the operator and delete the namespace."""
    subprocess.run(["make", "-s", "cluster"], cwd=REPO, check=True)
    kubeconfig = REPO / ".cluster" / "kubeconfig"
    kubectl = REPO / ".tools" / "bin" / "kubectl"
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    crd = REPO / "crds" / "hpscan.io_hpscans.yaml"
    subprocess.run([kubectl, "apply", "-f", crd], env=env, check=True, capture_output=True)
    subprocess.run([kubectl, "wait", "--for=condition=Established", "crd/hpscans.hpscan.io"], env=env, check=True)
    config.load_kube_config(str(kubeconfig))
    core = client.CoreV1Api()
    namespace = f"{prefix}-{secrets.token_hex(3)}"
    core.create_namespace({"metadata": {"name": namespace}})
    port = free_port()
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "hpscan"), "operator", "--namespace", namespace,
         "--liveness", f"http://127.0.0.1:{free_port()}/healthz", "--metrics-port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    run = OperatorRun(namespace, port, process)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                run.api_requests()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        time.sleep(2)  # let kopf finish its start-up listings
        yield run
    finally:
        process.terminate()
        process.wait(30)
        core.delete_namespace(namespace)
