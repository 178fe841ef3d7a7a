"""Kept models in a real S3 server (versitygw, the ``s3`` fixture): upload, list, fetch and prune through
hpscan.job.store, the shard runner's uploads, and clear errors for a wrong key, a wrong secret, a missing bucket
and a store that does not answer. The scans on the local control plane are in test_operator.py.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from hpscan.api.contract import ResultRecord
from hpscan.api.spec import Artifacts, HPScanSpec
from hpscan.api.store import ModelStoreLocation, S3Store
from hpscan.core.artifacts import models_to_prune
from hpscan.core.planning import plan
from hpscan.errors import ArtifactStoreError
from hpscan.job.runner import run_shard
from hpscan.job.store import ModelStore, ModelUploader
from support.operator_support import PAYLOAD, free_port

pytestmark = pytest.mark.integration
HPSCAN = str(Path(sys.executable).parent / "hpscan")


def location(s3, bucket: str, scan: str = "scan", endpoint: str | None = None) -> ModelStoreLocation:
    store = S3Store.model_validate(
        {"endpoint": endpoint or s3.endpoint, "bucket": bucket, "prefix": "runs/hpscan", "secretRef": {"name": "s3"}}
    )
    return ModelStoreLocation.of(store, "physics", scan)


def record(combination_id: str, loss: float) -> ResultRecord:
    return ResultRecord(
        id=combination_id, shard=0, parameters={"x": loss}, metrics={"val_loss": loss}, status="succeeded"
    )


def model_folder(root: Path, combination_id: str) -> Path:
    folder = root / combination_id
    (folder / "assets").mkdir(parents=True)
    (folder / "assets" / "weights.bin").write_bytes(os.urandom(2048))
    (folder / "model.json").write_text(json.dumps({"id": combination_id, "format": "test"}))
    return folder


@pytest.fixture
def bucket(s3) -> str:
    return s3.create_bucket(f"models-{secrets.token_hex(3)}")


def test_models_go_up_under_the_scans_prefix_are_listed_fetched_and_pruned(s3, bucket, tmp_path):
    store = ModelStore(location(s3, bucket), s3.access_key, s3.secret_key)
    store.check()
    losses = {f"c{i}-abc": 1.0 + i / 10 for i in range(7)}
    for combination, loss in losses.items():
        assert store.upload_model(model_folder(tmp_path / "out", combination), record(combination, loss)) == 3
    assert s3.keys(bucket, "runs/hpscan/physics/scan/c0-abc/") == [
        "runs/hpscan/physics/scan/c0-abc/assets/weights.bin",
        "runs/hpscan/physics/scan/c0-abc/model.json",
        "runs/hpscan/physics/scan/c0-abc/record.json",
    ]
    # A folder whose model.json did not arrive (an upload that broke off) is not a model.
    s3.client().put_object(Bucket=bucket, Key="runs/hpscan/physics/scan/c9-half/assets/weights.bin", Body=b"x")
    stored = store.models()
    assert set(stored) == set(losses) and stored["c3-abc"] == record("c3-abc", 1.3)

    fetched = tmp_path / "fetched"
    assert store.download_model("c2-abc", fetched) == 3
    original = tmp_path / "out" / "c2-abc"
    assert (fetched / "assets" / "weights.bin").read_bytes() == (original / "assets" / "weights.bin").read_bytes()
    assert json.loads((fetched / "record.json").read_text())["metrics"] == {"val_loss": 1.2}
    with pytest.raises(ArtifactStoreError, match="no whole model of c9-half"):
        store.download_model("c9-half", tmp_path / "half")

    objective = HPScanSpec.model_validate(
        {"parameters": [{"name": "x", "values": [1]}], "sharding": {"shards": 1}, "payload": {"image": "i"}}
    ).objective
    doomed = models_to_prune(stored, objective, Artifacts(keep="top", top=2))
    assert doomed == {"c2-abc", "c4-abc", "c5-abc"}  # kept: the best two, the median (c3) and the worst (c6)
    assert store.delete_models(doomed) == 9
    assert set(store.models()) == {"c0-abc", "c1-abc", "c3-abc", "c6-abc"}
    # Other scans' models are never touched: the prefix is the scan's.
    other = ModelStore(location(s3, bucket, scan="other"), s3.access_key, s3.secret_key)
    other.upload_model(model_folder(tmp_path / "o", "c0-abc"), record("c0-abc", 9.0))
    store.delete_models(["c0-abc"])
    assert set(other.models()) == {"c0-abc"}


@pytest.mark.parametrize(
    ("keys", "bucket_name", "code", "cause"),
    [
        ("wrong-key", None, "XAdminUserNotFound", "the access key id is not known to the store"),
        ("wrong-secret", None, "SignatureDoesNotMatch", "the secret access key does not match the access key id"),
        ("right", "no-such-bucket", "NoSuchBucket", "the bucket does not exist"),
    ],
)
def test_a_wrong_credential_or_a_missing_bucket_names_the_cause(s3, bucket, keys, bucket_name, code, cause):
    access, secret = {
        "wrong-key": ("nobody", s3.secret_key),
        "wrong-secret": (s3.access_key, "not-the-secret"),
        "right": (s3.access_key, s3.secret_key),
    }[keys]
    store = ModelStore(location(s3, bucket_name or bucket), access, secret)
    with pytest.raises(ArtifactStoreError) as raised:
        store.check()
    message = str(raised.value)
    assert f"s3://{bucket_name or bucket}/runs/hpscan/physics/scan/ at {s3.endpoint}" in message
    assert code in message and cause in message and raised.value.final


def test_a_store_that_does_not_answer_is_said_so_and_may_be_retried(s3, bucket):
    silent = f"http://127.0.0.1:{free_port()}"
    store = ModelStore(location(s3, bucket, endpoint=silent), s3.access_key, s3.secret_key)
    with pytest.raises(ArtifactStoreError, match=f"the store does not answer at {silent}") as raised:
        store.check()
    assert not raised.value.final


class Collect:
    """A live channel that keeps what it is given (what the operator would read)."""

    def __init__(self) -> None:
        self.records: list[ResultRecord] = []

    def recorded(self) -> list[ResultRecord]:
        return []

    def publish(self, records: list[ResultRecord]) -> None:
        self.records += records


def shard_file(tmp_path: Path, save_models: bool = True) -> Path:
    spec = HPScanSpec.model_validate(
        {
            "parameters": [{"name": "x", "values": [1, 2, 3, 4, 5]}],
            "sharding": {"shards": 1},
            "payload": {"image": "i", "command": [sys.executable, str(PAYLOAD)]},
            "artifacts": {"keep": "top" if save_models else "none"},
        }
    )
    path = tmp_path / "shard.json"
    path.write_text(plan("scan", spec).shard_file(0).model_dump_json(by_alias=True))
    return path


def test_the_shard_runner_uploads_each_model_with_its_record_and_frees_the_folder(s3, bucket, tmp_path):
    where = location(s3, bucket)
    env = {
        **os.environ,
        "HPSCAN_MODEL_STORE": where.model_dump_json(by_alias=True),
        "AWS_ACCESS_KEY_ID": s3.access_key,
        "AWS_SECRET_ACCESS_KEY": s3.secret_key,
    }
    out = tmp_path / "out"
    done = subprocess.run(
        [HPSCAN, "shard-run", str(shard_file(tmp_path)), "--out", str(out), "--", sys.executable, str(PAYLOAD)],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    published = [json.loads(line.removeprefix("hpscan-record ")) for line in done.stdout.splitlines()]
    assert len(published) == 5
    store = ModelStore(where, s3.access_key, s3.secret_key)
    stored = store.models()
    assert set(stored) == {r["id"] for r in published}
    assert all(stored[r["id"]] == ResultRecord.model_validate(r) for r in published)
    assert not any((out / "models").iterdir())  # uploaded folders leave the pod's emptyDir


@pytest.mark.parametrize(
    ("change", "exit_code", "says"),
    [
        ({"AWS_SECRET_ACCESS_KEY": "not-the-secret"}, 2, "SignatureDoesNotMatch"),
        ({"bucket": "no-such-bucket"}, 2, "NoSuchBucket"),
        ({"AWS_SECRET_ACCESS_KEY": ""}, 2, "AWS_SECRET_ACCESS_KEY not set"),
        ({"endpoint": "silent"}, 1, "the store does not answer"),
    ],
)
def test_a_shard_job_with_a_broken_store_stops_before_training_naming_the_cause(
    s3, bucket, tmp_path, change, exit_code, says
):
    endpoint = f"http://127.0.0.1:{free_port()}" if change.get("endpoint") == "silent" else None
    where = location(s3, change.get("bucket", bucket), endpoint=endpoint)
    env = {
        **os.environ,
        "HPSCAN_MODEL_STORE": where.model_dump_json(by_alias=True),
        "AWS_ACCESS_KEY_ID": s3.access_key,
        "AWS_SECRET_ACCESS_KEY": change.get("AWS_SECRET_ACCESS_KEY", s3.secret_key),
    }
    out = tmp_path / "out"
    done = subprocess.run(
        [HPSCAN, "shard-run", str(shard_file(tmp_path)), "--out", str(out), "--", sys.executable, str(PAYLOAD)],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == exit_code, done.stderr
    last_line = done.stderr.strip().splitlines()[-1]  # what a pod's termination message shows
    assert says in last_line and where.bucket in last_line
    assert not (out / "trained.log").exists()  # nothing trained: no GPU time spent on models nobody keeps


def test_uploads_that_fail_mid_run_lose_no_record(s3, bucket, tmp_path, capsys):
    """Credentials revoked while a shard runs: every record is still published, the models stay in the folder, and
    the cause is said once (after a refusal the uploads wait 30 s, so a dead store never slows the records)."""
    revoked = ModelStore(location(s3, bucket), s3.access_key, "revoked-secret")
    uploader = ModelUploader(revoked, tmp_path / "out")
    channel = Collect()
    code = run_shard(
        [sys.executable, str(PAYLOAD)], shard_file(tmp_path), tmp_path / "out", channel, 0.05, keep_models=uploader
    )
    assert code == 0 and len(channel.records) == 5
    uploader.finish()
    assert sorted(uploader.pending) == sorted(r.id for r in channel.records) and uploader.uploaded == 0
    assert all((tmp_path / "out" / "models" / r.id / "model.json").exists() for r in channel.records)
    said = capsys.readouterr().err
    assert said.count("SignatureDoesNotMatch") == 1 and "the records go on" in said
    assert s3.keys(bucket) == []


def test_htcondor_models_come_back_in_the_sandbox_and_the_operator_uploads_them(s3, bucket, tmp_path):
    """The HTCondor backend against the schedd STAND-IN (hpscan.testing.condor; the real pool's transfer of a
    folder is HTCondor's own): the job returns models/ with results.jsonl, and fetch_records uploads the models of
    the records it reads. A store that refuses costs no record: the models wait in the sandbox for a later try."""
    from hpscan.backends.base import ScanRef, ShardLaunch
    from hpscan.backends.htcondor import HTCondorBackend
    from hpscan.testing.condor import ScheddStandIn

    store = {"s3": {"endpoint": s3.endpoint, "bucket": bucket, "prefix": "grid", "secretRef": {"name": "s3"}}}
    spec = HPScanSpec.model_validate(
        {
            "parameters": [{"name": "x", "values": [1, 2, 3, 4]}],
            "sharding": {"shards": 2},
            "payload": {"image": "img:1"},
            "sites": [{"name": "grid", "htcondor": {}}],
            "artifacts": {"store": store},
        }
    )
    keys = {"accessKeyId": s3.access_key, "secretAccessKey": "revoked"}
    schedd = ScheddStandIn()
    now = [0.0]
    backend = HTCondorBackend(
        tmp_path / "work", schedd_factory=lambda _site: schedd, max_age_seconds=0, clock=lambda: now[0],
        read_secret=lambda namespace, name, key: keys[key] if (namespace, name) == ("atlas", "s3") else "",
    )  # fmt: skip
    scan = ScanRef(name="dl1", namespace="atlas", uid="uid-1")
    planned = plan(scan.name, spec)
    backend.track(scan, spec)
    backend.submit(scan, spec, [ShardLaunch(planned.shard_file(i), spec.sites[0]) for i in range(2)])
    job = schedd.job_of("uid-1", 0)
    assert schedd.submitted[job]["transfer_output_files"] == "results.jsonl, checkpoints, models"

    sandbox = backend.scan_dir(scan) / "shard-000"
    lines = []
    for i, combination in enumerate(planned.shard_combinations(0)):
        done = record(combination.id, 1.0 + i)
        lines.append(json.dumps(done.to_wire()))
        model_folder(sandbox / "models", combination.id)
    schedd.start(job)
    schedd.complete(job, 0, {"results.jsonl": "\n".join(lines) + "\n"})
    assert len(backend.fetch_records(scan)) == 2  # the store refuses (a revoked secret): the records still come
    assert backend.models.pending(scan) == 2 and s3.keys(bucket) == []

    keys["secretAccessKey"] = s3.secret_key  # the Secret fixed: a cycle a minute later uploads what waits
    assert backend.fetch_records(scan) == [] and backend.models.pending(scan) == 2  # not sooner: no retry storm
    now[0] += 61
    assert backend.fetch_records(scan) == []
    assert backend.models.pending(scan) == 0
    stored = ModelStore(
        ModelStoreLocation.of(S3Store.model_validate(store["s3"]), "atlas", "dl1"), s3.access_key, s3.secret_key
    )
    assert set(stored.models()) == {c.id for c in planned.shard_combinations(0)}
    assert all(key.startswith("grid/atlas/dl1/") for key in s3.keys(bucket))
    assert not any((sandbox / "models").iterdir())
