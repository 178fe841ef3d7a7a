"""What the HTCondor backend holds for one scan: one ScanState per scan, in one ScanTable keyed by the scan's uid
(the jobs carry it), so forgetting a scan drops one entry."""

from __future__ import annotations

from dataclasses import dataclass, field

from hpscan.api.contract import ResultRecord
from hpscan.api.sites import Site
from hpscan.backends.base import ScanRef, ScanTable, SeenKeys
from hpscan.backends.htcondor.credentials import Connection


@dataclass
class ScanState:
    """A scan the backend watches: its htcondor sites, and what it read from and wrote to the scan's jobs."""

    scan: ScanRef
    sites: dict[str, Site] = field(default_factory=dict)
    """Its htcondor sites by name."""
    cancelled: set[int] = field(default_factory=set)
    """Shards whose jobs hpscan removed: Suspended until submitted again."""
    results_read: set[str] = field(default_factory=set)
    """Completed jobs ("site/job") whose returned results.jsonl was read (once per job)."""
    records_handed: SeenKeys = field(default_factory=SeenKeys)
    """Ids of the records running jobs chirped that were handed over."""
    chirped: dict[int, dict[str, ResultRecord]] = field(default_factory=dict)
    """By shard and id: the live records seen, kept for a removed job's shard (its scratch results never return)."""
    pages_read: dict[tuple[Connection, str], tuple[int, int]] = field(default_factory=dict)
    """By (schedd, job): the newest record page read and the job's HPScanDone then (it reads again when that
    changes; the pages before the newest never change)."""
    unreadable: int = 0
    """Lines of returned results.jsonl files that were not records."""
    texts: dict[tuple[int, str], list[str]] = field(default_factory=dict)
    """Workers that pull: by (shard, attribute), each worker's whole text (its trials.jsonl / stop.jsonl so far)."""
    written: dict[tuple[Connection, str, str], list[str]] = field(default_factory=dict)
    """By (schedd, job, attribute): the text last written on each job."""
    progress_handed: SeenKeys = field(default_factory=SeenKeys)
    """(trial, epoch) of the per-epoch reports handed over."""

    @property
    def uid(self) -> str:
        return self.scan.uid


def scan_table() -> ScanTable[ScanState]:
    """The backend's table of scans, keyed by uid."""
    return ScanTable(ScanState, key=lambda scan: scan.uid)
