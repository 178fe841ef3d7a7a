"""The backend interface: what the local runner and the operator ask of any batch system.

A backend starts shards, says what state each shard's job is in, hands back the records the payload reported,
and stops jobs. Retrying a failed shard attempt is the backend's own business, done with the batch system's
native mechanism (a Job's backoffLimit, HTCondor's max_retries, a loop for local processes), up to the
`retries` it is given; it reports `attempts` and a terminal phase only when retries are spent. Which shards
to start, when, and where is decided by the pure functions in hpscan.core.decisions, never here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from hpscan.api.contract import ResultRecord, ShardFile
from hpscan.api.sites import Site
from hpscan.api.spec import HPScanSpec
from hpscan.api.status import ShardStatus
from hpscan.api.trials import Assignment, Progress
from hpscan.core.brokering import ProbeOutcome
from hpscan.core.planning import Plan
from hpscan.errors import HPScanError


@dataclass(frozen=True)
class ScanRef:
    """Which scan a call is about. `uid` tags every job, so a restarted controller finds what it started."""

    name: str
    namespace: str = "default"
    uid: str = ""


@dataclass(frozen=True)
class ShardLaunch:
    """One shard to start on one site."""

    shard_file: ShardFile
    site: Site | None
    moves: int = 0
    """How often the shard moved to another site before (its move count), so a moved shard's new job never
    collides with the one it left (which may still be ending)."""


@dataclass(frozen=True)
class BackendContext:
    """What the operator hands every backend factory (``create(context) -> Backend``, see hpscan.api.registry):
    each backend takes what it needs and ignores the rest."""

    instrument: Callable[[Any], Any] = lambda api_client: api_client
    """Wraps a backend's API client so the operator counts its requests for the metrics."""
    read_secret: Callable[[str, str, str], str] | None = None
    """(namespace, name, key) -> the Secret's value, e.g. a site's HTCondor IDTOKEN."""
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    """The operator's environment (the chart sets e.g. HPSCAN_CONDOR_DIR)."""


class Backend(ABC):
    """A batch system that runs shards. Implementations: local.LocalBackend, and one per entry of
    hpscan.api.registry (kubernetes.KubernetesBackend, htcondor.HTCondorBackend)."""

    name: ClassVar[str]
    pulls: ClassVar[bool] = False
    """Whether the backend has a channel into running jobs for workers that pull trials (assign, stop_trials)."""

    def track(self, scan: ScanRef, spec: HPScanSpec) -> None:  # noqa: B027 (optional hook)
        """Called before every poll, so a restarted controller watches what it started. Default: nothing."""

    def refusals(self, planned: Plan) -> list[str]:
        """What this batch system cannot run of a plan (e.g. a shard too large for its channel), one line each;
        checked before anything is submitted. Default: nothing."""
        return []

    def prepare(self, scan: ScanRef, spec: HPScanSpec, shard_count: int) -> None:  # noqa: B027
        """Called before submitting: per-scan resources (RBAC, credentials). Idempotent. Default: nothing."""

    def forget(self, scan: ScanRef) -> None:  # noqa: B027
        """The scan was deleted: release what the backend holds for it. Default: nothing."""

    def use_watch_cache(self, cache: Any) -> None:  # noqa: B027 (optional hook)
        """The operator's watch-fed indexes of shard objects, handed over at every reconcile (kopf's indexes: the
        Kubernetes backend's ShardObjectCache). A backend that reads its batch system another way ignores them.
        Default: nothing."""

    @abstractmethod
    def submit(self, scan: ScanRef, spec: HPScanSpec, launches: Sequence[ShardLaunch]) -> None:
        """Start these shards. Idempotent: a shard whose job already exists is left as it is."""

    @abstractmethod
    def poll(self, scan: ScanRef) -> dict[int, ShardStatus]:
        """The state of every shard job of the scan that the backend knows, by shard index (phase, attempts,
        job reference, site, and a CamelCase reason such as GPUUnavailable when a shard is in trouble)."""

    @abstractmethod
    def fetch_records(self, scan: ScanRef) -> list[ResultRecord]:
        """Records reported since the last call; a backend may repeat earlier ones (the aggregator folds
        duplicates). After a controller restart the first call returns everything still held."""

    def unreadable(self, scan: ScanRef) -> int:
        """How many of the scan's records could not be read so far (skipped, and shown in the status). Default: 0."""
        return 0

    def probe(self, scan: ScanRef, spec: HPScanSpec, site: Site | None) -> ProbeOutcome | None:
        """The site probe (spec.payload.gpuCheck with the shards' image, GPU request and site settings): start it
        unless it runs or ended, and say what it says now (exit_code None while it waits or runs, with why it waits
        when the batch system says). Idempotent. None: this backend cannot probe (its sites are NotProbed)."""
        return None

    def end_probe(self, scan: ScanRef, site: Site | None) -> None:  # noqa: B027 (optional hook)
        """Remove the site's probe job (it did not end in time; a later probe starts afresh). Default: nothing."""

    # Workers that pull trials (ShardFile.pull; hpscan.api.trials), for backends with `pulls` (see pull_refusal).

    def assign(self, scan: ScanRef, shard: int, lines: Sequence[dict]) -> None:
        """Append trials.jsonl lines (trials handed out, withdrawn, the end) to a worker's channel, durably."""
        raise NotImplementedError(f"the {self.name} backend has no channel for workers that pull")

    def stop_trials(self, scan: ScanRef, shard: int, trial_ids: Sequence[str]) -> None:
        """Ask a worker to stop these trials at their next epoch boundary (early stopping)."""
        raise NotImplementedError(f"the {self.name} backend has no channel for workers that pull")

    def fetch_progress(self, scan: ScanRef) -> list[Progress]:
        """Per-epoch reports of the workers since the last call (may repeat earlier ones). Default: none."""
        return []

    def assignments(self, scan: ScanRef) -> dict[int, Assignment]:
        """What each worker's channel says it was handed (a restarted shell rebuilds its search from these)."""
        return {}

    def outages(self, scan: ScanRef) -> dict[str, str]:
        """Sites of the scan whose batch system did not answer at the last poll, with the error: they are shown
        Unreachable while the other sites go on. Default: none (a backend that fails as a whole raises)."""
        return {}

    @abstractmethod
    def cancel(self, scan: ScanRef, shards: Collection[int] | None = None) -> None:
        """Stop the jobs of these shards (all when None), keeping what they recorded."""


