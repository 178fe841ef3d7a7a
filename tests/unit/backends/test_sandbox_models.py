"""Models returned in HTCondor sandboxes: a failed upload is tried again with a growing wait (virtual time), a
bounded number of times, and then given up and said, never dropped silently."""

from __future__ import annotations

import pytest

from hpscan.api.contract import MODEL_FILE, MODELS_DIR, ResultRecord
from hpscan.api.spec import HPScanSpec
from hpscan.backends import sandbox_models
from hpscan.backends.base import ScanRef
from hpscan.backends.htcondor import HTCondorBackend
from hpscan.backends.sandbox_models import UPLOAD_TRIES, SandboxModels
from hpscan.core.artifacts import retry_delay
from hpscan.errors import ArtifactStoreError

STORE = {"endpoint": "https://s3.cern.ch", "bucket": "atlas-ftag", "secretRef": {"name": "s3"}}
SCAN = ScanRef(name="dl1", namespace="atlas", uid="u-1")


class FlakyStore:
    """Refuses the first ``refusals`` uploads (the store is down), then takes them."""

    def __init__(self, refusals: int):
        self.refusals, self.tries, self.uploaded = refusals, 0, []

    def upload_model(self, folder, record):
        self.tries += 1
        if self.tries <= self.refusals:
            raise ArtifactStoreError("artifacts.store s3://atlas-ftag: the store does not answer", cause="down")
        self.uploaded.append(record.id)


@pytest.fixture
def returned(tmp_path, monkeypatch):
    """Two models come back in a sandbox at time 0; returns (models, store, flush at a time)."""

    def start(refusals: int):
        store = FlakyStore(refusals)
        monkeypatch.setattr(sandbox_models, "open_store", lambda *args: store)
        models = SandboxModels(lambda *args: "key", clock=lambda: 0.0)
        spec = HPScanSpec.model_validate(
            {
                "parameters": [{"name": "x", "values": [1, 2]}],
                "sharding": {"shards": 1},
                "payload": {"image": "i"},
                "artifacts": {"store": {"s3": STORE}},
            }
        )
        models.watch(SCAN, spec)
        records = []
        for combination in ("c0", "c1"):
            (tmp_path / MODELS_DIR / combination).mkdir(parents=True)
            (tmp_path / MODELS_DIR / combination / MODEL_FILE).write_text("{}")
            records.append(
                ResultRecord(id=combination, shard=0, parameters={"x": 1}, metrics={"loss": 1.0}, status="succeeded")
            )
        models.returned(SCAN, tmp_path, records)
        return models, store

    return start


def test_the_wait_doubles_up_to_a_cap_and_ends_after_the_last_try():
    assert [retry_delay(n, first=60, tries=5, cap=300) for n in range(1, 7)] == [60, 120, 240, 300, None, None]


def test_a_failed_upload_is_retried_after_a_growing_wait_and_then_uploaded(returned):
    models, store = returned(refusals=2)
    assert store.tries == 1 and models.pending(SCAN) == 2
    models.flush(SCAN, now=59.0)
    assert store.tries == 1  # not before the wait: no retry storm
    models.flush(SCAN, now=60.0)
    assert store.tries == 2 and models.pending(SCAN) == 2  # failed again: the wait doubles
    models.flush(SCAN, now=60.0 + 119.0)
    assert store.tries == 2
    models.flush(SCAN, now=60.0 + 120.0)
    assert models.pending(SCAN) == 0 and store.uploaded == ["c0", "c1"]
    assert models.uploads(SCAN).lost == set()


def test_uploads_that_keep_failing_are_given_up_and_said(returned, caplog):
    models, store = returned(refusals=10**6)
    now = 0.0
    for _ in range(UPLOAD_TRIES + 3):
        now += 10_000.0  # past any wait
        models.flush(SCAN, now=now)
    uploads = models.uploads(SCAN)
    assert store.tries == UPLOAD_TRIES  # bounded
    assert models.pending(SCAN) == 0 and uploads.lost == {"c0", "c1"}
    assert "does not answer" in uploads.error
    assert any("gave up" in message for message in caplog.messages)


def test_a_deleted_scans_store_and_waiting_models_go_with_it(returned, tmp_path):
    models, _ = returned(refusals=10**6)
    assert models.pending(SCAN) == 2
    backend = HTCondorBackend(tmp_path / "condor", read_secret=lambda *args: "key")
    backend.models = models
    store = {"s3": STORE}
    spec = {"parameters": [{"name": "x", "values": [1]}], "sharding": {"shards": 1}, "payload": {"image": "i"}}
    backend.track(SCAN, HPScanSpec.model_validate({**spec, "artifacts": {"store": store}}))
    backend.forget(SCAN)
    assert models.uploads(SCAN) is None and models.pending(SCAN) == 0
