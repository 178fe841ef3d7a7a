"""A batch shard's trial checkpoints carried by the operator (hpscan.backends.sandbox_checkpoints): which trials a
shard restores, which a cancel uploads, which stored ones a record deletes, and a store that cannot be opened costing
nothing but a log line. The uploads and downloads run against a real S3 server and real HTCondor and Slurm jobs in
tests/integration/slurm/test_checkpoints_follow_a_moved_shard.py."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from hpscan.api.contract import ResultRecord
from hpscan.api.spec import HPScanSpec
from hpscan.api.status import Reason, ShardPhase, ShardStatus
from hpscan.backends.base import ScanRef
from hpscan.backends.sandbox_checkpoints import (
    PAUSE_SECONDS,
    SandboxCheckpoints,
    leaves_its_site,
    local_trials,
    recorded_in,
    shard_trials,
    to_forget,
    to_upload,
)
from hpscan.core.planning import plan

SCAN = ScanRef(name="dl1", namespace="physics", uid="u-1")
STORE = {"endpoint": "http://127.0.0.1:9", "bucket": "b-1", "prefix": "scans", "secretRef": {"name": "s3"}}


def spec(store: dict | None) -> HPScanSpec:
    artifacts = {"artifacts": {"store": {"s3": store}}} if store else {}
    return HPScanSpec.model_validate(
        {"parameters": [{"name": "x", "values": [1, 2, 3, 4]}], "sharding": {"shards": 2}, "payload": {"image": "i"},
         **artifacts}
    )  # fmt: skip


def record(trial: str) -> ResultRecord:
    return ResultRecord.model_validate(
        {"id": trial, "shard": 0, "parameters": {"x": 1}, "status": "succeeded", "metrics": {"val_loss": 1.0}}
    )


def test_a_shard_restores_the_trials_of_its_own_file_only():
    planned = plan("dl1", spec(STORE))
    first, second = planned.shard_file(0), planned.shard_file(1)
    assert shard_trials(first) == {c.id for c in first.combinations} and len(shard_trials(first)) == 2
    assert not shard_trials(first) & shard_trials(second)
    assert shard_trials(first.model_copy(update={"combinations": []})) == set()  # nothing left: nothing restored


def test_a_cancel_uploads_the_folders_checkpoints_of_unrecorded_trials(tmp_path: Path):
    for trial in ("c1-a", "c2-b", ".c3-c.download"):
        (tmp_path / "checkpoints" / trial).mkdir(parents=True)
    (tmp_path / "checkpoints" / "stray-file").write_text("")
    assert local_trials(tmp_path) == {"c1-a", "c2-b"}  # a hidden folder is a partial download
    assert local_trials(tmp_path / "none") == set()
    assert to_upload({"c1-a", "c2-b"}, {"c2-b", "c9-z"}) == {"c1-a"}  # c2-b recorded before its folder went


def test_a_record_deletes_the_stored_checkpoints_the_operator_knows_of():
    assert to_forget({"c1-a", "c2-b"}, [record("c2-b"), record("c5-e")]) == {"c2-b"}


def test_recorded_ids_are_read_from_a_results_file(tmp_path: Path):
    results = tmp_path / "results.jsonl"
    assert recorded_in(results) == set()
    results.write_text(record("c1-a").model_dump_json(by_alias=True) + "\nnot json\n")
    assert recorded_in(results) == {"c1-a"}


def test_a_scan_without_a_store_restores_and_uploads_nothing(tmp_path: Path):
    checkpoints = SandboxCheckpoints(read_secret=lambda *_: pytest.fail("no store: no Secret read"))
    checkpoints.watch(SCAN, spec(None))
    (tmp_path / "checkpoints" / "c1-a").mkdir(parents=True)
    assert checkpoints.restore(SCAN, tmp_path, plan("dl1", spec(None)).shard_file(0)) == {}
    assert checkpoints.upload(SCAN, tmp_path, set()) == set()


def test_a_store_whose_secret_cannot_be_read_costs_one_log_line_and_no_checkpoint(tmp_path: Path, caplog):
    def no_secret(namespace: str, name: str, key: str) -> str:
        raise KeyError(f"{namespace}/{name} has no {key}")

    checkpoints = SandboxCheckpoints(read_secret=no_secret)
    checkpoints.watch(SCAN, spec(STORE))
    (tmp_path / "checkpoints" / "c1-a").mkdir(parents=True)
    with caplog.at_level(logging.WARNING, logger="hpscan.backends.sandbox_checkpoints"):
        assert checkpoints.restore(SCAN, tmp_path, plan("dl1", spec(STORE)).shard_file(0)) == {}
        assert checkpoints.upload(SCAN, tmp_path, set()) == set()
        assert checkpoints.upload(SCAN, tmp_path, set()) == set()
    (warning,) = caplog.records  # once per cause, not once per call
    assert "Secret physics/s3" in warning.getMessage() and "epoch 0" in warning.getMessage()
    assert (tmp_path / "checkpoints" / "c1-a").is_dir()  # the folder's own stays


@pytest.mark.parametrize(
    ("phase", "reason", "leaves"),
    [
        (ShardPhase.FAILED, Reason.GPU_UNAVAILABLE, True),  # exit 3: the shard moves, its checkpoints go up
        (ShardPhase.FAILED, Reason.PAYLOAD_FAILED, False),  # retried where it is, in the folder that keeps them
        (ShardPhase.RUNNING, None, False),
        (ShardPhase.SUCCEEDED, None, False),
    ],
)
def test_a_job_that_ended_because_its_site_failed_it_uploads_its_checkpoints(phase, reason, leaves):
    assert leaves_its_site(ShardStatus(index=0, phase=phase, reason=reason)) is leaves


def test_the_checkpoints_of_a_job_that_left_its_site_go_up_once_per_job_and_a_failed_store_is_paused(tmp_path: Path):
    opened: list[str] = []
    now = [1000.0]

    def no_secret(namespace: str, name: str, key: str) -> str:
        opened.append(key)  # each upload opens the store: its first key is asked for
        raise KeyError(key)

    checkpoints = SandboxCheckpoints(read_secret=no_secret, clock=lambda: now[0])
    checkpoints.watch(SCAN, spec(STORE))
    (tmp_path / "checkpoints" / "c1-a").mkdir(parents=True)
    failed = ShardStatus(index=0, phase=ShardPhase.FAILED, reason=Reason.GPU_UNAVAILABLE, job="7")
    checkpoints.left(SCAN, failed, tmp_path, set())
    checkpoints.left(SCAN, failed, tmp_path, set())  # the next poll of the same ended job
    assert len(opened) == 1
    checkpoints.left(SCAN, failed.model_copy(update={"job": "8"}), tmp_path, set())  # another job, the store paused
    assert len(opened) == 1
    now[0] += PAUSE_SECONDS
    checkpoints.left(SCAN, failed.model_copy(update={"job": "9"}), tmp_path, set())  # tried again after the pause
    checkpoints.left(SCAN, failed.model_copy(update={"phase": ShardPhase.RUNNING, "job": "10"}), tmp_path, set())
    assert len(opened) == 2
