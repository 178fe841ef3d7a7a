"""The reconcile step's stand-in batch system and scan documents (tests/unit/controller/test_reconcile.py and the
tests of what the reconcile writes: privilege, kstatus)."""

from __future__ import annotations

from pathlib import Path

import yaml

from hpscan.api.contract import ResultRecord
from hpscan.api.status import ShardPhase, ShardStatus
from hpscan.backends.base import Backend

REPO = Path(__file__).resolve().parents[2]


class MemoryBackend(Backend):
    """Stand-in: remembers submissions; tests set phases and records by hand."""

    name = "kubernetes"

    def __init__(self):
        self.states: dict[int, ShardStatus] = {}
        self.records: list[ResultRecord] = []
        self.submitted: list[int] = []
        self.cancelled: list[int] = []
        self.sites: dict[int, str | None] = {}

    def submit(self, scan, spec, launches):
        for launch in launches:
            index = launch.shard_file.shard
            self.submitted.append(index)
            self.sites[index] = launch.site.name if launch.site else None
            self.states[index] = ShardStatus(
                index=index, phase=ShardPhase.PENDING, site=self.sites[index], moves=launch.moves
            )

    def poll(self, scan):
        return dict(self.states)

    def fetch_records(self, scan):
        return list(self.records)

    def cancel(self, scan, shards=None):
        for i in shards or list(self.states):
            self.cancelled.append(i)
            self.states[i] = self.states[i].model_copy(update={"phase": ShardPhase.SUSPENDED})


def body(**spec_changes) -> dict:
    document = yaml.safe_load((REPO / "examples" / "dl1-seed-scan.yaml").read_text())
    document["spec"]["sites"] = [document["spec"]["sites"][0]]  # the Kubernetes site only
    document["spec"].update(spec_changes)
    document["metadata"].update({"namespace": "physics", "uid": "u-1", "generation": 1})
    return document


def apply(document: dict, outcome) -> dict:
    return {**document, "status": outcome.status.model_dump(mode="json", by_alias=True, exclude_none=True)}
