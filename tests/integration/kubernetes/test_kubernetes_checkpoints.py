"""A dl1 scan on the local control plane (the operator, the real Job controller, pods on the test node agent) whose
pod is deleted mid-trial, after a trial's epoch k was checkpointed and uploaded to the scan's object store (the
``s3`` fixture): the Job's next pod, in an empty output folder, resumes each trial in flight at its stored epoch (its
record's resumedFrom and its log say so), the records equal an uninterrupted run's (``hpscan run`` of the same scan,
1e-6 relative as docs/checkpoints.md states), and the store holds no checkpoint once the trials ended."""

from __future__ import annotations

import copy
import io
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from hpscan.api.store import CHECKPOINT_MANIFEST
from support.operator_support import create, wait_phase

pytestmark = pytest.mark.integration
pytest.importorskip("tensorflow")

PREFIX = f"hpsckpt-{secrets.token_hex(2)}"
HPSCAN = str(Path(sys.executable).parent / "hpscan")
EPOCHS = 20
SCAN = {
    "apiVersion": "hpscan.io/v1alpha1",
    "kind": "HPScan",
    "metadata": {"name": "resume"},
    "spec": {
        "parameters": [{"name": "layer1", "values": [16, 24, 32]}],
        "sharding": {"shards": 1},
        "retries": 2,
        "gpu": {"count": 0, "required": False},
        "payload": {
            "image": "registry.example.org/hpscan/dl1-payload:0.1.0",
            "env": [{"name": "HPSCAN_CHECKPOINT_UPLOAD_SECONDS", "value": "1"}],  # the default is 300
            "settings": {
                "epochs": EPOCHS,
                "patience": 0,
                "batch_size": 100,  # 200 steps an epoch: slow enough that the delete comes mid-training
                "fuse": 2,
                "data": {"synthetic": {"jets": 30000, "seed": 1}},
            },
        },
    },
}
WALL_TIME_METRICS = {"inference_ms_per_1k_jets"}
"""dl1's measured wall time (record_metrics.py): what the machine's load says, not what training did."""


def stored_epochs(s3, bucket: str, prefix: str) -> dict[str, int]:
    """The epoch of each trial's newest whole checkpoint in the store (dl1's state.npz)."""
    import numpy as np

    manifests = sorted(key for key in s3.keys(bucket, prefix) if key.endswith(f"/{CHECKPOINT_MANIFEST}"))
    epochs = {}
    for manifest in manifests:  # versions sort by upload time: the newest wins
        version = manifest.rsplit("/", 1)[0]
        try:
            body = s3.client().get_object(Bucket=bucket, Key=f"{version}/state.npz")["Body"].read()
        except s3.client().exceptions.NoSuchKey:
            continue  # pruned while read
        with np.load(io.BytesIO(body)) as state:
            epochs[version[len(prefix) :].split("/")[0]] = json.loads(str(state["meta"]))["epoch"]
    return epochs


def uninterrupted(tmp_path: Path) -> dict[str, dict]:
    """The same scan's records from `hpscan run` (the local backend), trained in one go."""
    manifest = tmp_path / "scan.yaml"
    manifest.write_text(yaml.safe_dump(SCAN))
    run = tmp_path / "run"
    done = subprocess.run(
        [HPSCAN, "run", str(manifest), "--out", str(run), "--plain"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {r["id"]: r for r in map(json.loads, (run / "results.jsonl").read_text().splitlines())}


def test_a_deleted_pod_resumes_its_trials_from_the_store_in_the_jobs_next_pod(cluster, k8s, ns, operator, s3, tmp_path):
    bucket = s3.create_bucket(f"ckpt-{secrets.token_hex(3)}")
    keys = {"accessKeyId": s3.access_key, "secretAccessKey": s3.secret_key}
    core = client.CoreV1Api(k8s)
    core.create_namespaced_secret(ns, {"metadata": {"name": "store"}, "stringData": keys})
    body = copy.deepcopy(SCAN)
    store = {"s3": {"endpoint": s3.endpoint, "bucket": bucket, "prefix": "scans", "secretRef": {"name": "store"}}}
    body["spec"]["artifacts"] = {"keep": "top", "top": 1, "store": store}
    create(k8s, ns, body)
    prefix = f"scans/{ns}/resume/_checkpoints/"

    uploaded = cluster.wait(
        lambda: {t: e for t, e in stored_epochs(s3, bucket, prefix).items() if e >= 3}, 600, "epoch 3 uploaded"
    )
    (pod,) = core.list_namespaced_pod(ns, label_selector="hpscan.io/scan=resume").items
    first = pod.metadata.name
    core.delete_namespaced_pod(first, ns)  # the kubelet's SIGTERM, then SIGKILL after the grace period (30 s)
    cluster.wait(
        lambda: first not in {p.metadata.name for p in core.list_namespaced_pod(ns).items}, 90, f"pod {first} gone"
    )
    in_flight = stored_epochs(s3, bucket, prefix)  # what the next pod finds: the periodic uploads or the last one
    assert in_flight and all(in_flight.get(t, 0) >= e for t, e in uploaded.items())
    assert all(epoch < EPOCHS for epoch in in_flight.values()), f"deleted too late to test a resume: {in_flight}"

    status = wait_phase(cluster, k8s, ns, "resume", {"Succeeded", "Failed"}, 900)["status"]
    assert status["phase"] == "Succeeded", status
    assert status["training"]["epochsResumed"] == sum(in_flight.values())
    pods = [p.metadata.name for p in core.list_namespaced_pod(ns, label_selector="hpscan.io/scan=resume").items]
    (second,) = [name for name in pods if name != first]
    log = cluster.pod_log(ns, second, "payload")
    for trial, epoch in in_flight.items():
        assert f"restored the checkpoint of {trial} from {prefix}{trial}/" in log
        assert f"resuming {trial} at epoch {epoch} from its checkpoint" in log

    records = {r["id"]: r for r in map(json.loads, _results(cluster, ns))}
    assert {t: records[t].get("resumedFrom") for t in in_flight} == {t: [e] for t, e in in_flight.items()}
    assert all("resumedFrom" not in r for t, r in records.items() if t not in in_flight)
    expected = uninterrupted(tmp_path)
    assert sorted(records) == sorted(expected)
    for trial, record in expected.items():
        again = records[trial]
        assert (again["status"], again["epochs"]) == (record["status"], record["epochs"]), trial
        trained = {name: value for name, value in record["metrics"].items() if name not in WALL_TIME_METRICS}
        assert {name: again["metrics"][name] for name in trained} == pytest.approx(trained, rel=1e-6), trial
    assert s3.keys(bucket, prefix) == []  # every trial ended: its checkpoint went with its record


def _results(cluster, ns: str) -> list[str]:
    """The scan's records as `hpscan results` reads them from the cluster (one JSON line each)."""
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    done = subprocess.run([HPSCAN, "results", "resume", "-n", ns], env=env, capture_output=True, text=True, check=True)
    return done.stdout.splitlines()
