"""`hpscan dashboard NAME` for a scan on the cluster: the HPScan and its records, read as `hpscan results` reads
them (faked here at that seam), become the page's state, read again only when the HPScan's resourceVersion moves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from hpscan.api.status import HPScanStatus
from hpscan.api.trials import Progress
from hpscan.cli import cluster, dashboard
from hpscan.cli.dashboard import ClusterScan
from hpscan.core.results import read_records
from hpscan.dashboard.server import Watch
from support.dashboard_runs import FAILING_SITE, append_record, write_status
from support.report_runs import write_fake_run


@pytest.fixture
def on_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """An HPScan 'quickstart' in namespace 'ml' whose records and status are those of a run folder."""
    run_dir = write_fake_run(tmp_path / "cluster-side", limit=6, failed_every=5)
    write_status(run_dir)
    body = yaml.safe_load((run_dir / "scan.yaml").read_text())
    body["metadata"].update(namespace="ml", resourceVersion="100")
    asked: list[tuple[str, str, str | None]] = []

    def scan_body(name: str, namespace: str, context: str | None) -> tuple[dict[str, Any], None]:
        asked.append((name, namespace, context))
        return body, None

    def records(name: str, namespace: str, context: str | None) -> tuple[list, HPScanStatus]:
        status = HPScanStatus.model_validate_json((run_dir / "status.json").read_text())
        return read_records(run_dir / "results.jsonl")[0], status

    epochs: list[Progress] = []  # what the workers' inboxes hold (the newest reports of each)
    monkeypatch.setattr(cluster, "_scan_body", scan_body)
    monkeypatch.setattr(cluster, "_records", records)
    monkeypatch.setattr(dashboard, "_epoch_reports", lambda name, namespace, context: list(epochs))
    return {"run_dir": run_dir, "body": body, "asked": asked, "epochs": epochs}


def test_a_scan_on_the_cluster_is_shown_as_its_run_folder_would_be(on_cluster: dict, tmp_path: Path):
    (tmp_path / "mirror").mkdir()
    source = ClusterScan("quickstart", "ml", "lab", tmp_path / "mirror")
    watch = Watch(source)
    assert watch.refresh() and not watch.refresh()  # the same resourceVersion: not read again
    state = source.view()
    assert state["scan"] == "quickstart" and state["recorded"] == 6
    assert state["sites"][1]["message"] == FAILING_SITE
    assert set(on_cluster["asked"]) == {("quickstart", "ml", "lab")}  # the user's own context and namespace

    new = append_record(on_cluster["run_dir"], 23, 0.5)
    on_cluster["body"]["metadata"]["resourceVersion"] = "101"  # the operator patched the status
    assert watch.refresh()
    assert b'"recorded":7' in watch.payload and new.encode() in watch.payload
