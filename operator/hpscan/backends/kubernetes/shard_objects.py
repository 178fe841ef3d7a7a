"""How the Kubernetes backend reads a scan's shard Jobs and ConfigMaps (record pages and inboxes): from the
operator's watch cache when it has one, else with one LIST each; and, since the cache of Jobs and that of ConfigMaps
may lag each other, record pages read once more from the API server before a Complete Job's missing records count."""

from __future__ import annotations

from typing import Any, Protocol

from hpscan.api.status import ShardPhase, ShardStatus
from hpscan.backends.base import ScanRef
from hpscan.backends.kubernetes.api import KubernetesApi
from hpscan.backends.kubernetes.names import LABEL_PAGE, LABEL_ROLE, LABEL_SCAN, LABEL_SHARD
from hpscan.backends.kubernetes.state import ScanState
from hpscan.job.pages import INBOX_SUFFIX, unrecorded


class ShardObjectCache(Protocol):
    """A watch-fed view of a scan's shard Jobs and ConfigMaps (the operator's kopf indexes: an informer cache), so
    polling costs no API request. None from a method: not cached, LIST instead."""

    def jobs(self, namespace: str, scan: str) -> list[dict[str, Any]] | None: ...

    def configmaps(self, namespace: str, scan: str) -> list[dict[str, Any]] | None: ...


def shard_selector(scan: ScanRef) -> str:
    """The label selector of a scan's shard Jobs, pods and ConfigMaps."""
    return f"{LABEL_SCAN}={scan.name},{LABEL_ROLE}=shard"


class ShardObjects:
    """Reads the scans' shard objects through ``cache`` (None: every read is a LIST) and ``api``."""

    def __init__(self, api: KubernetesApi, cache: ShardObjectCache | None = None) -> None:
        self.api = api
        self.cache = cache

    def jobs(self, scan: ScanRef) -> list[dict[str, Any]]:
        """The scan's shard Jobs."""
        cached = self.cache.jobs(scan.namespace, scan.name) if self.cache is not None else None
        return cached if cached is not None else self.api.jobs(scan.namespace, shard_selector(scan))

    def configmaps(self, state: ScanState) -> list[dict[str, Any]]:
        """The scan's record pages and inboxes; pages read from the API server since the last fetch_records
        (confirm_records) in place of the cache's copies."""
        scan = state.scan
        cached = self.cache.configmaps(scan.namespace, scan.name) if self.cache is not None else None
        if cached is None:
            cached = self.api.configmaps(scan.namespace, shard_selector(scan))
        if fresh := {cm["metadata"]["name"]: cm for cm in state.fresh}:
            cached = [cm for cm in cached if cm["metadata"]["name"] not in fresh] + list(fresh.values())
        return cached

    def inboxes(self, state: ScanState) -> list[dict[str, Any]]:
        """The inbox ConfigMaps of the scan's workers that pull."""
        return [cm for cm in self.configmaps(state) if cm["metadata"]["name"].endswith(INBOX_SUFFIX)]

    def pages_now(self, scan: ScanRef, shard: int) -> dict[int, dict[str, Any]]:
        """A shard's record pages by number, as the API server holds them now (one LIST, past the watch cache)."""
        pages = self.api.configmaps(scan.namespace, f"{shard_selector(scan)},{LABEL_SHARD}={shard}")
        return {int(cm["metadata"]["labels"][LABEL_PAGE]): cm for cm in pages if LABEL_PAGE in cm["metadata"]["labels"]}

    def confirm_records(self, state: ScanState, states: dict[int, ShardStatus]) -> None:
        """A Job the watch cache shows Complete while its pages there lack records of what they hand out: its last
        page patches may not have reached the cache yet (two watches, no order between them). Its pages are read
        once from the API server, and the next fetch_records hands over what they hold: only records missing there
        too make the shard RecordsMissing (for a scan's last shard, a terminal phase: it is never looked at again).
        Without a cache nothing to do: the pages are listed after the Jobs, they cannot lag."""
        if self.cache is None:
            return
        cached: list[dict[str, Any]] | None = None
        for index, shard in sorted(states.items()):
            job = shard.job or ""
            if shard.phase != ShardPhase.SUCCEEDED or job in state.checked:
                continue
            cached = self.configmaps(state) if cached is None else cached
            mine = [cm for cm in cached if (cm["metadata"].get("labels") or {}).get(LABEL_SHARD) == str(index)]
            # A worker's inbox as this operator wrote it, when it did: the cache may lag that too.
            held = [state.inboxes.get(cm["metadata"]["name"]) or cm.get("data") or {} for cm in mine]
            if unrecorded(held):
                state.fresh.extend(self.pages_now(state.scan, index).values())
            state.checked.add(job)
