"""The Kubernetes live channel, inside a shard pod: each record is merge-patched into the shard's ConfigMap.

The ConfigMap is the shard's mailbox: key ``shard.json`` holds the shard file (mounted read-only into the pod),
and every other key is one record, named by its combination id, so concurrent patches never conflict and a
retried pod starts from what earlier attempts recorded. The operator's Kubernetes backend reads the same keys
back with ``records_of``. The pod's ServiceAccount may only get/patch its scan's shard ConfigMaps.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hpscan.api.contract import ResultRecord, parse_record

SHARD_KEY = "shard.json"
"""The key holding the shard file; every other key is a record."""

CONFIGMAP_ENV = "HPSCAN_CONFIGMAP"
NAMESPACE_ENV = "HPSCAN_NAMESPACE"
"""Set on the shard's container by the Job: which ConfigMap, in which namespace, receives the records."""


def records_of(data: Mapping[str, str] | None) -> tuple[list[ResultRecord], int]:
    """The records a shard ConfigMap's data holds, and how many entries could not be read (one bad key never
    hides the rest)."""
    records, unreadable = [], 0
    for key, value in (data or {}).items():
        if key == SHARD_KEY:
            continue
        try:
            records.append(parse_record(value))
        except ValueError:
            unreadable += 1
    return records, unreadable


def record_patch(records: Sequence[ResultRecord]) -> dict[str, Any]:
    """The merge patch that adds records to a shard ConfigMap: one key per id, so patches never conflict."""
    return {"data": {r.id: json.dumps(r.to_wire(), separators=(",", ":")) for r in records}}


class ConfigMapChannel:
    """A LiveChannel that merge-patches each record into the shard's ConfigMap."""

    def __init__(self, configmap: str, namespace: str, api_client: Any = None) -> None:
        from kubernetes import client, config

        if api_client is None:
            config.load_incluster_config()
        self.core = client.CoreV1Api(api_client)
        self.configmap, self.namespace = configmap, namespace

    def recorded(self) -> list[ResultRecord]:
        """What earlier attempts recorded (a retried pod starts from these)."""
        configmap = self.core.read_namespaced_config_map(self.configmap, self.namespace)
        return records_of(configmap.data)[0]

    def publish(self, records: list[ResultRecord]) -> None:
        self.core.patch_namespaced_config_map(self.configmap, self.namespace, record_patch(records))


def open_channel(shard_file: Path) -> ConfigMapChannel:
    """The channel of ``hpscan shard-run --channel kubernetes``: the ConfigMap named in the pod's environment."""
    configmap = os.environ.get(CONFIGMAP_ENV)
    if not configmap:
        raise ValueError(f"--channel kubernetes needs {CONFIGMAP_ENV} (set by the shard's Job)")
    return ConfigMapChannel(configmap, os.environ.get(NAMESPACE_ENV, "default"))
