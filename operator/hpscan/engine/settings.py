"""How a shell runs its steps: one frozen object, set once (kopf's OperatorSettings is the model)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EngineSettings:
    """The options a shell gives every step it runs; the operator builds one at startup (hpscan.controller),
    `hpscan run` one per run (hpscan.cli.run)."""

    max_status_shards: int | None = None
    """At most this many shards listed in status.shards (the most notable; etcd holds the operator's status);
    None: every shard (a local run's status.json)."""
    probe_cache_seconds: float = 3600
    """How long an ended probe of a site, image and check speaks for the next scans (the operator's
    defaults.probeCacheSeconds; 0: every scan probes its sites)."""
    poll_seconds: float = 0.5
    """Between two steps of a shell that loops (`hpscan run`); the operator's timer keeps its own interval."""
