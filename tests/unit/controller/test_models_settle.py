"""A finished scan's store is settled before the operator leaves the scan alone: returned models whose upload
failed are tried again (the prune waits for them: it ranks every model), a failed prune is tried again after a
doubling wait, and status.models, the ModelsStored condition and the Events say what happened."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hpscan.api.contract import MODEL_FILE, MODELS_DIR, ResultRecord
from hpscan.api.spec import HPScan
from hpscan.api.status import ShardPhase, ShardStatus
from hpscan.backends import sandbox_models
from hpscan.backends.base import Backend, ScanRef
from hpscan.backends.sandbox_models import SandboxModels
from hpscan.controller import reconcile
from hpscan.controller.reconcile import PRUNE_TRIES, reconcile_scan, settle_models
from hpscan.core.planning import plan
from hpscan.errors import ArtifactStoreError

STORE = {"endpoint": "https://s3.cern.ch", "bucket": "atlas-ftag", "secretRef": {"name": "s3"}}
REF = ScanRef(name="small", namespace="atlas", uid="u-small")
DOCUMENT = {
    "apiVersion": "hpscan.io/v1alpha1",
    "kind": "HPScan",
    "metadata": {"name": "small", "namespace": "atlas", "uid": "u-small", "generation": 1},
    "spec": {
        "parameters": [{"name": "x", "values": [1, 2, 3, 4]}],
        "sharding": {"shards": 1},
        "payload": {"image": "img:1", "command": ["my-payload"]},  # no checker: x is not a dl1 parameter
        "artifacts": {"keep": "top", "top": 1, "store": {"s3": STORE}},
    },
}
RECORDS = [
    ResultRecord(id=c.id, shard=0, parameters=c.parameters, metrics={"val_loss": float(i)}, status="succeeded")
    for i, c in enumerate(plan("small", HPScan.model_validate(DOCUMENT).spec).combinations())
]  # val_loss 0, 1, 2, 3: the best, the median (rank 1) and the worst are kept


class Bucket:
    """The scan's store: models by id; ``down`` refuses every call."""

    class location:  # stands in for ModelStoreLocation
        url = "s3://atlas-ftag/hpscan/atlas/small/"
        checkpoints_prefix = "hpscan/atlas/small/_checkpoints/"

    def __init__(self):
        self.stored: dict[str, ResultRecord] = {}
        self.checkpoints: list[str] = []  # keys of trial checkpoints left behind
        self.down = False
        self.prunes = 0

    def _answer(self):
        if self.down:
            raise ArtifactStoreError("artifacts.store s3://atlas-ftag: the store does not answer", cause="down")

    def upload_model(self, folder, record):
        self._answer()
        self.stored[record.id] = record

    def models(self):
        self.prunes += 1
        self._answer()
        return dict(self.stored)

    def delete_models(self, ids):
        for i in ids:
            del self.stored[i]

    def keys(self, prefix):  # the real store's removal: tests/integration/store/test_checkpoint_store.py
        return [key for key in self.checkpoints if key.startswith(prefix)]

    def delete_keys(self, keys):
        self.checkpoints = [key for key in self.checkpoints if key not in keys]
        return len(keys)


class FinishedBackend(Backend):
    """One shard, succeeded with RECORDS; returns its models in a sandbox like the HTCondor backend."""

    name = "kubernetes"

    def __init__(self, clock):
        self.models = SandboxModels(lambda *args: "key", clock=clock)

    def submit(self, scan, spec, launches):
        pass

    def poll(self, scan):
        return {0: ShardStatus(index=0, phase=ShardPhase.SUCCEEDED)}

    def fetch_records(self, scan):
        return list(RECORDS)

    def cancel(self, scan, shards=None):
        pass


@pytest.fixture
def bucket(monkeypatch):
    store = Bucket()
    monkeypatch.setattr(sandbox_models, "open_store", lambda *args: store)
    monkeypatch.setattr(reconcile, "open_store", lambda *args: store)
    return store


def with_status(outcome) -> dict:
    return {**DOCUMENT, "status": outcome.status.model_dump(mode="json", by_alias=True, exclude_none=True)}


def condition(outcome):
    return next((c.status, c.reason) for c in outcome.status.conditions if c.type == "ModelsStored")


