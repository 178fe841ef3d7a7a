"""Fan-out speed of the operator on the local control plane (make cluster).

Applies a 100-shard HPScan and measures the seconds from `create` until all 100 Jobs exist, and how many API
requests the operator sent meanwhile (its hpscan_api_requests_total metric). It does so for two scans of 100
shards, one of 200 and one of 2,000 combinations: requests must grow with shards, not combinations. The pods
ask for more GPUs than the test node has, so they stay Pending and the machine stays quiet.

    .venv/bin/python bench/fanout.py         # last line: fanout_seconds=<s> (target: under 2)
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.request import urlopen

from kubernetes import client, config

REPO = Path(__file__).resolve().parents[1]
SHARDS = 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api_requests(port: int) -> float:
    with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(v) for v in re.findall(r"^hpscan_api_requests_total\{[^}]*\} (\S+)$", text, re.M))


def scan(name: str, combinations: int) -> dict:
    per_axis = combinations // 10
    return {
        "apiVersion": "hpscan.io/v1alpha1",
        "kind": "HPScan",
        "metadata": {"name": name},
        "spec": {
            "parameters": [
                {"name": "layer1", "range": {"min": 1, "max": per_axis, "step": 1}},
                {"name": "learning_rate", "range": {"min": 1e-4, "max": 1e-2, "count": 10, "scale": "log"}},
            ],
            "sharding": {"shards": SHARDS},
            "gpu": {"count": 8, "required": True},  # more than the test node has: pods stay Pending
            "payload": {"image": "registry.example.org/none:0", "command": ["true"]},
            "sites": [{"name": "gpu", "kubernetes": {"tolerations": [{"operator": "Exists"}]}}],
        },
    }


def main() -> None:
    subprocess.run(["make", "-s", "cluster"], cwd=REPO, check=True)
    kubeconfig = REPO / ".cluster" / "kubeconfig"
    kubectl = REPO / ".tools" / "bin" / "kubectl"
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    subprocess.run(
        [kubectl, "apply", "-f", REPO / "crds" / "hpscan.io_hpscans.yaml"], env=env, check=True, capture_output=True
    )
    subprocess.run([kubectl, "wait", "--for=condition=Established", "crd/hpscans.hpscan.io"], env=env, check=True)
    config.load_kube_config(str(kubeconfig))
    core, batch, custom = client.CoreV1Api(), client.BatchV1Api(), client.CustomObjectsApi()
    namespace = f"bench-fanout-{secrets.token_hex(3)}"
    core.create_namespace({"metadata": {"name": namespace}})
    port = free_port()
    operator = subprocess.Popen(
        [str(Path(sys.executable).parent / "hpscan"), "operator", "--namespace", namespace,
         "--liveness", f"http://127.0.0.1:{free_port()}/healthz", "--metrics-port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    results = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                before = api_requests(port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        time.sleep(2)  # let kopf finish its start-up listings
        for combinations in (200, 2000):
            name = f"fanout-{combinations}"
            before = api_requests(port)
            start = time.monotonic()
            custom.create_namespaced_custom_object(
                "hpscan.io", "v1alpha1", namespace, "hpscans", scan(name, combinations)
            )
            first = None
            while (
                jobs := len(batch.list_namespaced_job(namespace, label_selector=f"hpscan.io/scan={name}").items)
            ) < SHARDS:
                if jobs and first is None:
                    first = time.monotonic() - start
                time.sleep(0.05)
            seconds = time.monotonic() - start
            print(f"  first Job after {first or seconds:.2f} s", flush=True)
            time.sleep(1)  # the step that created them has finished counting
            requests = api_requests(port) - before
            results.append((combinations, seconds, requests))
            print(f"{SHARDS} shards, {combinations:5d} combinations: all Jobs after {seconds:.2f} s, "
                  f"{requests:.0f} operator API requests", flush=True)  # fmt: skip
    finally:
        operator.terminate()
        operator.wait(30)
        core.delete_namespace(namespace)
    print(f"fanout_seconds={max(s for _, s, _ in results):.2f}")


if __name__ == "__main__":
    main()
