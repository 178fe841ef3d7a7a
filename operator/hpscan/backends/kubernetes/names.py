"""The names of what hpscan makes on Kubernetes for a scan: its labels, mounts and the DNS-label names of
Jobs, record pages and accounts, shortened with a hash when a scan's name is long (pure)."""

from __future__ import annotations

import hashlib

from hpscan.api.contract import shard_name
from hpscan.api.sites import Site

LABEL_SCAN = "hpscan.io/scan"

LABEL_SHARD = "hpscan.io/shard"

LABEL_ROLE = "hpscan.io/role"

LABEL_SITE = "hpscan.io/site"

LABEL_MOVES = "hpscan.io/moves"

LABEL_PAGE = "hpscan.io/page"

MANAGED_BY = {"app.kubernetes.io/managed-by": "hpscan"}

SHARD_MOUNT = "/hpscan/shard"

OUT_MOUNT = "/hpscan/out"

SHARD_FILE = f"{SHARD_MOUNT}/shard.json"
"""Where the shard runner writes the shard file it reads from the pages (an emptyDir), for the payload."""

CONTAINER = "payload"

PAGE_SUFFIX_ROOM = len("-p999999")
"""Room kept in a shard's page base name for the page suffix (MAX_COMBINATIONS pages at most)."""

TERMINATION_MESSAGE_PATH = "/dev/termination-log"
"""The container's termination message file (Kubernetes' default path): the payload writes its reason there."""

PAYLOAD_UID = 10001
"""The payload image's user (payload/Dockerfile); a high uid that no host account holds."""

IMAGE_PULL_TIMEOUT_ANNOTATION = "hpscan.io/image-pull-timeout"
"""The site's imagePullTimeoutSeconds, on each shard Job (a restarted operator reads it there)."""

KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
"""The site's kubernetes.queueName, on its shard and probe Jobs: Kueue admits them (docs/kueue.md)."""


def _name(scan: str, suffix: str, room: int = 0) -> str:
    """``<scan>-<suffix>``, shortened with a hash when it would pass 63 characters (a DNS label) less ``room``
    (kept for a suffix the name gets later)."""
    name = f"{scan}-{suffix}"
    if len(name) + room <= 63:
        return name
    digest = hashlib.sha256(scan.encode()).hexdigest()[:6]
    return f"{scan[: 63 - room - len(suffix) - 8]}-{digest}-{suffix}"


def job_name(scan: str, shard: int, moves: int = 0) -> str:
    """``<scan>-shard-NNN``, and ``-mK`` for a shard moved K times (its earlier Jobs may still be ending)."""
    return _name(scan, shard_name(shard) + (f"-m{moves}" if moves else ""))


def site_name(site: Site | None) -> str:
    """The name a site goes by in labels and Job names; "default" for the operator's own site."""
    return site.name if site is not None else "default"


def probe_job_name(scan: str, site: str) -> str:
    suffix = site if len(site) <= 20 else f"{site[:11]}-{hashlib.sha256(site.encode()).hexdigest()[:8]}"
    return _name(scan, f"probe-{suffix}")


def shard_pages_name(scan: str, shard: int) -> str:
    """The base name of a shard's record pages (``<scan>-shard-NNN``; page k is ``page_name(base, k)``)."""
    return _name(scan, shard_name(shard), PAGE_SUFFIX_ROOM)


def payload_account_name(scan: str) -> str:
    return _name(scan, "payload")
