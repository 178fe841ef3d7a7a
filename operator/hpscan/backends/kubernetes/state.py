"""What the Kubernetes backend holds for one scan: one ScanState per scan, in one ScanTable keyed by the scan's
namespace and name (its objects are named after it), so forgetting a scan drops one entry. All of it is either
read again from the API server by a restarted operator or only saves requests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hpscan.backends.base import ScanRef, ScanTable


@dataclass
class ScanState:
    """A scan the backend serves: what it read from and wrote to the scan's Jobs and ConfigMaps."""

    scan: ScanRef
    causes: dict[str, tuple[int, str]] = field(default_factory=dict)
    """By Job: its failed attempts when its pods were read, and the newest one's cause (pods are listed again only
    when another attempt failed)."""
    parsed: dict[str, tuple[str, int]] = field(default_factory=dict)
    """By ConfigMap: the resourceVersion last read and its unreadable entries (a ConfigMap is read again only when
    it changed, so a scan costs in proportion to what its pods reported; no record is held here, the aggregator
    folds them)."""
    unreadable: int = 0
    """Entries of the scan's shard ConfigMaps that are not records, at the last fetch_records."""
    checked: set[str] = field(default_factory=set)
    """Jobs seen Complete whose records were looked for (ShardObjects.confirm_records)."""
    fresh: list[dict[str, Any]] = field(default_factory=list)
    """Pages read from the API server past the watch cache, for the next fetch_records."""
    bound: set[str] = field(default_factory=set)
    """Site accounts bound to the scan's Role."""
    inboxes: dict[str, dict[str, str]] = field(default_factory=dict)
    """Workers that pull: by inbox, the trials and stops text this operator wrote, the authority for the next append
    (the watch cache may not show the last patch yet). Read from the API server once after a restart."""
    page_sizes: dict[str, int] = field(default_factory=dict)
    """By inbox: how many records a page of the worker holds."""
    progress_seen: dict[str, str] = field(default_factory=dict)
    """By inbox: the resourceVersion whose progress reports were handed over."""


def scan_table() -> ScanTable[ScanState]:
    """The backend's table of scans, keyed by (namespace, name)."""
    return ScanTable(ScanState)
