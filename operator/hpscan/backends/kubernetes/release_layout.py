"""The previous release's layout of a shard on Kubernetes (docs/upgrades.md, charts/upgrade-from.yaml), kept for the
scans that release started.

The release gave each shard ONE ConfigMap, ``<scan>-shard-NNN``: the shard file under ``shard.json``, mounted
read-only into the pod at SHARD_MOUNT, and the records the pod patches into it as keys. Today's operator writes
record pages and the pod reads its shard file through the API. A scan made before an upgrade runs the payload image
its users built against the release, whose shard runner speaks only the older layout; so a Job today's operator
starts for such a shard (its Job deleted, a move to another Kubernetes site) is written in that layout: the shard's
ConfigMap mounted, its name in HPSCAN_CONFIGMAP. The ConfigMap is left as the release wrote it (its shard file lists
every combination of the shard; the pod skips those its records hold). Pure functions; the backend reads and sends.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from hpscan.backends.kubernetes.names import CONTAINER, job_name
from hpscan.job.configmap import CONFIGMAP_ENV
from hpscan.job.pages import SHARD_KEY  # the release's key of the whole shard file; today's page 0 holds its header

LAYOUT_ANNOTATION = "hpscan.io/layout"
SINGLE_CONFIGMAP = "single-configmap"
"""The annotation's value on a Job written in the release's layout (what `kubectl describe job` shows)."""


def single_configmap_name(scan: str, shard: int) -> str:
    """The release's ConfigMap of a shard: ``<scan>-shard-NNN``, the name of the shard's first Job."""
    return job_name(scan, shard)


def release_configmap(configmaps: Iterable[Mapping[str, Any]], scan: str, shard: int) -> str | None:
    """The name of the shard's ConfigMap in the release's layout among the scan's ConfigMaps, None when the shard
    has none (a shard of a scan made by today's operator: its pages are ``<scan>-shard-NNN-p<k>``, page 0 with a
    ``shard.json`` of its own)."""
    wanted = single_configmap_name(scan, shard)
    for configmap in configmaps:
        if configmap["metadata"]["name"] == wanted and SHARD_KEY in (configmap.get("data") or {}):
            return wanted
    return None


def in_release_layout(job: Mapping[str, Any], configmap: str) -> dict[str, Any]:
    """Today's shard Job (manifests.job_manifest), written in the release's layout: the ``shard`` volume is the
    shard's ConfigMap (read-only) instead of an emptyDir, and the records go to that ConfigMap. The command is the
    same: both runners read the shard file at SHARD_MOUNT/shard.json."""
    out = copy.deepcopy(dict(job))
    out["metadata"].setdefault("annotations", {})[LAYOUT_ANNOTATION] = SINGLE_CONFIGMAP
    pod = out["spec"]["template"]["spec"]
    pod["volumes"] = [
        {"name": "shard", "configMap": {"name": configmap}} if volume["name"] == "shard" else volume
        for volume in pod["volumes"]
    ]
    (container,) = (c for c in pod["containers"] if c["name"] == CONTAINER)
    for mount in container["volumeMounts"]:
        if mount["name"] == "shard":
            mount["readOnly"] = True
    container["env"] = [
        {"name": CONFIGMAP_ENV, "value": configmap} if variable["name"] == CONFIGMAP_ENV else variable
        for variable in container["env"]
    ]
    return out
