"""What the checkpoint tests share (payload/dl1/checkpoint.py, job/checkpoints.py, docs/checkpoints.md): the dl1 scan
they interrupt, the epoch each checkpoint holds (in a run folder or the scan's object store), the same scan trained
in one go by `hpscan run`, and, on Kubernetes (the test node agent's pods and the real node's), a shard pod deleted
once a trial's epoch k reached the store and what the Job's next pod must show: every trial in flight resumed at
its stored epoch and records equal to the uninterrupted run's."""

from __future__ import annotations

import copy
import io
import json
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

HPSCAN = str(Path(sys.executable).parent / "hpscan")
WALL_TIME_METRICS = {"inference_ms_per_1k_jets"}
"""dl1's measured wall time (record_metrics.py): what the machine's load says, not what training did."""
TOLERANCE = 1e-6
"""Relative, per metric: docs/checkpoints.md measured bitwise equality on CPU and allows this much."""


def resume_scan(image: str, *, epochs: int, batch_size: int, jets: int, retries: int, name: str = "resume") -> dict:
    """Three dl1 trials in one shard, fused two by two (so a fused group and a lone trial are in flight), no early
    stopping: an interrupted trial has epochs left to resume."""
    return {
        "apiVersion": "hpscan.io/v1alpha1",
        "kind": "HPScan",
        "metadata": {"name": name},
        "spec": {
            "parameters": [{"name": "layer1", "values": [16, 24, 32]}],
            "sharding": {"shards": 1},
            "retries": retries,
            "gpu": {"count": 0, "required": False},
            "payload": {
                "image": image,
                "settings": {
                    "epochs": epochs,
                    "patience": 0,
                    "batch_size": batch_size,
                    "fuse": 2,
                    "data": {"synthetic": {"jets": jets, "seed": 1}},
                },
            },
        },
    }


def saved_epochs(paths: Iterable[Path]) -> dict[str, int]:
    """The epoch of each trial's checkpoint (``checkpoints/<id>/state.npz``), by trial id; one being replaced while
    read is left out."""
    import numpy as np

    epochs = {}
    for path in paths:
        try:
            with np.load(path) as stored:
                epochs[path.parent.name] = json.loads(str(stored["meta"]))["epoch"]
        except (OSError, ValueError, KeyError):
            continue  # replaced while read
    return epochs


def stored_epochs(s3: Any, bucket: str, prefix: str) -> dict[str, int]:
    """The epoch of each trial's newest whole checkpoint in the store (dl1's state.npz under ``prefix``)."""
    import numpy as np

    from hpscan.api.store import CHECKPOINT_MANIFEST

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


def uninterrupted(scan: dict, tmp_path: Path) -> dict[str, dict]:
    """The scan's records from `hpscan run` (the local backend, this machine's TensorFlow), trained in one go."""
    local = copy.deepcopy(scan)
    local["spec"].pop("sites", None)  # a Kubernetes site's placement means nothing to `hpscan run`
    manifest = tmp_path / "uninterrupted.yaml"
    manifest.write_text(yaml.safe_dump(local))
    run = tmp_path / "uninterrupted"
    done = subprocess.run(
        [HPSCAN, "run", str(manifest), "--out", str(run), "--plain"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {r["id"]: r for r in map(json.loads, (run / "results.jsonl").read_text().splitlines())}


def assert_same_training(records: dict[str, dict], expected: dict[str, dict]) -> None:
    """Every trial recorded once, with the uninterrupted run's status, epochs and trained metrics (TOLERANCE)."""
    assert sorted(records) == sorted(expected)
    for trial, record in expected.items():
        again = records[trial]
        assert (again["status"], again["epochs"]) == (record["status"], record["epochs"]), trial
        trained = {name: value for name, value in record["metrics"].items() if name not in WALL_TIME_METRICS}
        assert {name: again["metrics"][name] for name in trained} == pytest.approx(trained, rel=TOLERANCE), trial


def delete_pod_once_stored(cluster: Any, core: Any, ns: str, scan: str, store: tuple[Any, str, str],
                           epoch: int, epochs: int) -> tuple[str, dict[str, int]]:  # fmt: skip
    """Delete the scan's one shard pod once a trial's checkpoint of ``epoch`` or later is in the store (``store``:
    the S3 server, the bucket and the scan's ``_checkpoints/`` prefix), and wait until it is gone: its name and the
    epochs in flight that the Job's next pod finds there."""
    s3, bucket, prefix = store
    uploaded = cluster.wait(
        lambda: {t: e for t, e in stored_epochs(s3, bucket, prefix).items() if e >= epoch}, 600, f"epoch {epoch} stored"
    )
    (pod,) = core.list_namespaced_pod(ns, label_selector=f"hpscan.io/scan={scan}").items
    first = pod.metadata.name
    core.delete_namespaced_pod(first, ns)  # the kubelet's SIGTERM, then SIGKILL after the grace period (30 s)
    cluster.wait(
        lambda: first not in {p.metadata.name for p in core.list_namespaced_pod(ns).items}, 90, f"pod {first} gone"
    )
    in_flight = stored_epochs(s3, bucket, prefix)  # the periodic uploads, or the last one after the SIGTERM
    assert in_flight and all(in_flight.get(t, 0) >= e for t, e in uploaded.items()), (uploaded, in_flight)
    assert all(e < epochs for e in in_flight.values()), f"deleted too late to test a resume: {in_flight}"
    return first, in_flight


def assert_resumed(status: dict, log: str, records: dict[str, dict], in_flight: dict[str, int], prefix: str) -> None:
    """The scan Succeeded, and the next pod's log, the records and the status say each trial in flight resumed at
    its stored epoch (and no other trial resumed)."""
    assert status["phase"] == "Succeeded", status
    assert status["training"]["epochsResumed"] == sum(in_flight.values()), status["training"]
    for trial, epoch in in_flight.items():
        assert f"restored the checkpoint of {trial} from {prefix}{trial}/" in log, log[-3000:]
        assert f"resuming {trial} at epoch {epoch} from its checkpoint" in log, log[-3000:]
    assert {t: records[t].get("resumedFrom") for t in in_flight} == {t: [e] for t, e in in_flight.items()}
    assert all("resumedFrom" not in r for t, r in records.items() if t not in in_flight)


def results(cluster: Any, ns: str, scan: str) -> dict[str, dict]:
    """The scan's records as `hpscan results` reads them from the cluster, by trial id (each id once)."""
    done = subprocess.run(
        [HPSCAN, "results", scan, "-n", ns], env=cluster.env(), capture_output=True, text=True, check=True
    )
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    by_id = {r["id"]: r for r in lines}
    assert len(by_id) == len(lines), f"a record twice: {sorted(r['id'] for r in lines)}"
    return by_id
