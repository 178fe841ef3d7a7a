"""Trial checkpoints in a real S3 server (versitygw, the ``s3`` fixture), through `hpscan shard-run` as a Kubernetes
pod runs it (the store in HPSCAN_MODEL_STORE): a runner stopped by SIGTERM uploads its newest checkpoint, one
killed outright leaves what it uploaded on its interval, the next runner in an empty folder (a new pod) resumes the
trial from there, and a trial's stored checkpoint goes when its record comes. The payload is a stand-in with the
checkpoint contract (no TensorFlow); dl1 on the control plane is in test_kubernetes_checkpoints.py."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpscan.api.contract import ResultRecord
from hpscan.api.spec import HPScanSpec
from hpscan.api.store import CHECKPOINT_MANIFEST, ModelStoreLocation, S3Store
from hpscan.core.planning import plan
from hpscan.job.checkpoints import CheckpointSync
from hpscan.job.runner import run_shard
from hpscan.job.store import ModelStore

pytestmark = pytest.mark.integration
HPSCAN = str(Path(sys.executable).parent / "hpscan")

# The contract's resume: each combination trains EPOCHS epochs of 0.15 s, saving {"epoch": n} after each (written
# beside and renamed over, as dl1 does); a checkpoint found at the start is resumed and named in resumedFrom.
PAYLOAD = """
import json, os, shutil, sys, time
from pathlib import Path
shard = json.loads(Path(sys.argv[1]).read_text())
out = Path(sys.argv[sys.argv.index("--out") + 1])
results = out / "results.jsonl"
done = {json.loads(line)["id"] for line in results.read_text().splitlines()} if results.exists() else set()
for combination in shard["combinations"]:
    if combination["id"] in done:
        continue
    folder = out / "checkpoints" / combination["id"]
    state = folder / "state.json"
    start = json.loads(state.read_text())["epoch"] if state.exists() else 0
    if start:
        print(f"resuming {combination['id']} at epoch {start} from its checkpoint", file=sys.stderr, flush=True)
    for epoch in range(start + 1, EPOCHS + 1):
        time.sleep(0.15)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ".state.json.partial").write_text(json.dumps({"epoch": epoch}))
        os.replace(folder / ".state.json.partial", state)
    record = {"id": combination["id"], "shard": shard["shard"], "parameters": combination["parameters"],
              "metrics": {"val_loss": 1.0}, "status": "succeeded", "epochs": EPOCHS}
    if start:
        record["resumedFrom"] = [start]
    with results.open("a") as handle:
        handle.write(json.dumps(record) + "\\n")
    shutil.rmtree(folder)
"""
EPOCHS = 40


@pytest.fixture
def where(s3) -> ModelStoreLocation:
    bucket = s3.create_bucket(f"ckpt-{secrets.token_hex(3)}")
    store = S3Store.model_validate(
        {"endpoint": s3.endpoint, "bucket": bucket, "prefix": "scans", "secretRef": {"name": "s3"}}
    )
    return ModelStoreLocation.of(store, "physics", "resume")


def shard_file(tmp_path: Path) -> Path:
    spec = HPScanSpec.model_validate(
        {"parameters": [{"name": "x", "values": [1]}], "sharding": {"shards": 1}, "payload": {"image": "i"}}
    )
    path = tmp_path / "shard.json"
    path.write_text(plan("resume", spec).shard_file(0).model_dump_json(by_alias=True))
    return path


def start(tmp_path: Path, s3, where: ModelStoreLocation, out: str, upload_seconds: float) -> subprocess.Popen:
    payload = tmp_path / "payload.py"
    payload.write_text(PAYLOAD.replace("EPOCHS", str(EPOCHS)))
    env = {
        **os.environ,
        "HPSCAN_MODEL_STORE": where.model_dump_json(by_alias=True),
        "AWS_ACCESS_KEY_ID": s3.access_key,
        "AWS_SECRET_ACCESS_KEY": s3.secret_key,
        "HPSCAN_CHECKPOINT_UPLOAD_SECONDS": str(upload_seconds),
    }
    command = [HPSCAN, "shard-run", str(shard_file(tmp_path)), "--out", str(tmp_path / out), "--", sys.executable]
    return subprocess.Popen(
        [*command, str(payload)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # its own process group: a kill takes the payload too, as a pod's end does
    )  # fmt: skip


def stored_epochs(s3, where: ModelStoreLocation) -> dict[str, int]:
    """The epoch of each trial's newest whole stored checkpoint."""
    keys = s3.keys(where.bucket, where.checkpoints_prefix)
    whole = sorted(key.rsplit("/", 1)[0] for key in keys if key.endswith(f"/{CHECKPOINT_MANIFEST}"))
    epochs = {}
    for version in whole:  # sorted by upload time: the newest wins
        body = s3.client().get_object(Bucket=where.bucket, Key=f"{version}/state.json")["Body"].read()
        epochs[version[len(where.checkpoints_prefix) :].split("/")[0]] = json.loads(body)["epoch"]
    return epochs


def local_epoch(folder: Path) -> int:
    try:
        return json.loads(next(folder.glob("checkpoints/*/state.json")).read_text())["epoch"]
    except (StopIteration, OSError, ValueError):
        return 0


