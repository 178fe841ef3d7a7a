"""What the Slurm backend holds: per connection, the last GET /jobs; per scan, one ScanState in a base.ScanTable
(so forgetting a scan drops everything it held)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hpscan.api.contract import ResultRecord
from hpscan.api.sites import Site
from hpscan.api.spec import HPScanSpec
from hpscan.api.status import ShardStatus
from hpscan.api.trials import JsonLines
from hpscan.backends.base import ScanRef
from hpscan.backends.slurm.states import SlurmJob
from hpscan.errors import BackendError
from hpscan.job.runner import RecordTail

Connection = tuple[str, str, str]
"""(REST URL or COMMANDS, user, token): one identity at one slurmrestd, or at the commands where hpscan runs."""
COMMANDS = "commands"


def checked(scan: ScanRef) -> ScanRef:
    """The scan, when it has a uid (the table's key, and part of its jobs' names)."""
    if not scan.uid:
        raise BackendError(f"scan {scan.name!r} has no uid; Slurm jobs are found again by it")
    return scan


@dataclass
class View:
    """What the last GET /jobs of one connection said: jobs by name, or the error."""

    jobs: dict[str, SlurmJob] = field(default_factory=dict)
    error: str | None = None
    at: float = float("-inf")


@dataclass
class ShardPlace:
    """Where a shard's newest launch went."""

    site: str
    moves: int
    expected: int


@dataclass
class ScanState:
    scan: ScanRef
    spec: HPScanSpec | None = None
    sites: dict[str, Site] = field(default_factory=dict)
    shards: dict[int, ShardPlace] = field(default_factory=dict)
    tails: dict[Path, RecordTail] = field(default_factory=dict)
    recorded: dict[int, set[str]] = field(default_factory=dict)
    unreported: list[ResultRecord] = field(default_factory=list)
    progress: dict[Path, JsonLines] = field(default_factory=dict)
    last: dict[int, ShardStatus] = field(default_factory=dict)
    restarting: set[int] = field(default_factory=set)
    """Shards submitted again while their cancelled job still stops: the next attempt starts once it has ended."""
