"""Trial checkpoints in the scan's object store, for shard jobs whose output folder dies with them (Kubernetes).

A pod's OUT/ is an emptyDir: a deleted or evicted pod, or a drained node, takes OUT/checkpoints/ with it. So the
shard runner keeps a copy in the store the scan keeps its models in (hpscan.api.store's layout):

    <prefix>/<namespace>/<scan>/_checkpoints/<trial id>/<version>/<the payload's files>, checkpoint.json last

- before the payload starts (``restore``), each unrecorded trial's newest whole version is downloaded into
  OUT/checkpoints/<id>/, so the Job's next pod, or the shard's new Job on any site that reaches the store, resumes
  the trial at its last uploaded epoch; the stored checkpoints of trials already recorded are deleted;
- while it runs (``sync``), a trial's checkpoint that changed is uploaded at most every ``every_seconds``
  (``HPSCAN_CHECKPOINT_UPLOAD_SECONDS``), as a new version (a kill mid-upload leaves the last whole one), and
  the older versions deleted; a trial whose record appears has its stored checkpoint deleted (pruned);
- when the payload ended (a SIGTERM within the pod's grace period, a crash, or its end), the newest checkpoints
  are uploaded whatever the interval (``last``).

A store that fails never stops the records: it is said once per cause on stderr and tried again at the next turn.
The decisions are pure functions below; ``CheckpointSync`` is their thin I/O shell.
"""

from __future__ import annotations

import json
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hpscan.api.contract import CHECKPOINTS_DIR, ResultRecord
from hpscan.api.store import CHECKPOINT_MANIFEST
from hpscan.errors import ArtifactStoreError
from hpscan.job.store import ModelStore

UPLOAD_SECONDS_ENV = "HPSCAN_CHECKPOINT_UPLOAD_SECONDS"
"""How often at most a shard job uploads a trial's changed checkpoint to the store (default 300 s): what a pod
lost without a SIGTERM (a node that died, a kill past the grace period) costs at most, plus an epoch."""

DEFAULT_UPLOAD_SECONDS = 300.0

SETTLE_SECONDS = 0.3
"""How long a checkpoint folder of several files must be left alone before it is uploaded (the payload may be
between two of them); a folder saved more often than that goes up only at the payload's end."""

Snapshot = dict[str, tuple[int, int]]
"""A checkpoint folder's files: path inside it -> (size, mtime in ns)."""


# --- the decisions (pure) ---


def upload_due(last_upload: float, now: float, every_seconds: float, last: bool) -> bool:
    """Whether to upload changed checkpoints now: ``every_seconds`` after the last upload (or the runner's start),
    or at once when the payload ended (``last``: its pod may be going)."""
    return last or now - last_upload >= every_seconds


def changed_trials(
    local: Mapping[str, Snapshot], uploaded: Mapping[str, Snapshot], now_ns: int, settle_seconds: float
) -> list[str]:
    """The trials whose checkpoint folder differs from what was last uploaded and, when it holds several files, has
    settled (no file newer than ``settle_seconds``: the payload may be between two of them; one file, replaced
    atomically as the contract asks, is whole at any moment); empty folders are skipped."""
    settled = now_ns - int(settle_seconds * 1e9)
    return sorted(
        trial
        for trial, files in local.items()
        if files
        and files != uploaded.get(trial)
        and (len(files) == 1 or max(mtime for _, mtime in files.values()) <= settled)
    )


@dataclass
class StoredTrial:
    """One trial's stored checkpoint: its versions, each with the paths of the files it holds."""

    versions: dict[str, set[str]] = field(default_factory=dict)

    def newest_whole(self) -> str | None:
        """The newest version whose manifest arrived (versions sort by their upload time)."""
        whole = [version for version, files in self.versions.items() if CHECKPOINT_MANIFEST in files]
        return max(whole, default=None)