def pull_refusal(backend: Backend, planned: Plan) -> list[str]:
    """A plan whose workers pull trials, on a backend that cannot hand them trials: refused before submitting."""
    if not planned.pull or backend.pulls:
        return []
    return [
        f"workers that pull trials (sampling.strategy {planned.spec.sampling.strategy}, earlyStopping "
        f"{planned.spec.early_stopping.strategy}, sharding.pull) need a channel into running jobs; "
        f"the {backend.name} backend has no channel to hand them trials yet"
    ]


def manifest_uid(name: str, spec: HPScanSpec, folder: Path) -> str:
    """A stable uid for a scan run outside Kubernetes (``hpscan run --site``, ``hpscan condor submit``): from its
    manifest and the folder its jobs' files live in, so the same manifest run again into the same folder finds the
    jobs it submitted there instead of submitting them again, and into another folder is a scan of its own (an
    HTCondor job's sandbox is in the first folder: the second run would find its jobs ended and their records
    nowhere)."""
    canonical = json.dumps([name, spec.model_dump(mode="json", by_alias=True), str(folder.resolve())], sort_keys=True)
    return "manifest-" + hashlib.sha256(canonical.encode()).hexdigest()[:16]


def last_line(path: Path, limit: int = 300) -> str:
    """The last non-empty line of a log or stderr file (a failed payload's own words), or "" when there is none."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:limit] if lines else ""


# Machinery every backend repeats, written once (as dask-jobqueue's core.py does for its batch systems).

State = TypeVar("State")
Item = TypeVar("Item")


def scan_name_key(scan: ScanRef) -> Hashable:
    """A scan's key by (namespace, name): for a backend whose objects are named after the scan."""
    return (scan.namespace, scan.name)


class ScanTable(Generic[State]):
    """A backend's state per scan: one object per scan (a dataclass of the backend's), in one table, so forgetting
    a scan drops one entry and nothing is left behind in a second table. ``new(scan)`` makes a scan's entry; ``key``
    says which scans are the same: by ``scan.uid`` for a backend whose jobs carry it, by (namespace, name) by
    default."""

    def __init__(self, new: Callable[[ScanRef], State], key: Callable[[ScanRef], Hashable] = scan_name_key) -> None:
        self._new = new
        self._key = key
        self._entries: dict[Hashable, State] = {}

    def open(self, scan: ScanRef) -> State:
        """The scan's entry, made when it has none."""
        key = self._key(scan)
        if key not in self._entries:
            self._entries[key] = self._new(scan)
        return self._entries[key]

    def get(self, scan: ScanRef) -> State | None:
        """The scan's entry, None when it has none."""
        return self._entries.get(self._key(scan))

    def drop(self, scan: ScanRef) -> State | None:
        """Forget the scan: its entry goes (and is returned, None when it had none)."""
        return self._entries.pop(self._key(scan), None)

    def keys(self) -> set[Hashable]:
        return set(self._entries)

    def __contains__(self, scan: ScanRef) -> bool:
        return self._key(scan) in self._entries

    def __iter__(self) -> Iterator[State]:
        return iter(list(self._entries.values()))

    def __len__(self) -> int:
        return len(self._entries)


@contextlib.contextmanager
def batch_call(
    failed: Callable[[Exception], HPScanError],
    after: Callable[[], object] | None = None,
    catching: tuple[type[Exception], ...] = (Exception,),
) -> Iterator[None]:
    """One call to a batch system: whatever it raises becomes the backend's own error, ``failed(error)`` (a
    BackendError, or SchedulerUnavailable when the system did not answer), raised without the client's traceback
    chained to it (the message says what failed). ``after()`` runs first, e.g. to drop a client handle so that the
    next call connects anew. ``catching``: the client's own errors, for a client whose other exceptions are not
    the batch system's answer (they pass unchanged)."""
    try:
        yield
    except catching as error:
        if after is not None:
            after()
        raise failed(error) from None


class SeenKeys:
    """What a backend handed over already, by key (a record's id, a report's (trial, epoch)): a batch system shows
    the same records on every poll, and each should reach the engine once."""

    def __init__(self) -> None:
        self._seen: set[Hashable] = set()

    def first_seen(self, items: Iterable[Item], key: Callable[[Item], Hashable]) -> list[Item]:
        """The items whose key was not seen before (the first of repeats within ``items``), now marked seen."""
        fresh = []
        for item in items:
            if key(item) not in self._seen:
                self._seen.add(key(item))
                fresh.append(item)
        return fresh

    def __contains__(self, key: Hashable) -> bool:
        return key in self._seen

    def __len__(self) -> int:
        return len(self._seen)
