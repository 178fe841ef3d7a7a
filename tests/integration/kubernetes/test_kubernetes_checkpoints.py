"""A dl1 scan on the local control plane (the operator, the real Job controller, pods on the test node agent) whose
pod is deleted mid-trial, after a trial's epoch k was checkpointed and uploaded to the scan's object store (the
``s3`` fixture): the Job's next pod, in an empty output folder, resumes each trial in flight at its stored epoch (its
record's resumedFrom and its log say so), the records equal an uninterrupted run's (``hpscan run`` of the same scan,
1e-6 relative as docs/checkpoints.md states), and the store holds no checkpoint once the trials ended. The same on
the real node: test_real_node_checkpoints.py."""

from __future__ import annotations

import secrets

import pytest
from kubernetes import client

from support import checkpoint_files
from support.operator_support import create, wait_phase

pytestmark = pytest.mark.integration
pytest.importorskip("tensorflow")

PREFIX = f"hpsckpt-{secrets.token_hex(2)}"
EPOCHS = 20
# 200 steps an epoch: slow enough that the delete comes mid-training
SCAN = checkpoint_files.resume_scan(
    "registry.example.org/hpscan/dl1-payload:0.1.0", epochs=EPOCHS, batch_size=100, jets=30000, retries=2
)
SCAN["spec"]["payload"]["env"] = [{"name": "HPSCAN_CHECKPOINT_UPLOAD_SECONDS", "value": "1"}]  # the default is 300


def test_a_deleted_pod_resumes_its_trials_from_the_store_in_the_jobs_next_pod(cluster, k8s, ns, operator, s3, tmp_path):
    bucket = s3.create_bucket(f"ckpt-{secrets.token_hex(3)}")
    keys = {"accessKeyId": s3.access_key, "secretAccessKey": s3.secret_key}
    core = client.CoreV1Api(k8s)
    core.create_namespaced_secret(ns, {"metadata": {"name": "store"}, "stringData": keys})
    body = {**SCAN, "spec": {**SCAN["spec"]}}
    store = {"s3": {"endpoint": s3.endpoint, "bucket": bucket, "prefix": "scans", "secretRef": {"name": "store"}}}
    body["spec"]["artifacts"] = {"keep": "top", "top": 1, "store": store}
    create(k8s, ns, body)
    prefix = f"scans/{ns}/resume/_checkpoints/"

    first, in_flight = checkpoint_files.delete_pod_once_stored(
        cluster, core, ns, "resume", (s3, bucket, prefix), 3, EPOCHS
    )

    status = wait_phase(cluster, k8s, ns, "resume", {"Succeeded", "Failed"}, 900)["status"]
    pods = [p.metadata.name for p in core.list_namespaced_pod(ns, label_selector="hpscan.io/scan=resume").items]
    (second,) = [name for name in pods if name != first]
    records = checkpoint_files.results(cluster, ns, "resume")
    checkpoint_files.assert_resumed(status, cluster.pod_log(ns, second, "payload"), records, in_flight, prefix)
    checkpoint_files.assert_same_training(records, checkpoint_files.uninterrupted(SCAN, tmp_path))
    assert s3.keys(bucket, prefix) == []  # every trial ended: its checkpoint went with its record
