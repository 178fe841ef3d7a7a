"""Issue 26 on the real node (containerd + runc + a kubelet, the payload image): a dl1 scan's shard pod is deleted
once a trial's epoch k reached the scan's object store; the Job's next pod, a new container in an empty output
folder, resumes each trial in flight at its stored epoch (its log, the records' resumedFrom and
status.training.epochsResumed say so), the records equal `hpscan run`'s of the same scan trained in one go (1e-6
relative, docs/checkpoints.md), and `_checkpoints/` is empty at the end.

The S3 server (the ``s3`` fixture) listens on the host's loopback, which the node's pods cannot reach (their only
route off the bridge is the service range): it is a Service here (support.real_node.host_service), as the API
server is to them. The operator runs on the host (the ``operator`` fixture) and reaches the store at the same
address, through kube-proxy's rules."""

from __future__ import annotations

import copy
import secrets

import pytest
from kubernetes import client

from support import checkpoint_files
from support.operator_support import create
from support.real_node import NODE, PAYLOAD, REAL_SITE, finished, host_service

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("real_node")]
pytest.importorskip("tensorflow")

PREFIX = f"hpsrealckpt-{secrets.token_hex(2)}"
EPOCHS = 20
# 200 steps an epoch: the delete comes mid-training
SCAN = checkpoint_files.resume_scan(PAYLOAD, epochs=EPOCHS, batch_size=100, jets=30000, retries=2)
SCAN["spec"]["sites"] = [REAL_SITE]
SCAN["spec"]["payload"] |= {
    "cpu": "250m",
    "memory": "2Gi",
    "env": [{"name": "HPSCAN_CHECKPOINT_UPLOAD_SECONDS", "value": "1"}],  # the default is 300
}


def test_a_deleted_pod_on_the_real_node_resumes_its_trials_from_the_store_in_the_jobs_next_pod(
    cluster, k8s, ns, operator, s3, tmp_path
):
    bucket = s3.create_bucket(f"ckpt-{secrets.token_hex(3)}")
    keys = {"accessKeyId": s3.access_key, "secretAccessKey": s3.secret_key}
    core = client.CoreV1Api(k8s)
    core.create_namespaced_secret(ns, {"metadata": {"name": "store"}, "stringData": keys})
    with host_service(k8s, ns, "store", s3.port) as endpoint:
        body = copy.deepcopy(SCAN)
        store = {"s3": {"endpoint": endpoint, "bucket": bucket, "prefix": "scans", "secretRef": {"name": "store"}}}
        body["spec"]["artifacts"] = {"keep": "top", "top": 1, "store": store}
        create(k8s, ns, body)
        prefix = f"scans/{ns}/resume/_checkpoints/"
        first, in_flight = checkpoint_files.delete_pod_once_stored(
            cluster, core, ns, "resume", (s3, bucket, prefix), 3, EPOCHS
        )
        print(f"deleted {first} with these trials' epochs in the store: {in_flight}")
        status = finished(cluster, k8s, ns, "resume", 900)

    pods = core.list_namespaced_pod(ns, label_selector="hpscan.io/scan=resume").items
    (second,) = [pod for pod in pods if pod.metadata.name != first]
    assert second.spec.node_name == NODE and second.spec.containers[0].image == PAYLOAD
    assert second.status.container_statuses[0].container_id.startswith("containerd://")  # a real container
    log = cluster.kubectl("-n", ns, "logs", second.metadata.name, "-c", "payload").stdout
    records = checkpoint_files.results(cluster, ns, "resume")
    checkpoint_files.assert_resumed(status, log, records, in_flight, prefix)
    checkpoint_files.assert_same_training(records, checkpoint_files.uninterrupted(SCAN, tmp_path))
    assert s3.keys(bucket, prefix) == []  # every trial ended: its checkpoint went with its record
