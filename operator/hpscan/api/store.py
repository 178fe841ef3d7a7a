"""Where a cluster scan keeps its trained models: an S3-compatible object store (spec.artifacts.store).

The layout in the bucket is part of the contract, the same for every backend and reader::

    <prefix>/<namespace>/<scan>/<combination id>/<the payload's files, model.json among them>
    <prefix>/<namespace>/<scan>/_checkpoints/<trial id>/<version>/<the payload's files, checkpoint.json last>

(trial checkpoints of Kubernetes shard jobs while their trials run, docs/checkpoints.md; ``_`` is in no combination
id, so no model folder is ever read as one).

Kubernetes shard jobs upload each model as its record appears (credentials from the Secret as environment
variables, ``CREDENTIAL_ENV``); the operator uploads HTCondor's from the returned sandbox, prunes to what
spec.artifacts keeps when the scan ends, and ``hpscan models SCAN`` reads the same keys. Pure: no client here.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from hpscan.api.common import CamelModel

ACCESS_KEY_ENV = "AWS_ACCESS_KEY_ID"
SECRET_KEY_ENV = "AWS_SECRET_ACCESS_KEY"
CREDENTIAL_ENV = (ACCESS_KEY_ENV, SECRET_KEY_ENV)
"""The variables a shard pod gets the store's credentials in (the names every S3 client reads)."""

STORE_ENV = "HPSCAN_MODEL_STORE"
"""A shard pod's store, as the JSON of ``ModelStoreLocation``: set only when its scan keeps models in a store."""

RECORD_FILE = "record.json"
"""hpscan's own file in each stored model folder: the combination's result record (what ranks and prunes it,
whatever the payload writes in model.json). Uploaded before model.json, which comes last."""

CHECKPOINTS_PART = "_checkpoints"
"""The folder of a scan's prefix that holds its trials' checkpoints while they run."""

CHECKPOINT_MANIFEST = "checkpoint.json"
"""hpscan's own file in each stored checkpoint version, uploaded after the payload's files: the files and their
sizes. A version without it is an upload that broke off, never restored."""

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
_ENDPOINT = r"^https?://[^/?#]+/?$"
PREFIX_RULE = "slash-separated parts of letters, digits, '_', '.' and '-' (no leading, trailing or double slash)"


class S3SecretRef(CamelModel):
    """A Secret in the scan's namespace holding the store's access key pair."""

    name: str = Field(
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        max_length=253,
        description="Name of the Secret in the HPScan's namespace.",
    )
    access_key_id_key: str = Field(
        "accessKeyId", min_length=1, description="Key of the Secret holding the access key id."
    )
    secret_access_key_key: str = Field(
        "secretAccessKey", min_length=1, description="Key of the Secret holding the secret access key."
    )


class S3Store(CamelModel):
    """An S3-compatible object store (AWS S3, Ceph RGW, MinIO, versitygw...). Models go under
    <prefix>/<namespace>/<scan>/<combination id>/ in `bucket`."""

    endpoint: str = Field(
        min_length=1,
        max_length=2048,
        json_schema_extra={"pattern": _ENDPOINT},
        description="URL of the S3 API, e.g. https://s3.cern.ch or http://minio.storage:9000 (path-style requests).",
    )
    bucket: str = Field(
        min_length=3,
        max_length=63,
        json_schema_extra={"pattern": _BUCKET.pattern},
        description="The bucket (it must exist: hpscan never creates one): 3-63 lowercase letters, digits, dots, hyphens.",
    )
    prefix: str = Field(
        "hpscan",
        max_length=512,
        json_schema_extra={"pattern": f"^$|{_PREFIX.pattern}"},
        description="Key prefix of every model; <prefix>/<namespace>/<scan>/<combination id>/... (no leading or "
        "trailing slash).",
    )
    region: str = Field("us-east-1", min_length=1, description="Region the requests are signed for.")
    secret_ref: S3SecretRef = Field(description="The access key pair, from a Secret in the scan's namespace.")

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"artifacts.store.s3.endpoint must be an http:// or https:// URL with a host, not {value!r}"
            )
        if parts.path.strip("/") or parts.query:
            raise ValueError(
                f"artifacts.store.s3.endpoint is the server's URL only ({parts.scheme}://{parts.netloc}); put the "
                "bucket in `bucket` and key parts in `prefix`"
            )
        return value

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        if not _BUCKET.fullmatch(value) or ".." in value or re.fullmatch(r"\d+\.\d+\.\d+\.\d+", value):
            raise ValueError(
                f"artifacts.store.s3.bucket {value!r} is not a bucket name: 3-63 lowercase letters, digits, dots and "
                "hyphens, starting and ending with a letter or digit, no '..', not an IP address"
            )
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if value and not _PREFIX.fullmatch(value):
            raise ValueError(f"artifacts.store.s3.prefix {value!r}: {PREFIX_RULE}")
        return value


class ArtifactStore(CamelModel):
    """Where a cluster scan keeps its models. One kind for now: s3."""

    s3: S3Store = Field(description="An S3-compatible object store.")


class ModelStoreLocation(CamelModel):
    """One scan's models in a store: what a shard job, the operator and the CLI need besides credentials."""

    endpoint: str
    bucket: str
    region: str = "us-east-1"
    key_prefix: str = Field(description="<prefix>/<namespace>/<scan>/, every model's keys start with it.")

    @classmethod
    def of(cls, store: S3Store, namespace: str, scan: str) -> ModelStoreLocation:
        return cls(
            endpoint=store.endpoint,
            bucket=store.bucket,
            region=store.region,
            key_prefix=scan_prefix(store, namespace, scan),
        )

    def model_key(self, combination_id: str, relative: str = "") -> str:
        """The key of a file of one combination's model folder (``relative``: its path inside the folder)."""
        return f"{self.key_prefix}{combination_id}/{relative}"

    @property
    def checkpoints_prefix(self) -> str:
        """``<prefix>/<namespace>/<scan>/_checkpoints/``: every stored checkpoint's keys start with it."""
        return f"{self.key_prefix}{CHECKPOINTS_PART}/"

    def checkpoint_key(self, trial_id: str, version: str = "", relative: str = "") -> str:
        """The key of a file of one stored checkpoint version (``trial_id`` alone: the trial's folder)."""
        return f"{self.checkpoints_prefix}{trial_id}/" + (f"{version}/{relative}" if version else "")

    @property
    def url(self) -> str:
        """s3://bucket/key_prefix at endpoint, for messages."""
        return f"s3://{self.bucket}/{self.key_prefix} at {self.endpoint}"


def scan_prefix(store: S3Store, namespace: str, scan: str) -> str:
    """``<prefix>/<namespace>/<scan>/``: where one scan's models live in the bucket."""
    return "/".join(part for part in (store.prefix, namespace, scan) if part) + "/"
