"""Trained models in an S3-compatible object store (spec.artifacts.store), through boto3.

One client for every side: a Kubernetes shard job uploads its models as their records appear (``ModelUploader``
in the shard runner), the operator uploads HTCondor's from the returned sandbox and prunes a finished scan to
what spec.artifacts keeps, and ``hpscan models SCAN`` / ``hpscan fetch-model SCAN`` list and download. The
layout is hpscan.api.store's: ``<prefix>/<namespace>/<scan>/<combination id>/<file>``, the payload's files plus
hpscan's ``record.json`` (the combination's result record: what ranks it, whatever the payload's model.json says);
``model.json`` goes last, so a folder is listed only once it is whole (as the payload writes it last on disk).

Every failure is an ``ArtifactStoreError`` naming the store, the bucket and the cause in words (a wrong key, a
missing bucket, a server that does not answer), never a botocore traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from hpscan.api.contract import MODEL_FILE, MODELS_DIR, ResultRecord
from hpscan.api.store import (
    ACCESS_KEY_ENV,
    CHECKPOINTS_PART,
    RECORD_FILE,
    SECRET_KEY_ENV,
    STORE_ENV,
    ModelStoreLocation,
    S3Store,
)
from hpscan.errors import ArtifactStoreError

_UNKNOWN_KEY = "the access key id is not known to the store (check the Secret's access key id)"
_CAUSES = {
    "InvalidAccessKeyId": _UNKNOWN_KEY,
    "XAdminUserNotFound": _UNKNOWN_KEY,  # versitygw's word for it
    "SignatureDoesNotMatch": "the secret access key does not match the access key id (check the Secret)",
    "NoSuchBucket": "the bucket does not exist (hpscan never creates one: create it, or fix artifacts.store.s3.bucket)",
    "AccessDenied": "the credentials are not allowed to use this bucket or prefix",
    "InvalidBucketName": "the bucket name is not valid for this store",
}
FINAL_CODES = frozenset(_CAUSES)
"""Errors that retrying will not mend (a credential, a bucket): a shard job stops at once on them (exit 2)."""


def explain(error: BaseException, location: ModelStoreLocation, doing: str) -> ArtifactStoreError:
    """A boto error as one sentence naming the store and the cause; ``final`` when retrying cannot help."""
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

    where = f"artifacts.store {location.url}"
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        code = str(details.get("Code") or error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?"))
        cause = _CAUSES.get(code) or f"{details.get('Message') or 'the store refused'}"
        return ArtifactStoreError(f"{where}: {doing} failed: {code}: {cause}", final=code in FINAL_CODES, cause=code)
    if isinstance(error, EndpointConnectionError):
        return ArtifactStoreError(
            f"{where}: {doing} failed: the store does not answer at {location.endpoint}",
            cause="EndpointConnectionError",
        )
    if isinstance(error, BotoCoreError):
        return ArtifactStoreError(f"{where}: {doing} failed: {error}")
    return ArtifactStoreError(f"{where}: {doing} failed: {error}")


class ModelStore:
    """One scan's models in a bucket: check, upload, list, download, delete (all keys under its prefix)."""

    def __init__(self, location: ModelStoreLocation, access_key_id: str, secret_access_key: str) -> None:
        import boto3
        from botocore.config import Config

        self.location = location
        self.client = boto3.client(
            "s3",
            endpoint_url=location.endpoint,
            region_name=location.region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=5,
                read_timeout=60,
                # The checksums newer boto3 sends by default are not understood by every S3 implementation.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    def _call(self, doing: str, method: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, method)(**kwargs)
        except (ClientError, BotoCoreError) as error:
            raise explain(error, self.location, doing) from None

    def check(self) -> None:
        """Raise an ArtifactStoreError when the bucket cannot be listed with these credentials."""
        self._call(
            "listing the bucket",
            "list_objects_v2",
            Bucket=self.location.bucket,
            Prefix=self.location.key_prefix,
            MaxKeys=1,
        )

    def upload_model(self, folder: Path, record: ResultRecord) -> int:
        """Upload one model folder with its record (record.json, then model.json last); returns the files sent."""
        files = sorted(
            (p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).as_posix() != RECORD_FILE),
            key=lambda p: (p.relative_to(folder).as_posix() == MODEL_FILE, str(p)),
        )
        whole = files[-1:] if files and files[-1].relative_to(folder).as_posix() == MODEL_FILE else []
        for path in files[: len(files) - len(whole)]:
            with path.open("rb") as body:  # streamed: a network's weights can be large
                self._put(record.id, path.relative_to(folder).as_posix(), body)
        self._put(record.id, RECORD_FILE, json.dumps(record.to_wire()).encode())
        for path in whole:
            self._put(record.id, MODEL_FILE, path.read_bytes())
        return len(files) + 1

    def _put(self, combination_id: str, relative: str, body: bytes | BinaryIO) -> None:
        self.put(self.location.model_key(combination_id, relative), body)

    def put(self, key: str, body: bytes | BinaryIO) -> None:
        self._call(f"uploading {key}", "put_object", Bucket=self.location.bucket, Key=key, Body=body)

    def download(self, key: str, target: Path) -> None:
        self._call(f"downloading {key}", "download_file", Bucket=self.location.bucket, Key=key, Filename=str(target))

    def _get(self, key: str) -> bytes:
        answer = self._call(f"reading {key}", "get_object", Bucket=self.location.bucket, Key=key)
        return bytes(answer["Body"].read())

    def keys(self, prefix: str | None = None) -> list[str]:
        """Every key under ``prefix`` (the scan's prefix when None), all pages."""
        keys: list[str] = []
        token: dict[str, str] = {}
        prefix = self.location.key_prefix if prefix is None else prefix
        while True:
            page = self._call(
                f"listing {prefix}", "list_objects_v2", Bucket=self.location.bucket, Prefix=prefix, **token
            )
            keys += [item["Key"] for item in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return keys
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def model_ids(self) -> dict[str, list[str]]:
        """Every combination id with a folder under the scan's prefix -> its keys (whole or not)."""
        found: dict[str, list[str]] = {}
        for key in self.keys():
            combination, _, rest = key[len(self.location.key_prefix) :].partition("/")
            if rest and combination != CHECKPOINTS_PART:
                found.setdefault(combination, []).append(key)
        return found

    def models(self) -> dict[str, ResultRecord | None]:
        """Every whole model (its model.json uploaded) -> its record (None when record.json is missing or unreadable:
        such a model is never ranked, so never pruned)."""
        found: dict[str, ResultRecord | None] = {}
        for combination, keys in sorted(self.model_ids().items()):
            if self.location.model_key(combination, MODEL_FILE) not in keys:
                continue  # still being uploaded, or an upload that broke off
            record_key = self.location.model_key(combination, RECORD_FILE)
            record = None
            if record_key in keys:
                try:
                    record = ResultRecord.model_validate_json(self._get(record_key))
                except ValueError:
                    record = None
            found[combination] = record if record is None or record.id == combination else None
        return found

    def download_model(self, combination_id: str, out_dir: Path) -> int:
        """Download one model folder into ``out_dir`` (created); returns how many files came."""
        keys = self.model_ids().get(combination_id, [])
        if self.location.model_key(combination_id, MODEL_FILE) not in keys:
            raise ArtifactStoreError(
                f"artifacts.store {self.location.url}: no whole model of {combination_id}", final=True
            )
        base = self.location.model_key(combination_id)
        for key in keys:
            target = out_dir / key[len(base) :]
            if ".." in Path(key[len(base) :]).parts:
                raise ArtifactStoreError(f"artifacts.store {self.location.url}: refusing key {key} (a '..' part)")
            target.parent.mkdir(parents=True, exist_ok=True)
            self.download(key, target)
        return len(keys)

    def delete_models(self, combination_ids: Iterable[str]) -> int:
        """Delete the folders of these combinations; returns how many objects went."""
        doomed = set(combination_ids)
        return self.delete_keys(
            [key for combination, found in self.model_ids().items() if combination in doomed for key in found]
        )

    def delete_keys(self, keys: list[str]) -> int:
        """Delete these keys (of this scan's); returns how many objects went."""
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            batch = [{"Key": key} for key in keys[start : start + 1000]]
            answer = self._call(
                f"deleting {batch[0]['Key']}",
                "delete_objects",
                Bucket=self.location.bucket,
                Delete={"Objects": batch, "Quiet": True},
            )
            if errors := answer.get("Errors"):
                first = errors[0]
                raise ArtifactStoreError(
                    f"artifacts.store {self.location.url}: deleting {first.get('Key')} failed: {first.get('Code')}: "
                    f"{first.get('Message')}"
                )
        return len(keys)


def open_store(store: S3Store, namespace: str, scan: str, read_secret: Callable[[str, str, str], str]) -> ModelStore:
    """One scan's models in ``store``, with the key pair of its Secret (``read_secret(namespace, name, key)``)."""
    location = ModelStoreLocation.of(store, namespace, scan)
    ref = store.secret_ref
    try:
        access_key_id = read_secret(namespace, ref.name, ref.access_key_id_key)
        secret_access_key = read_secret(namespace, ref.name, ref.secret_access_key_key)
    except Exception as error:  # no such Secret or key, or not allowed to read it: the client's own error types
        cause = getattr(error, "reason", None) or f"{type(error).__name__}: {error}"
        raise ArtifactStoreError(
            f"artifacts.store {location.url}: the key pair cannot be read from Secret {namespace}/{ref.name} "
            f"(keys {ref.access_key_id_key}, {ref.secret_access_key_key}): {cause}",
            final=True,
        ) from None
    return ModelStore(location, access_key_id, secret_access_key)


def store_from_env(environ: Mapping[str, str] | None = None) -> ModelStore | None:
    """The store a shard pod was given (``HPSCAN_MODEL_STORE`` and the credential variables), or None."""
    environ = os.environ if environ is None else environ
    raw = environ.get(STORE_ENV)
    if not raw:
        return None
    location = ModelStoreLocation.model_validate_json(raw)
    missing = [name for name in (ACCESS_KEY_ENV, SECRET_KEY_ENV) if not environ.get(name)]
    if missing:
        raise ArtifactStoreError(
            f"artifacts.store {location.url}: {' and '.join(missing)} not set (the Secret of artifacts.store.s3.secretRef "
            "lacks the key, or is empty)",
            final=True,
        )
    return ModelStore(location, environ[ACCESS_KEY_ENV], environ[SECRET_KEY_ENV])


class ModelUploader:
    """Uploads the model of each succeeded record of a shard as the record appears, then frees its local folder.

    The job uploads every model its shard trained: which ones the scan keeps depends on the records of all shards,
    so the operator prunes when the scan ends (hpscan.core.artifacts.models_to_keep). A failed upload never stops
    records: it is said once on stderr, the folder stays, and the uploads wait ``retry_seconds`` before the next
    try (a store that does not answer must not slow the records down), with a last try at the end (``finish``)."""

    def __init__(
        self,
        store: ModelStore,
        out_dir: Path,
        retry_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.models_dir = out_dir / MODELS_DIR
        self.pending: list[str] = []
        self.records: dict[str, ResultRecord] = {}
        self.uploaded = 0
        self.said: set[str] = set()
        self.retry_seconds, self.clock = retry_seconds, clock
        self.retry_at = 0.0

    def __call__(self, records: Iterable[ResultRecord]) -> None:
        for record in records:
            if record.status == "succeeded" and record.id not in self.records:
                self.records[record.id] = record
                self.pending.append(record.id)
        if self.clock() >= self.retry_at:
            self._upload()

    def finish(self) -> None:
        """The last try, whatever the wait: the pod ends after it."""
        self._upload()

    def _upload(self) -> None:
        while self.pending:
            combination = self.pending[0]
            folder = self.models_dir / combination
            if (folder / MODEL_FILE).is_file():  # else the payload saved none (keep: none, a failed save)
                try:
                    self.store.upload_model(folder, self.records[combination])
                except ArtifactStoreError as error:
                    self.retry_at = self.clock() + self.retry_seconds
                    if error.cause not in self.said:  # once per cause, not once per file
                        self.said.add(error.cause)
                        print(
                            f"hpscan: {error}; the records go on, the models stay here for a later try", file=sys.stderr
                        )
                    return
                self.uploaded += 1
                shutil.rmtree(folder, ignore_errors=True)  # the emptyDir holds only what is not uploaded yet
            self.pending.pop(0)
