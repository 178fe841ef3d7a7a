"""Trial checkpoints that follow a shard moved off or onto a batch site (HTCondor, Slurm), carried by the operator.

Grid and HPC jobs get no store credentials, so their runners keep checkpoints only in their own folder: a Slurm
job's shard folder on the shared spool; an HTCondor job's sandbox on the execute side, of which the operator's side
holds what went in or came back (a removed job's runner sends its checkpoints through chirp as it stops, and a
spooled one's are retrieved before its release: backends/htcondor/removal.py, docs/checkpoints.md). The operator carries
them through the scan's store (``core.artifacts.job_store``), in the layout a Kubernetes shard job's runner uses
(``job/checkpoints.py``: ``<prefix>/<ns>/<scan>/_checkpoints/<trial>/<version>/...``), so a shard moved to another
site, of any kind, resumes its trials in flight at the epoch its folder held:

- ``upload``: after the backend cancelled a shard's job (a move, a suspend), and once after a job ended because its
  site failed it (``left``: exit 3), the newest checkpoint of each unrecorded trial in its folder goes up
  (``CheckpointSync.sync(last=True)``);
- ``restore``: before a shard's job is submitted, the newest whole stored checkpoint of each of *its* unrecorded
  trials comes down into the folder's ``checkpoints/<id>/`` (replacing a local one only when the stored one is
  newer: a job elsewhere trained it further);
- ``recorded``: a trial's record came: the stored checkpoint the operator knows of is deleted.

A store that fails costs no record and never blocks a submit or a cancel: the cause is logged once, the trial then
starts from what its folder holds (epoch 0 when nothing), and the scan's store is skipped for ``PAUSE_SECONDS``.
The decisions are pure functions; the rest is a thin shell.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from hpscan.api.contract import CHECKPOINTS_DIR, ResultRecord, ShardFile, parse_records
from hpscan.api.spec import HPScanSpec
from hpscan.api.status import SITE_LEVEL_REASONS, ShardPhase, ShardStatus
from hpscan.api.store import S3Store
from hpscan.backends.base import ScanRef
from hpscan.backends.sandbox_models import environment_secret
from hpscan.core.artifacts import job_store
from hpscan.errors import ArtifactStoreError
from hpscan.job.checkpoints import CheckpointSync
from hpscan.job.store import ModelStore, open_store

log = logging.getLogger(__name__)
PAUSE_SECONDS = 60.0
"""After the store failed, how long submits and cancels skip it (each try could wait for the client's timeouts)."""


# --- the decisions (pure) ---


def shard_trials(shard_file: ShardFile) -> set[str]:
    """The trials a shard's job will train: its file's combinations (the engine leaves out those recorded). A
    worker that pulls gets its trials later, from any checkpoint's owner: none are restored for it."""
    return {combination.id for combination in shard_file.combinations}


def to_upload(local: Collection[str], recorded: Collection[str]) -> set[str]:
    """After a cancel: the folder's checkpoints of trials not recorded (a recorded trial's is of no more use)."""
    return set(local) - set(recorded)


def leaves_its_site(status: ShardStatus) -> bool:
    """Whether a shard's job ended in a way that moves the shard to another site (its site failed it: exit 3,
    GPUUnavailable): its checkpoints must reach the store, as a cancel's do. A payload's own failure is retried
    where it is, in the same folder, which keeps them."""
    return status.phase == ShardPhase.FAILED and status.reason in SITE_LEVEL_REASONS


def to_forget(known: Collection[str], records: Iterable[ResultRecord]) -> set[str]:
    """The trials with a stored checkpoint the operator knows of whose record just came (a record is final)."""
    return set(known) & {record.id for record in records}


# --- the I/O shell ---


def local_trials(folder: Path) -> set[str]:
    """The trials with a checkpoint folder in a job's folder (``checkpoints/<id>/``; hidden ones are partial)."""
    root = folder / CHECKPOINTS_DIR
    if not root.is_dir():
        return set()
    return {path.name for path in root.iterdir() if path.is_dir() and not path.name.startswith(".")}


def recorded_in(results: Path) -> set[str]:
    """The trial ids a results.jsonl holds (none when it is missing)."""
    try:
        return {record.id for record in parse_records(results.read_bytes().splitlines())[0]}
    except FileNotFoundError:
        return set()


class _OperatorSync(CheckpointSync):
    """CheckpointSync in the operator: its words go to the log, a failure's once per cause across calls."""

    def __init__(self, store: ModelStore, folder: Path, said: set[str]) -> None:
        super().__init__(store, folder, every_seconds=math.inf)  # uploads only when asked (last=True)
        self.said = said  # shared: a store that is down is said once, not once per shard
        self.failed = False

    def _say(self, message: str) -> None:
        log.info("%s", message)

    def _failed(self, error: ArtifactStoreError, then: str) -> None:
        self.failed = True
        if error.cause not in self.said:
            self.said.add(error.cause)
            log.warning("trial checkpoints: %s; %s", error, then)


@dataclass
class ScanCheckpoints:
    """One scan's store and the trials the operator uploaded or found stored (deleted when their record comes)."""

    store: S3Store
    known: set[str] = field(default_factory=set)
    paused_until: float = 0.0
    """After a failure, the store is skipped until then (``PAUSE_SECONDS``)."""
    left: set[tuple[int, int, str]] = field(default_factory=set)
    """(shard, moves, job) of the jobs that ended leaving their site, whose checkpoints went up."""


class SandboxCheckpoints:
    """Per scan with a store: its checkpoints carried between its batch jobs' folders and the store."""

    def __init__(
        self, read_secret: Callable[[str, str, str], str] | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.read_secret, self.clock = read_secret or environment_secret, clock
        self._scans: dict[tuple[str, str], ScanCheckpoints] = {}
        self.said: set[str] = set()

    def watch(self, scan: ScanRef, spec: HPScanSpec) -> None:
        key, store = (scan.namespace, scan.name), job_store(spec.artifacts)
        if store is None:
            self._scans.pop(key, None)
        elif key in self._scans:
            self._scans[key].store = store.s3
        else:
            self._scans[key] = ScanCheckpoints(store.s3)

    def forget(self, scan: ScanRef) -> None:
        self._scans.pop((scan.namespace, scan.name), None)

    def _sync(self, scan: ScanRef, folder: Path) -> tuple[ScanCheckpoints, _OperatorSync] | None:
        found = self._scans.get((scan.namespace, scan.name))
        if found is None or self.clock() < found.paused_until:
            return None
        try:
            store = open_store(found.store, scan.namespace, scan.name, self.read_secret)
        except ArtifactStoreError as error:
            found.paused_until = self.clock() + PAUSE_SECONDS
            if error.cause not in self.said:
                self.said.add(error.cause)
                log.warning("trial checkpoints: %s; the trials of moved shards start from epoch 0", error)
            return None
        return found, _OperatorSync(store, folder, self.said)

    def _done(self, found: ScanCheckpoints, sync: _OperatorSync) -> None:
        if sync.failed:  # said once by the sync; the next submits and cancels do not wait on it meanwhile
            found.paused_until = self.clock() + PAUSE_SECONDS

    def restore(self, scan: ScanRef, folder: Path, shard_file: ShardFile) -> dict[str, str]:
        """Before a shard's job is submitted: the newest stored checkpoint of each of its trials into
        ``folder/checkpoints/<id>/`` (unless the folder's own is newer). Returns trial -> the version restored."""
        wanted = shard_trials(shard_file)
        opened = self._sync(scan, folder) if wanted else None
        if opened is None:
            return {}
        found, sync = opened
        restored = sync.restore((), only=wanted, replace_older=True)
        self._done(found, sync)
        found.known |= set(restored)
        return restored

    def upload(self, scan: ScanRef, folder: Path, recorded: Collection[str]) -> set[str]:
        """After a shard's job was cancelled: the newest checkpoints its folder holds of unrecorded trials go up.
        Returns the trials uploaded."""
        if not to_upload(local_trials(folder), recorded):
            return set()
        opened = self._sync(scan, folder)
        if opened is None:
            return set()
        found, sync = opened
        sync.recorded |= set(recorded)  # their folders (a payload killed before deleting one) stay here
        sync.sync((), last=True)
        self._done(found, sync)
        uploaded = set(sync.stored)
        found.known |= uploaded
        if uploaded:
            log.info("uploaded the checkpoints of %s from %s", ", ".join(sorted(uploaded)), folder)
        return uploaded

    def left(self, scan: ScanRef, status: ShardStatus, folder: Path, recorded: Collection[str]) -> None:
        """A shard's job ended; when its site failed it (``leaves_its_site``), its folder's checkpoints go up, once
        per job."""
        found = self._scans.get((scan.namespace, scan.name))
        job = (status.index, status.moves, status.job or "")
        if found is None or not leaves_its_site(status) or job in found.left:
            return
        found.left.add(job)
        self.upload(scan, folder, recorded)

    def recorded(self, scan: ScanRef, records: Iterable[ResultRecord]) -> None:
        """Records came: delete the stored checkpoints of those trials that the operator knows of."""
        found, records = self._scans.get((scan.namespace, scan.name)), list(records)
        if found is None or not (done := to_forget(found.known, records)):
            return
        opened = self._sync(scan, Path("/nonexistent"))  # no folder: it only deletes
        if opened is not None:
            opened[1].sync([record for record in records if record.id in done])  # prunes; uploads nothing
            self._done(*opened)
            found.known -= done
