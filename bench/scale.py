"""A 100,000-combination scan in 200 shards through the operator on the local control plane (make cluster).

The payload is the contract-honouring stand-in of tests/support/payloads (no training: it records a loss computed
from the parameters), run by `hpscan shard-run` in each pod of the test node agent (a kubelet stand-in), so what
is measured is hpscan itself: the time from `create` to Succeeded, the operator's API requests per shard, its
peak resident memory, the largest object it or its pods wrote (the HPScan with its status, the shards' record pages),
the status size, and the requests an idle finished scan still costs.

    .venv/bin/python bench/scale.py                      # 100,000 combinations, 200 shards, 20 pods at once
    .venv/bin/python bench/scale.py --combinations 10000 --shards 20
    # last line: status_kib=<n> max_object_kib=<n> operator_rss_mib=<n> requests_per_shard=<n> seconds=<n>
    # targets: status <= 64 KiB, no object over 512 KiB, RSS <= 250 MiB, requests O(shards), idle: 0 requests
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from kubernetes import client
from operator_run import REPO, operator_on_local_cluster

PAYLOAD = REPO / "tests" / "unit" / "payloads" / "contract_payload.py"


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def scan(name: str, combinations: int, shards: int, parallelism: int) -> dict:
    second = 100 if combinations >= 1000 else 10
    return {
        "apiVersion": "hpscan.io/v1alpha1",
        "kind": "HPScan",
        "metadata": {"name": name},
        "spec": {
            "parameters": [
                {"name": "a", "range": {"min": 1, "max": combinations // second, "step": 1}},
                {"name": "b", "range": {"min": 1, "max": second, "step": 1}},
            ],
            "sharding": {"shards": shards},
            "parallelism": parallelism,
            "retries": 0,
            "gpu": {"count": 0, "required": False},
            "payload": {
                "image": "registry.example.org/contract-payload:1",
                "command": [sys.executable, str(PAYLOAD)],
                "cpu": "100m",
                "memory": "256Mi",
            },
            "sites": [{"name": "cpu", "kubernetes": {}}],
        },
    }


def size_kib(obj: object) -> float:
    return len(json.dumps(obj, separators=(",", ":"), default=str)) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--combinations", type=int, default=100_000)
    parser.add_argument("--shards", type=int, default=200)
    parser.add_argument("--parallelism", type=int, default=20, help="pods at once (each is two Python processes)")
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()

    name = "scale"
    with operator_on_local_cluster("bench-scale") as run:
        core, custom, namespace = client.CoreV1Api(), client.CustomObjectsApi(), run.namespace
        before = run.api_requests()
        start = time.monotonic()
        custom.create_namespaced_custom_object(
            "hpscan.io", "v1alpha1", namespace, "hpscans", scan(name, args.combinations, args.shards, args.parallelism)
        )
        last_report = 0.0
        while True:
            body = custom.get_namespaced_custom_object("hpscan.io", "v1alpha1", namespace, "hpscans", name)
            status = body.get("status") or {}
            if status.get("phase") in ("Succeeded", "Failed"):
                break
            if time.monotonic() - last_report > 15:
                last_report = time.monotonic()
                print(
                    f"  {time.monotonic() - start:5.0f} s: {status.get('phase')} {status.get('progress')}", flush=True
                )
            if time.monotonic() - start > args.timeout:
                raise TimeoutError(f"not done after {args.timeout:.0f} s: {status.get('progress')}")
            time.sleep(2)
        seconds = time.monotonic() - start
        requests = run.api_requests() - before
        time.sleep(4)  # the last reconcile settles
        idle_from = run.api_requests()
        time.sleep(10)
        idle_requests = run.api_requests() - idle_from
        rss = peak_rss_mib(run.process.pid)
        maps = core.list_namespaced_config_map(namespace, label_selector=f"hpscan.io/scan={name}").items
        largest_map = max((size_kib({"data": m.data}) for m in maps), default=0.0)
        status_kib = size_kib(body.get("status") or {})
        max_object = max(largest_map, size_kib(body))
        print(
            f"{args.combinations:,} combinations in {args.shards} shards: {body['status']['phase']} "
            f"{body['status']['progress']} after {seconds:.0f} s; {requests:.0f} operator API requests "
            f"({requests / args.shards:.1f} a shard); {idle_requests:.0f} in 10 s once finished; largest shard "
            f"ConfigMap {largest_map:.0f} KiB, HPScan {size_kib(body):.0f} KiB; operator peak RSS {rss:.0f} MiB",
            flush=True,
        )
    print(
        f"status_kib={status_kib:.1f} max_object_kib={max_object:.0f} operator_rss_mib={rss:.0f} "
        f"requests_per_shard={requests / args.shards:.1f} seconds={seconds:.0f}"
    )


if __name__ == "__main__":
    main()
