"""Models that come back in a batch job's output sandbox (HTCondor transfers ``models/`` back with
``results.jsonl``), uploaded by the operator to the scan's store (spec.artifacts.store), as a Kubernetes shard job
uploads its own. A failed upload costs no record: the folder stays in the sandbox, the cause is logged once, and it
is tried again after a wait that doubles (a store that does not answer must not hold the poller up every cycle),
``UPLOAD_TRIES`` times in all; then the models are given up, logged, and counted (``ScanUploads.lost``) for the
scan's status. The operator keeps visiting a finished scan until none waits (controller.reconcile.settle_models).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from hpscan.api.contract import MODEL_FILE, MODELS_DIR, ResultRecord
from hpscan.api.spec import HPScanSpec
from hpscan.api.store import S3Store
from hpscan.backends.base import ScanRef
from hpscan.core.artifacts import retry_delay
from hpscan.errors import ArtifactStoreError
from hpscan.job.store import open_store

log = logging.getLogger(__name__)
RETRY_SECONDS = 60.0
"""The wait after the first failed upload; it doubles with each failure in a row, up to ``MAX_RETRY_SECONDS``."""
MAX_RETRY_SECONDS = 900.0
UPLOAD_TRIES = 8
"""Failed tries in a row before the waiting models are given up (about an hour and a half of waits)."""


def environment_secret(_namespace: str, _name: str, key: str) -> str:
    """Outside the operator (no Secrets): the key pair from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY."""
    variable = {"accessKeyId": "AWS_ACCESS_KEY_ID", "secretAccessKey": "AWS_SECRET_ACCESS_KEY"}.get(key, key)
    return os.environ[variable]


def wants_models_back(spec: HPScanSpec) -> bool:
    """Whether a batch job should return its models/ folder: the scan keeps models and names a store."""
    return spec.artifacts.save_models and spec.artifacts.store is not None


@dataclass
class ScanUploads:
    """One scan's store and its returned models not uploaded yet; ``failures`` in a row, the last ``error``, and
    the ids given up after ``UPLOAD_TRIES`` (``lost``)."""

    store: S3Store
    waiting: dict[str, tuple[Path, ResultRecord]] = field(default_factory=dict)
    failures: int = 0
    retry_at: float = 0.0
    error: str = ""
    lost: set[str] = field(default_factory=set)


class SandboxModels:
    """Per scan: its store, and the returned model folders not uploaded yet."""

    def __init__(
        self,
        read_secret: Callable[[str, str, str], str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        retry_seconds: float = RETRY_SECONDS,
    ) -> None:
        self.read_secret = read_secret or environment_secret
        self.clock, self.retry_seconds = clock, retry_seconds
        self._scans: dict[tuple[str, str], ScanUploads] = {}
        self._said: set[str] = set()

    def watch(self, scan: ScanRef, spec: HPScanSpec) -> None:
        if wants_models_back(spec) and spec.artifacts.store is not None:
            key = (scan.namespace, scan.name)
            if key in self._scans:
                self._scans[key].store = spec.artifacts.store.s3
            else:
                self._scans[key] = ScanUploads(spec.artifacts.store.s3)

    def forget(self, scan: ScanRef) -> None:
        """The scan was deleted: its store and the models still waiting go with it."""
        self._scans.pop((scan.namespace, scan.name), None)

    def uploads(self, scan: ScanRef) -> ScanUploads | None:
        return self._scans.get((scan.namespace, scan.name))

    def returned(self, scan: ScanRef, sandbox: Path, records: Iterable[ResultRecord]) -> None:
        """A job's output came back into ``sandbox``: upload the models of its succeeded records."""
        uploads = self.uploads(scan)
        if uploads is None:
            return
        for record in records:
            folder = sandbox / MODELS_DIR / record.id
            if record.status == "succeeded" and (folder / MODEL_FILE).is_file():
                uploads.waiting[record.id] = (folder, record)
        self.flush(scan)

    def flush(self, scan: ScanRef, now: float | None = None) -> None:
        """Upload what waits, unless a wait after a failure runs until past ``now`` (default: the clock); stop at
        the first failure (the store is down or refuses) and wait longer each time, or give up after the last try."""
        uploads = self.uploads(scan)
        now = self.clock() if now is None else now
        if uploads is None or not uploads.waiting or now < uploads.retry_at:
            return
        try:
            store = open_store(uploads.store, scan.namespace, scan.name, self.read_secret)
            for combination, (folder, record) in list(uploads.waiting.items()):
                store.upload_model(folder, record)
                shutil.rmtree(folder, ignore_errors=True)
                del uploads.waiting[combination]
                uploads.failures = 0
        except ArtifactStoreError as error:
            uploads.failures += 1
            uploads.error = str(error)
            wait = retry_delay(uploads.failures, self.retry_seconds, UPLOAD_TRIES, MAX_RETRY_SECONDS)
            if wait is None:
                log.warning("%s; gave up after %d tries: %d returned model(s) not stored", error, uploads.failures,
                            len(uploads.waiting))  # fmt: skip
                uploads.lost |= set(uploads.waiting)
                uploads.waiting.clear()
                return
            uploads.retry_at = now + wait
            if error.cause not in self._said:
                self._said.add(error.cause)
                log.warning("%s; %d returned model(s) wait in their sandboxes for a later try", error,
                            len(uploads.waiting))  # fmt: skip

    def pending(self, scan: ScanRef) -> int:
        uploads = self.uploads(scan)
        return len(uploads.waiting) if uploads is not None else 0


def sandbox_uploads(backends: Iterable[object]) -> list[SandboxModels]:
    """The uploaders of returned models among ``backends`` (the HTCondor backend's ``models``)."""
    return [found for backend in backends if isinstance(found := getattr(backend, "models", None), SandboxModels)]
