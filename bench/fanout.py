"""Fan-out speed of the operator on the local control plane (make cluster).

Applies a 100-shard HPScan and measures the seconds from `create` until all 100 Jobs exist, and how many API
requests the operator sent meanwhile (its hpscan_api_requests_total metric). It does so for two scans of 100
shards, one of 200 and one of 2,000 combinations: requests must grow with shards, not combinations. The pods
ask for more GPUs than the test node has, so they stay Pending and the machine stays quiet.

    .venv/bin/python bench/fanout.py         # last line: fanout_seconds=<s> (target: under 2)
"""

from __future__ import annotations

import time

from kubernetes import client
from operator_run import operator_on_local_cluster

SHARDS = 100


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
            "payload": {"image": "registry.example.org/none:0", "command": ["true"], "gpuCheck": []},  # fan-out only
            "sites": [{"name": "gpu", "kubernetes": {"tolerations": [{"operator": "Exists"}]}}],
        },
    }


def main() -> None:
    results = []
    with operator_on_local_cluster("bench-fanout") as run:
        batch, custom = client.BatchV1Api(), client.CustomObjectsApi()
        for combinations in (200, 2000):
            name = f"fanout-{combinations}"
            before = run.api_requests()
            start = time.monotonic()
            custom.create_namespaced_custom_object(
                "hpscan.io", "v1alpha1", run.namespace, "hpscans", scan(name, combinations)
            )
            first = None
            while (
                jobs := len(batch.list_namespaced_job(run.namespace, label_selector=f"hpscan.io/scan={name}").items)
            ) < SHARDS:
                if jobs and first is None:
                    first = time.monotonic() - start
                time.sleep(0.05)
            seconds = time.monotonic() - start
            print(f"  first Job after {first or seconds:.2f} s", flush=True)
            time.sleep(1)  # the step that created them has finished counting
            requests = run.api_requests() - before
            results.append((combinations, seconds, requests))
            print(f"{SHARDS} shards, {combinations:5d} combinations: all Jobs after {seconds:.2f} s, "
                  f"{requests:.0f} operator API requests", flush=True)  # fmt: skip
    print(f"fanout_seconds={max(s for _, s, _ in results):.2f}")


if __name__ == "__main__":
    main()