def stored_trials(keys: Iterable[str], prefix: str) -> dict[str, StoredTrial]:
    """The keys under a scan's checkpoints prefix, by trial and version; keys of any other shape are ignored."""
    trials: dict[str, StoredTrial] = {}
    for key in keys:
        parts = key[len(prefix) :].split("/", 2) if key.startswith(prefix) else []
        if len(parts) == 3 and all(parts):
            trial, version, relative = parts
            trials.setdefault(trial, StoredTrial()).versions.setdefault(version, set()).add(relative)
    return trials


def to_restore(stored: Mapping[str, StoredTrial], recorded: set[str]) -> dict[str, str]:
    """Trial -> the version to download: the newest whole one of each trial not recorded yet."""
    chosen = {trial: found.newest_whole() for trial, found in stored.items() if trial not in recorded}
    return {trial: version for trial, version in chosen.items() if version is not None}


def to_prune(stored: Iterable[str], recorded: set[str]) -> list[str]:
    """The stored trials whose record is in: their checkpoints are of no more use."""
    return sorted(set(stored) & recorded)


def stored_after(version: str, local: Snapshot) -> bool:
    """Whether a stored version was uploaded after every file of a local checkpoint folder was written (a version
    is named by its upload time: ``new_version``); a version of another shape is taken for older."""
    try:
        uploaded_ms = int(version.split("-", 1)[0])
    except ValueError:
        return False
    return not local or uploaded_ms * 1_000_000 > max(mtime for _, mtime in local.values())


def new_version(now: float) -> str:
    """A version name that sorts by upload time (milliseconds), made unique across pods by a random tail."""
    return f"{int(now * 1000):013d}-{secrets.token_hex(3)}"


def manifest(trial: str, files: Snapshot) -> bytes:
    return json.dumps({"trial": trial, "files": {path: size for path, (size, _) in sorted(files.items())}}).encode()


# --- the I/O shell ---


def snapshot(folder: Path) -> Snapshot:
    """A checkpoint folder's files, leaving out hidden ones (a payload's partial files: ``.state.npz.partial``)."""
    files: Snapshot = {}
    for path in folder.rglob("*"):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts):
            continue
        try:
            if path.is_file():
                stat = path.stat()
                files[relative.as_posix()] = (stat.st_size, stat.st_mtime_ns)
        except FileNotFoundError:
            continue  # replaced or deleted while looked at
    return files


