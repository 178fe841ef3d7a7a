"""Re-brokering speed of the operator on the local control plane (make cluster): how long a shard whose site lost
its GPUs takes to run again on another site.

Applies an HPScan over two Kubernetes sites whose probes both pass; the "breaks" site's environment makes every
shard it runs exit 3 (no usable GPU) after its first combination, as a site whose GPUs fail mid-scan would. For each
such shard it takes the time from its failed Job's Failed condition to the pod of its moved Job (``-m1``, on the
"works" site) starting, and checks that the scan ends Succeeded with every record.

    .venv/bin/python bench/brokering.py      # last line: rebroker_seconds=<median s> max_seconds=<s>
"""

from __future__ import annotations

import statistics
import sys
import time

from kubernetes import client
from operator_run import REPO, operator_on_local_cluster

PAYLOAD = REPO / "tests" / "unit" / "payloads" / "contract_payload.py"
SHARDS = 8


def scan(name: str) -> dict:
    gpu = {"tolerations": [{"operator": "Exists"}], "nodeSelector": {"nvidia.com/gpu.present": "true"}}
    return {
        "apiVersion": "hpscan.io/v1alpha1",
        "kind": "HPScan",
        "metadata": {"name": name},
        "spec": {
            "parameters": [{"name": "x", "values": list(range(SHARDS * 2))}],
            "sharding": {"shards": SHARDS},
            "retries": 0,
            "gpu": {"count": 1, "required": True},
            "payload": {
                "image": "registry.example.org/contract-payload:1",
                "command": [sys.executable, str(PAYLOAD)],
                "gpuCheck": [sys.executable, str(PAYLOAD), "gpu-check"],
                "settings": {"contractPayload": {"sleep": 0.5}},
                "cpu": "100m",
                "memory": "256Mi",
            },
            "sites": [
                {"name": "breaks", "env": [{"name": "CONTRACT_GPU_LOST_AFTER", "value": "1"}], "kubernetes": gpu},
                {"name": "works", "kubernetes": gpu},
            ],
        },
    }


def main() -> None:
    with operator_on_local_cluster("bench-broker") as run:
        batch, core, custom = client.BatchV1Api(), client.CoreV1Api(), client.CustomObjectsApi()
        name = "rebroker"
        custom.create_namespaced_custom_object("hpscan.io", "v1alpha1", run.namespace, "hpscans", scan(name))
        deadline = time.monotonic() + 300
        while True:
            body = custom.get_namespaced_custom_object("hpscan.io", "v1alpha1", run.namespace, "hpscans", name)
            phase = (body.get("status") or {}).get("phase")
            if phase in {"Succeeded", "Failed"}:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"the scan did not end within 300 s (phase {phase})")
            time.sleep(1)
        status = body["status"]
        if phase != "Succeeded" or status["progress"] != f"{SHARDS * 2}/{SHARDS * 2}":
            raise SystemExit(f"the scan ended {phase} with {status['progress']}: {status.get('message')}")
        jobs = {j.metadata.name: j for j in batch.list_namespaced_job(run.namespace).items}
        pods = core.list_namespaced_pod(run.namespace).items
        started = {p.metadata.labels.get("job-name"): p.status.start_time for p in pods if p.status.start_time}
        delays = []
        for job_name, job in sorted(jobs.items()):
            moved = f"{job_name}-m1"
            failed = next((c for c in job.status.conditions or [] if c.type == "Failed" and c.status == "True"), None)
            if failed is None or moved not in started:
                continue
            delays.append((started[moved] - failed.last_transition_time).total_seconds())
            print(f"  {job_name}: failed on 'breaks', running on 'works' {delays[-1]:.1f} s later", flush=True)
        if not delays:
            raise SystemExit("no shard moved: the 'breaks' site received no shard")
        breaks = status["sites"][0]
        print(f"site breaks: {breaks['state']} ({breaks['reason']}); {len(delays)} shard(s) moved, scan Succeeded")
    print(f"rebroker_seconds={statistics.median(delays):.1f} max_seconds={max(delays):.1f}")


if __name__ == "__main__":
    main()
