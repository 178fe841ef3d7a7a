"""Models that come back in a batch job's output sandbox (HTCondor transfers ``models/`` back with
``results.jsonl``), uploaded by the operator to the scan's store (spec.artifacts.store), as a Kubernetes shard job
uploads its own. A failed upload costs no record: the folder stays in the sandbox, the cause is logged once, and it
is tried again a minute later (a store that does not answer must not hold the poller up every cycle).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from hpscan.api.contract import MODEL_FILE, MODELS_DIR, ResultRecord
from hpscan.api.spec import HPScanSpec
from hpscan.api.store import S3Store
from hpscan.backends.base import ScanRef
from hpscan.errors import ArtifactStoreError
from hpscan.job.store import open_store

log = logging.getLogger(__name__)
RETRY_SECONDS = 60.0


def environment_secret(_namespace: str, _name: str, key: str) -> str:
    """Outside the operator (no Secrets): the key pair from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY."""
    variable = {"accessKeyId": "AWS_ACCESS_KEY_ID", "secretAccessKey": "AWS_SECRET_ACCESS_KEY"}.get(key, key)
    return os.environ[variable]


def wants_models_back(spec: HPScanSpec) -> bool:
    """Whether a batch job should return its models/ folder: the scan keeps models and names a store."""
    return spec.artifacts.save_models and spec.artifacts.store is not None


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
        self._retry_at: dict[tuple[str, str], float] = {}
        self._stores: dict[tuple[str, str], S3Store] = {}
        self._waiting: dict[tuple[str, str], dict[str, tuple[Path, ResultRecord]]] = {}
        self._said: set[str] = set()

    def watch(self, scan: ScanRef, spec: HPScanSpec) -> None:
        if wants_models_back(spec) and spec.artifacts.store is not None:
            self._stores[(scan.namespace, scan.name)] = spec.artifacts.store.s3

    def returned(self, scan: ScanRef, sandbox: Path, records: Iterable[ResultRecord]) -> None:
        """A job's output came back into ``sandbox``: upload the models of its succeeded records."""
        key = (scan.namespace, scan.name)
        if key not in self._stores:
            return
        waiting = self._waiting.setdefault(key, {})
        for record in records:
            folder = sandbox / MODELS_DIR / record.id
            if record.status == "succeeded" and (folder / MODEL_FILE).is_file():
                waiting[record.id] = (folder, record)
        self.flush(scan)

    def flush(self, scan: ScanRef) -> None:
        """Upload what waits; stop at the first failure (the store is down or refuses) and try again no sooner than
        ``retry_seconds`` later."""
        key = (scan.namespace, scan.name)
        waiting = self._waiting.get(key)
        if not waiting or self.clock() < self._retry_at.get(key, 0.0):
            return
        try:
            store = open_store(self._stores[key], scan.namespace, scan.name, self.read_secret)
            for combination, (folder, record) in list(waiting.items()):
                store.upload_model(folder, record)
                shutil.rmtree(folder, ignore_errors=True)
                del waiting[combination]
        except ArtifactStoreError as error:
            self._retry_at[key] = self.clock() + self.retry_seconds
            if error.cause not in self._said:
                self._said.add(error.cause)
                log.warning("%s; %d returned model(s) wait in their sandboxes for a later try", error, len(waiting))

    def pending(self, scan: ScanRef) -> int:
        return len(self._waiting.get((scan.namespace, scan.name), {}))