class CheckpointSync:
    """Keeps a shard job's trial checkpoints (OUT/checkpoints/) in the scan's store: ``restore`` before the payload
    starts, ``sync`` after each poll's records were published. Never raises for the store's failures."""

    def __init__(
        self,
        store: ModelStore,
        out_dir: Path,
        every_seconds: float = DEFAULT_UPLOAD_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.root = store, out_dir / CHECKPOINTS_DIR
        self.every_seconds, self.clock = every_seconds, clock
        self.location = store.location
        self.last_upload = clock()
        self.uploaded: dict[str, Snapshot] = {}
        self.stored: dict[str, str] = {}  # trial -> the version this job uploaded or restored
        self.recorded: set[str] = set()
        self.said: set[str] = set()
        self.uploads = 0

    def _say(self, message: str) -> None:
        print(f"hpscan: {message}", file=sys.stderr, flush=True)

    def _failed(self, error: ArtifactStoreError, then: str) -> None:
        if error.cause not in self.said:  # once per cause, not once per file
            self.said.add(error.cause)
            self._say(f"{error}; {then}")

    def restore(
        self, recorded: Iterable[str], only: Collection[str] | None = None, replace_older: bool = False
    ) -> dict[str, str]:
        """Download the newest whole checkpoint of each unrecorded trial (of ``only``, when given: a batch shard's,
        restored by the operator); delete those of recorded trials. A local folder is kept, unless
        ``replace_older`` and the stored version is newer (trained further by a job at another site).
        Returns trial -> the version restored."""
        self.recorded |= set(recorded)
        try:
            stored = stored_trials(self.store.keys(self.location.checkpoints_prefix), self.location.checkpoints_prefix)
        except ArtifactStoreError as error:
            self._failed(error, "the trials start from their local checkpoints, if any")
            return {}
        restored = {}
        for trial, version in to_restore(stored, self.recorded).items():
            if only is not None and trial not in only:
                continue
            local = self.root / trial
            if local.exists() and not (replace_older and stored_after(version, snapshot(local))):
                continue  # the folder's own is at least as new (a runner started again in the same folder)
            if self._download(trial, version, stored[trial].versions[version]):
                restored[trial] = self.stored[trial] = version
                self.uploaded[trial] = snapshot(self.root / trial)
                self._say(f"restored the checkpoint of {trial} from {self.location.checkpoint_key(trial, version)}")
        self._prune(to_prune(stored, self.recorded))
        return restored

    def _download(self, trial: str, version: str, files: set[str]) -> bool:
        partial = self.root / f".{trial}.download"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        try:
            for relative in sorted(files - {CHECKPOINT_MANIFEST}):
                if ".." in Path(relative).parts:
                    raise ArtifactStoreError(f"refusing key {relative} of {trial}'s checkpoint (a '..' part)")
                (partial / relative).parent.mkdir(parents=True, exist_ok=True)
                self.store.download(self.location.checkpoint_key(trial, version, relative), partial / relative)
        except ArtifactStoreError as error:
            shutil.rmtree(partial, ignore_errors=True)
            self._failed(error, f"{trial} trains from epoch 0")
            return False
        shutil.rmtree(self.root / trial, ignore_errors=True)  # an older local one (replace_older)
        partial.rename(self.root / trial)  # whole, or not at all: the payload reads it next
        return True

    def sync(self, records: Iterable[ResultRecord], last: bool = False) -> None:
        """Prune the stored checkpoints of trials just recorded; upload the changed ones when due (``last``: the
        payload ended, so now)."""
        new = {record.id for record in records} - self.recorded
        self.recorded |= new
        self._prune(sorted(new))  # also what another pod of the shard may have uploaded (a move's old pod)
        now = self.clock()
        if not upload_due(self.last_upload, now, self.every_seconds, last):
            return
        self.last_upload = now
        local = {
            folder.name: snapshot(folder)
            for folder in (sorted(self.root.iterdir()) if self.root.is_dir() else [])
            if folder.is_dir() and not folder.name.startswith(".") and folder.name not in self.recorded
        }
        for trial in changed_trials(local, self.uploaded, time.time_ns(), 0.0 if last else SETTLE_SECONDS):
            if not self._upload(trial, local[trial], now):
                return  # the store failed: again at the next turn

    def _upload(self, trial: str, files: Snapshot, now: float) -> bool:
        version = new_version(now)
        try:
            for relative in sorted(files):
                with (self.root / trial / relative).open("rb") as body:
                    self.store.put(self.location.checkpoint_key(trial, version, relative), body)
            self.store.put(self.location.checkpoint_key(trial, version, CHECKPOINT_MANIFEST), manifest(trial, files))
        except FileNotFoundError:
            return True  # the trial ended while uploaded (its folder went): its record prunes what went up
        except OSError as error:  # a file the runner may not read: said, as a store's refusal is
            self._failed(ArtifactStoreError(f"reading the checkpoint of {trial}: {error}"), "not uploaded")
            return False
        except ArtifactStoreError as error:
            self._failed(error, "the checkpoints stay here for a later try")
            return False
        self.uploaded[trial], self.stored[trial] = files, version
        self.uploads += 1
        self._delete(trial, keep=version)
        return True

    def _delete(self, trial: str, keep: str | None = None) -> None:
        """Delete a trial's stored checkpoint, all but version ``keep`` when given."""
        folder = self.location.checkpoint_key(trial)
        try:
            keys = [key for key in self.store.keys(folder) if keep is None or not key.startswith(f"{folder}{keep}/")]
            self.store.delete_keys(keys)
        except ArtifactStoreError as error:
            self._failed(error, "they are deleted at the trial's end or the scan's")

    def _prune(self, trials: Iterable[str]) -> None:
        for trial in trials:
            self._delete(trial)
            self.stored.pop(trial, None)
            self.uploaded.pop(trial, None)
