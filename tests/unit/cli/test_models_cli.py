"""`hpscan models SCAN` on the cluster reads the store the operator actually used: the scan's own
spec.artifacts.store, or the operator's default store (defaults.artifactStore), which the operator records in the
scan's status (status.models.store) so that a user needs no access to the operator's configuration."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from hpscan.api.contract import ResultRecord
from hpscan.api.status import ShardPhase, ShardStatus
from hpscan.backends.base import Backend
from hpscan.cli import app
from hpscan.cli import models as models_cli
from hpscan.controller.defaults import OperatorDefaults
from hpscan.controller.reconcile import reconcile_scan

STORE = {"endpoint": "https://s3.cern.ch", "bucket": "atlas-ftag", "prefix": "site", "secretRef": {"name": "s3"}}


class IdleBackend(Backend):
    name = "kubernetes"

    def submit(self, scan, spec, launches):
        pass

    def poll(self, scan):
        return {0: ShardStatus(index=0, phase=ShardPhase.PENDING)}

    def fetch_records(self, scan):
        return []

    def cancel(self, scan, shards=None):
        pass


def scan_body() -> dict:
    document = yaml.safe_load(Path("examples/quickstart.yaml").read_text())
    document["metadata"].update({"namespace": "physics", "uid": "u-models", "generation": 1})
    assert "store" not in document["spec"].get("artifacts", {})
    return document


def test_the_operator_records_its_default_store_in_the_status():
    defaults = OperatorDefaults.model_validate({"artifactStore": {"s3": STORE}})
    outcome = reconcile_scan(scan_body(), {"kubernetes": IdleBackend()}, defaults=defaults)
    assert outcome.status.models is not None
    assert outcome.status.models.store == defaults.artifact_store


class FakeStore:
    class location:  # stands in for ModelStoreLocation
        url = "s3://atlas-ftag/site/physics/quickstart/"

        @staticmethod
        def model_key(combination, relative=""):
            return f"site/physics/quickstart/{combination}/{relative}"

    def models(self):
        record = ResultRecord(id="c0-a", shard=0, parameters={"x": 1}, metrics={"val_loss": 0.5}, status="succeeded")
        return {"c0-a": record}


def test_hpscan_models_reads_the_default_store_the_status_names(monkeypatch):
    document = scan_body()
    document["status"] = {"phase": "Succeeded", "models": {"store": {"s3": STORE}}}
    opened = []
    monkeypatch.setattr(models_cli, "_scan_body", lambda name, namespace, context: (document, None))
    monkeypatch.setattr(models_cli, "_records", lambda name, namespace, context: ([], None))
    monkeypatch.setattr(models_cli, "_secret_reader", lambda api: None)
    monkeypatch.setattr(models_cli, "open_store", lambda store, ns, name, read: opened.append(store) or FakeStore())
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    result = CliRunner().invoke(app, ["models", "quickstart", "-n", "physics", "--json"])
    assert result.exit_code == 0, result.output
    assert [row["id"] for row in json.loads(result.output)] == ["c0-a"]
    assert [store.bucket for store in opened] == ["atlas-ftag"]


def test_hpscan_models_says_when_no_store_is_known(monkeypatch):
    document = scan_body()
    document["status"] = {"phase": "Running"}
    monkeypatch.setattr(models_cli, "_scan_body", lambda name, namespace, context: (document, None))
    result = CliRunner().invoke(app, ["models", "quickstart", "-n", "physics"])
    assert result.exit_code != 0 and "no store" in result.output, result.output