def test_a_finished_scan_uploads_what_waits_then_prunes_then_is_left_alone(tmp_path, bucket):
    clock = [0.0]
    backend = FinishedBackend(lambda: clock[0])
    backend.models.watch(REF, HPScan.model_validate(DOCUMENT).spec)
    bucket.stored = {r.id: r for r in RECORDS[:2]}  # c2 and c3 came back while the store was down
    bucket.down = True
    for record in RECORDS[2:]:
        (tmp_path / MODELS_DIR / record.id).mkdir(parents=True)
        (tmp_path / MODELS_DIR / record.id / MODEL_FILE).write_text("{}")
    backend.models.returned(REF, tmp_path, RECORDS[2:])
    bucket.down = False

    first = reconcile_scan(DOCUMENT, {"kubernetes": backend}, read_secret=lambda *args: "key")
    assert first.status.phase == "Succeeded"
    assert bucket.prunes == 0  # not over half the models: the ranking needs every one
    assert first.status.models.waiting == 2 and not first.status.models.settled
    assert condition(first) == ("False", "ModelsPending")
    assert "ModelsPending" in [e.reason for e in first.events]

    clock[0] += 60  # the upload's wait is over
    second = reconcile_scan(with_status(first), {"kubernetes": backend}, read_secret=lambda *args: "key")
    assert sorted(bucket.stored) == sorted(RECORDS[i].id for i in (0, 1, 3))  # best, median, worst of all four
    assert second.status.models.waiting == 0 and second.status.models.settled
    assert condition(second) == ("True", "ModelsKept")
    assert [(e.type, e.reason) for e in second.events] == [("Normal", "ModelsKept")]
    assert "kept 3 of 4" in second.events[0].message

    assert reconcile_scan(with_status(second), {"kubernetes": backend}, read_secret=lambda *args: "key").status is None


def test_a_failed_prune_is_tried_again_after_a_doubling_wait_then_given_up(bucket):
    status = reconcile_scan(DOCUMENT, {"kubernetes": FinishedBackend(lambda: 0.0)}).status  # no secret: no prune
    assert status.phase == "Succeeded" and status.models is not None
    spec = HPScan.model_validate(DOCUMENT).spec
    bucket.down = True
    start = datetime(2025, 1, 1, tzinfo=UTC)
    status, events = settle_models(REF, spec, status, {}, lambda *args: "key", start)
    assert bucket.prunes == 1 and status.models.prune_failures == 1 and not status.models.settled
    assert status.models.retry_at == start + timedelta(seconds=60)
    assert [(e.type, e.reason) for e in events] == [("Warning", "ArtifactStoreFailed")]
    assert "does not answer" in events[0].message and "again in 60 s" in events[0].message

    status, events = settle_models(REF, spec, status, {}, lambda *args: "key", start + timedelta(seconds=59))
    assert bucket.prunes == 1 and events == []  # the wait runs
    now = start + timedelta(seconds=60)
    status, events = settle_models(REF, spec, status, {}, lambda *args: "key", now)
    assert bucket.prunes == 2 and status.models.retry_at == now + timedelta(seconds=120)
    assert events == []  # the condition did not change: no new Event

    while not status.models.settled:
        now = status.models.retry_at
        status, events = settle_models(REF, spec, status, {}, lambda *args: "key", now)
    assert bucket.prunes == PRUNE_TRIES and status.models.prune_failures == PRUNE_TRIES
    stored = next(c for c in status.conditions if c.type == "ModelsStored")
    assert (stored.status, stored.reason) == (
        "False",
        "ArtifactStoreFailed",
    ) and "gave up after 8 tries" in stored.message
    assert [(e.type, e.reason) for e in events] == [("Warning", "ArtifactStoreFailed")] and "gave up" in events[
        0
    ].message
    bucket.down = False  # too late: the operator leaves the scan alone (a new spec generation settles it again)
    document = {**DOCUMENT, "status": status.model_dump(mode="json", by_alias=True, exclude_none=True)}
    assert reconcile_scan(document, {}, read_secret=lambda *args: "key").status is None


def test_a_scan_that_keeps_no_models_has_its_left_checkpoints_pruned_at_the_end(bucket):
    """keep: none with a store: its pods keep trial checkpoints there, so the end of the scan removes those of
    trials that never got a record, as it prunes models, and says so."""
    spec = {**DOCUMENT["spec"], "artifacts": {"keep": "none", "store": {"s3": STORE}}}
    document = {**DOCUMENT, "spec": spec}
    prefix = Bucket.location.checkpoints_prefix
    bucket.checkpoints = [f"{prefix}c9-x/1/state.npz", f"{prefix}c9-x/1/checkpoint.json", "hpscan/atlas/other/k"]
    outcome = reconcile_scan(document, {"kubernetes": FinishedBackend(lambda: 0.0)}, read_secret=lambda *args: "key")
    assert outcome.status.phase == "Succeeded" and outcome.status.models.settled
    assert bucket.checkpoints == ["hpscan/atlas/other/k"]
    assert condition(outcome) == ("True", "ModelsKept")
    assert "keeps no models" in outcome.events[-1].message and "no trial checkpoint left" in outcome.events[-1].message
