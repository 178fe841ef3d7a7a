"""The channel to workers that pull trials (ShardFile.pull; hpscan.api.trials): each worker's inbox ConfigMap.

The operator appends trial lines (trials.jsonl) and stop lines (stop.jsonl) to the inbox's data; the worker reads
them and writes its per-epoch reports (progress.jsonl) into the same ConfigMap (the in-pod half is
``hpscan.job.configmap``). Before a hand-out the operator creates the record pages its new trials will fill: the
pod may patch them at once, and has no right to create them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from hpscan.api.trials import Assignment, Progress, read_progress
from hpscan.backends.kubernetes.api import KubernetesApi
from hpscan.backends.kubernetes.manifests import pull_page
from hpscan.backends.kubernetes.names import LABEL_SHARD, shard_pages_name
from hpscan.backends.kubernetes.shard_objects import ShardObjects
from hpscan.backends.kubernetes.state import ScanState
from hpscan.job.pages import (
    PAGE_SIZE_KEY,
    PROGRESS_KEY,
    STOPS_KEY,
    TRIALS_KEY,
    inbox_assignment,
    inbox_name,
    json_lines,
    pulled_trials,
    trial_page_count,
)


class PullChannel:
    """Hands trials and stops to the workers of a scan through their inboxes, and reads back what they report."""

    def __init__(self, api: KubernetesApi, objects: ShardObjects) -> None:
        self.api = api
        self.objects = objects

    def _inbox(self, state: ScanState, shard: int) -> tuple[str, dict[str, str]]:
        """The worker's inbox name and the text this operator wrote there (read from the API server the first time)."""
        scan = state.scan
        name = inbox_name(shard_pages_name(scan.name, shard))
        if name not in state.inboxes:
            data = self.api.core.read_namespaced_config_map(name, scan.namespace).data or {}
            state.inboxes[name] = {k: data.get(k) or "" for k in (TRIALS_KEY, STOPS_KEY)}
            state.page_sizes[name] = int(json.loads(data.get(PAGE_SIZE_KEY) or "0") or 0)
        return name, state.inboxes[name]

    def assign(self, state: ScanState, shard: int, lines: Sequence[dict]) -> None:
        """Append to the worker's trials; first create the record pages its new trials will fill."""
        scan = state.scan
        name, held = self._inbox(state, shard)
        text = held[TRIALS_KEY] + "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)
        size = state.page_sizes.get(name) or 1
        before = trial_page_count(pulled_trials({TRIALS_KEY: held[TRIALS_KEY]}), size)
        after = trial_page_count(pulled_trials({TRIALS_KEY: text}), size)
        for page in range(before, after):
            self.api.create(self.api.core.create_namespaced_config_map, scan.namespace, pull_page(scan, shard, page))
        self.api.core.patch_namespaced_config_map(name, scan.namespace, {"data": {TRIALS_KEY: text}})
        held[TRIALS_KEY] = text

    def stop_trials(self, state: ScanState, shard: int, trial_ids: Sequence[str]) -> None:
        """Append stop lines: the worker stops these trials at their next epoch boundary."""
        name, held = self._inbox(state, shard)
        text = held[STOPS_KEY] + "".join(json.dumps({"id": i}) + "\n" for i in trial_ids)
        self.api.core.patch_namespaced_config_map(name, state.scan.namespace, {"data": {STOPS_KEY: text}})
        held[STOPS_KEY] = text

    def progress(self, state: ScanState) -> list[Progress]:
        """The newest per-epoch reports of inboxes that changed since the last call."""
        reports: list[Progress] = []
        for configmap in self.objects.inboxes(state):
            name = configmap["metadata"]["name"]
            version = str(configmap["metadata"].get("resourceVersion") or "")
            if version and state.progress_seen.get(name) == version:
                continue
            state.progress_seen[name] = version
            reports += read_progress(json_lines((configmap.get("data") or {}).get(PROGRESS_KEY)))
        return reports

    def assignments(self, state: ScanState) -> dict[int, Assignment]:
        """What each worker's inbox says it was handed (a restarted operator rebuilds its search from these)."""
        return {
            int(cm["metadata"]["labels"][LABEL_SHARD]): inbox_assignment(cm.get("data"))
            for cm in self.objects.inboxes(state)
        }