def wait(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def resume_in_a_new_folder(tmp_path: Path, s3, where: ModelStoreLocation, epoch: int) -> None:
    """A runner in an empty folder (the next pod) resumes the trial at ``epoch`` from the store; the trial's record
    then says so, and its stored checkpoint is gone."""
    again = start(tmp_path, s3, where, "second", 3600)
    stdout, stderr = again.communicate(timeout=120)
    assert again.returncode == 0, stderr
    (record,) = [json.loads(line.removeprefix("hpscan-record ")) for line in stdout.splitlines()]
    assert record["resumedFrom"] == [epoch] and record["epochs"] == EPOCHS
    assert f"restored the checkpoint of {record['id']}" in stderr
    assert f"resuming {record['id']} at epoch {epoch} from its checkpoint" in stderr
    assert s3.keys(where.bucket, where.checkpoints_prefix) == []  # pruned with the record


def test_a_runner_stopped_by_sigterm_uploads_its_newest_checkpoint_and_the_next_resumes_there(s3, where, tmp_path):
    first = start(tmp_path, s3, where, "first", 3600)  # no upload on the interval: only the one at the end
    wait(lambda: local_epoch(tmp_path / "first") >= 3, 60, "epoch 3")
    assert stored_epochs(s3, where) == {}
    os.kill(first.pid, signal.SIGTERM)  # as the kubelet does when the pod is deleted or evicted
    _, stderr = first.communicate(timeout=60)
    assert first.returncode == 128 + signal.SIGTERM, stderr
    (epoch,) = stored_epochs(s3, where).values()
    assert epoch >= 3 and epoch == local_epoch(tmp_path / "first")  # what the payload last saved
    # One whole version only: each upload deletes the trial's older ones.
    assert len([k for k in s3.keys(where.bucket, where.checkpoints_prefix) if k.endswith(CHECKPOINT_MANIFEST)]) == 1
    resume_in_a_new_folder(tmp_path, s3, where, epoch)


def test_a_runner_killed_outright_leaves_the_checkpoint_uploaded_on_its_interval(s3, where, tmp_path):
    first = start(tmp_path, s3, where, "first", 0.5)
    wait(lambda: max(stored_epochs(s3, where).values(), default=0) >= 4, 60, "epoch 4 in the store")
    os.killpg(first.pid, signal.SIGKILL)  # a node that died: no SIGTERM, no last upload
    first.communicate(timeout=30)
    (epoch,) = stored_epochs(s3, where).values()
    assert 4 <= epoch < EPOCHS
    resume_in_a_new_folder(tmp_path, s3, where, epoch)


class Collect:
    """A live channel that keeps what it is given (what the operator would read)."""

    def __init__(self) -> None:
        self.records: list[ResultRecord] = []

    def recorded(self) -> list[ResultRecord]:
        return []

    def publish(self, records: list[ResultRecord]) -> None:
        self.records += records


def test_a_store_that_refuses_costs_no_record_and_is_said_once(s3, where, tmp_path, capsys):
    """Credentials revoked: the restore and every upload fail, the trial trains on and its record is published; the
    cause is said once, not once per try."""
    payload = tmp_path / "payload.py"
    payload.write_text(PAYLOAD.replace("EPOCHS", "10"))
    revoked = ModelStore(where, s3.access_key, "revoked-secret")
    sync = CheckpointSync(revoked, tmp_path / "out", every_seconds=0.2)
    channel = Collect()
    code = run_shard(
        [sys.executable, str(payload)], shard_file(tmp_path), tmp_path / "out", channel, 0.05, checkpoints=sync
    )
    assert code == 0 and [r.status for r in channel.records] == ["succeeded"]
    said = capsys.readouterr().err
    assert said.count("SignatureDoesNotMatch") == 1 and sync.uploads == 0
    assert s3.keys(where.bucket) == []


def test_a_finished_scan_leaves_no_checkpoint_of_trials_that_never_ended(s3, where, tmp_path):
    """The operator's prune at the scan's end (controller.reconcile.prune_models) removes what a shard that failed
    for good left under _checkpoints/, and keeps the models spec.artifacts keeps."""
    from hpscan.backends.base import ScanRef
    from hpscan.controller.reconcile import prune_models

    store = ModelStore(where, s3.access_key, s3.secret_key)
    folder = tmp_path / "models" / "c1-a"
    folder.mkdir(parents=True)
    (folder / "model.json").write_text("{}")
    store.upload_model(
        folder, ResultRecord(id="c1-a", shard=0, parameters={}, metrics={"val_loss": 1.0}, status="succeeded")
    )
    store.put(where.checkpoint_key("c2-b", "0000000001000-aaaaaa", "state.json"), b'{"epoch": 3}')
    store.put(where.checkpoint_key("c2-b", "0000000001000-aaaaaa", CHECKPOINT_MANIFEST), b"{}")
    spec = HPScanSpec.model_validate(
        {
            "parameters": [{"name": "x", "values": [1, 2]}],
            "sharding": {"shards": 1},
            "payload": {"image": "i"},
            "artifacts": {"store": {"s3": {"endpoint": s3.endpoint, "bucket": where.bucket, "prefix": "scans",
                                           "secretRef": {"name": "s3"}}}},
        }
    )  # fmt: skip
    keys = {"accessKeyId": s3.access_key, "secretAccessKey": s3.secret_key}
    event = prune_models(ScanRef("resume", "physics", "u"), spec, lambda _ns, _name, key: keys[key])
    assert event is not None and event.type == "Normal", event
    assert s3.keys(where.bucket, where.checkpoints_prefix) == []
    assert set(store.models()) == {"c1-a"}
