"""The operator's side of a moved batch shard's checkpoints (hpscan.backends.sandbox_checkpoints) against a real S3
server (versitygw): a cancelled job's folder uploaded in the Kubernetes runner's layout, restored into another
site's folder for that shard's trials only, a local copy replaced only when the stored one is newer, and the stored
checkpoint deleted when the trial's record comes. The whole move on real HTCondor and Slurm jobs runs in
tests/integration/slurm/test_checkpoints_follow_a_moved_shard.py."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import pytest

from hpscan.api.contract import ResultRecord
from hpscan.api.spec import HPScanSpec
from hpscan.api.store import CHECKPOINT_MANIFEST, ModelStoreLocation
from hpscan.backends.base import ScanRef
from hpscan.backends.sandbox_checkpoints import SandboxCheckpoints
from hpscan.core.planning import plan

pytestmark = pytest.mark.integration
SCAN = ScanRef(name="moved", namespace="physics", uid="u-moved")


def save(folder: Path, trial: str, epoch: int) -> None:
    """What a payload leaves in its folder: checkpoints/<id>/state.json."""
    (folder / "checkpoints" / trial).mkdir(parents=True, exist_ok=True)
    (folder / "checkpoints" / trial / "state.json").write_text(f'{{"epoch": {epoch}}}')


def epoch_in(folder: Path, trial: str) -> int:
    return int((folder / "checkpoints" / trial / "state.json").read_text().split(":")[1].strip(" }"))


def test_a_cancelled_folder_goes_up_and_comes_down_for_its_shards_trials_until_their_records(s3, tmp_path):
    bucket = s3.create_bucket(f"moved-{secrets.token_hex(3)}")
    store = {"endpoint": s3.endpoint, "bucket": bucket, "prefix": "scans", "secretRef": {"name": "s3"}}
    spec = HPScanSpec.model_validate(
        {"parameters": [{"name": "x", "values": [1, 2, 3, 4]}], "sharding": {"shards": 2}, "payload": {"image": "i"},
         "artifacts": {"keep": "none", "store": {"s3": store}}}
    )  # fmt: skip
    prefix = ModelStoreLocation.of(spec.artifacts.store.s3, SCAN.namespace, SCAN.name).checkpoints_prefix
    keys = {"accessKeyId": s3.access_key, "secretAccessKey": s3.secret_key}
    checkpoints = SandboxCheckpoints(read_secret=lambda namespace, name, key: keys[key])
    checkpoints.watch(SCAN, spec)
    planned = plan("moved", spec)
    first, second = (c.id for c in planned.shard_file(0).combinations)
    other_shard = planned.shard_file(1).combinations[0].id

    left = tmp_path / "slurm-site"  # the folder the cancelled job trained in
    for trial, epoch in ((first, 5), (second, 4), (other_shard, 7)):
        save(left, trial, epoch)
    assert checkpoints.upload(SCAN, left, recorded={other_shard}) == {first, second}  # a recorded trial stays
    manifests = [key for key in s3.keys(bucket, prefix) if key.endswith(CHECKPOINT_MANIFEST)]
    assert sorted(key[len(prefix) :].split("/")[0] for key in manifests) == sorted([first, second])

    arrived = tmp_path / "htcondor-sandbox"  # the shard's next job, at another site
    save(arrived, first, 2)  # an older local copy of its own (written before the upload): replaced
    old = arrived / "checkpoints" / first / "state.json"
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    restored = checkpoints.restore(SCAN, arrived, planned.shard_file(0))
    assert set(restored) == {first, second}
    assert (epoch_in(arrived, first), epoch_in(arrived, second)) == (5, 4)
    assert not (arrived / "checkpoints" / other_shard).exists()  # another shard's trial: not this job's

    newer = tmp_path / "newer"  # a folder trained past the stored version since: kept
    save(newer, first, 9)
    assert first not in checkpoints.restore(SCAN, newer, planned.shard_file(0))
    assert epoch_in(newer, first) == 9

    record = ResultRecord.model_validate(
        {"id": first, "shard": 0, "parameters": {"x": 1}, "status": "succeeded", "metrics": {"val_loss": 1.0}}
    )
    checkpoints.recorded(SCAN, [record])
    assert {key[len(prefix) :].split("/")[0] for key in s3.keys(bucket, prefix)} == {second}  # pruned with its record
