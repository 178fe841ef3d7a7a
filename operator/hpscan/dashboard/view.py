"""What the dashboard's page shows, as plain JSON, from a scan's records and status (pure: data in, data out)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from hpscan.api.contract import ResultRecord
from hpscan.api.spec import HPScan
from hpscan.api.status import ENDED_PHASES, HPScanStatus, ShardPhase
from hpscan.api.trials import Progress
from hpscan.core.eta import ShardProgress, estimate
from hpscan.core.planning import plan
from hpscan.report.parallel import figure, pruned_lines
from hpscan.report.rundir import ScanRun

MAX_FAILED = 50
"""Failed trials listed with their error (the latest ones): the page stays small at any scan size."""


def shard_progress(status: HPScanStatus, arrived: Mapping[int, list[float]]) -> list[ShardProgress]:
    """Each shard's progress for hpscan.core.eta from the status (sizes, phases, when running shards started) and
    when each shard's records arrived (seconds on the clock ``now`` uses)."""
    shards = []
    for shard in status.shards:
        times = sorted(arrived.get(shard.index, []))
        # it started when it began running, or at the latest when its first record came
        began = [shard.since.timestamp()] if shard.since is not None and shard.phase == ShardPhase.RUNNING else []
        starts = began + times[:1]
        shards.append(
            ShardProgress(
                size=shard.total,
                done=shard.done,
                started=min(starts) if starts else None,
                records=len(times),
                first=times[0] if times else None,
                last=times[-1] if times else None,
                ended=shard.phase in ENDED_PHASES,
            )
        )
    return shards


def eta_seconds(status: HPScanStatus | None, arrived: Mapping[int, list[float]], now: float) -> float | None:
    """Seconds the scan has left (hpscan.core.eta, as `hpscan run` shows it), None while unknown or ended."""
    if status is None or not status.shards:
        return None
    shards = shard_progress(status, arrived)
    workers = max(1, sum(1 for s in status.shards if s.phase == ShardPhase.RUNNING))
    return estimate(shards, workers, now).seconds


def arrival_times(records: Iterable[ResultRecord], seen: Mapping[str, float | None]) -> dict[int, list[float]]:
    """When each shard's records arrived: a record's finished_at, else when the dashboard first saw it (None:
    already there when it started, at a time nobody knows; left out)."""
    times: dict[int, list[float]] = defaultdict(list)
    for record in records:
        at = record.finished_at.timestamp() if record.finished_at is not None else seen.get(record.id)
        if at is not None:
            times[record.shard].append(at)
    return dict(times)


def trials(run: ScanRun) -> dict[str, Any]:
    """The plotted lines' trials, in the figure's line order (pruned first, then succeeded worst first), as
    columns: the page filters them by the brushed axes and lists the best of the selection."""
    metric = run.scan.spec.objective.metric
    axes = [p.name for p in run.scan.spec.parameters]
    pruned = pruned_lines(run)
    ordered = list(reversed(run.ranked))
    records = [*pruned, *(r.record for r in ordered)]
    return {
        "axes": axes,
        "ids": [r.id for r in records],
        "values": [r.metrics[metric] for r in pruned] + [r.value for r in ordered],
        "status": [r.status for r in records],
        "shard": [r.shard for r in records],
        "parameters": [[r.parameters.get(a) for a in axes] for r in records],
    }


def sites(status: HPScanStatus | None) -> list[dict[str, Any]]:
    """Each site's state with its probe's reason and message (why a failing site fails, in its own words)."""
    if status is None:
        return []
    return [
        {
            "name": s.name,
            "backend": s.backend,
            "state": str(s.state),
            "reason": s.reason,
            "message": s.message,
            "running": s.running,
            "succeeded": s.succeeded,
            "failed": s.failed,
        }
        for s in status.sites
    ]


def shards(status: HPScanStatus | None) -> list[dict[str, Any]]:
    """Each shard (a worker, for scans that pull) with its phase, site, records, attempts and moves."""
    if status is None:
        return []
    return [
        {
            "index": s.index,
            "site": s.site,
            "phase": str(s.phase),
            "done": s.done,
            "total": s.total,
            "failed": s.failed,
            "attempts": s.attempts,
            "moves": s.moves,
            "reason": s.reason or "",
            "message": s.message or "",
        }
        for s in status.shards
    ]


def view(
    scan: HPScan,
    run: ScanRun | None,
    status: HPScanStatus | None,
    arrived: Mapping[int, list[float]],
    now: float,
) -> dict[str, Any]:
    """The page's whole state: progress and ETA, the best (and those tied with it within errors), a multi-objective
    scan's Pareto set, the plot (None before the first record), its trials, the failed trials with their errors,
    the sites and the shards."""
    total = (run.plan if run is not None else plan(scan.metadata.name, scan.spec)).total
    counts = {
        "succeeded": len(run.ranked) if run else 0,
        "failed": len(run.failed) if run else 0,
        "pruned": len(run.pruned) if run else 0,
    }
    best = run.best if run is not None and run.ranked else None
    return {
        "scan": scan.metadata.name,
        "metric": scan.spec.objective.metric,
        "goal": scan.spec.objective.goal,
        "phase": run.phase if run is not None else (str(status.phase) if status is not None else "Pending"),
        "message": (status.message or "") if status is not None else "",
        "total": total,
        "recorded": sum(counts.values()),
        **counts,
        "best": {"id": best.id, "value": best.value, "parameters": best.record.parameters} if best else None,
        "tied": list(run.tied) if run is not None else [],
        "pareto": list(run.pareto) if run is not None else [],
        "eta_seconds": eta_seconds(status, arrived, now),
        "at": now,
        "figure": figure(run, pruned=True) if run is not None else None,
        "trials": trials(run) if run is not None else None,
        "failed_trials": [
            {"id": r.id, "shard": r.shard, "error": r.error or ""} for r in (run.failed[-MAX_FAILED:] if run else [])
        ],
        "sites": sites(status),
        "shards": shards(status),
    }


def _number(value: float | None) -> float | None:
    """None for a missing or non-finite value (a diverged epoch's NaN has no place in JSON)."""
    return value if value is not None and math.isfinite(value) else None


NO_EPOCHS = "workers that pull trials report them"
"""Why a trial may have no curve: a grid scan's shards do not report epochs (the page says so)."""


def curve(progress: Iterable[Progress], trial_id: str, note: str = NO_EPOCHS) -> dict[str, Any]:
    """A trial's per-epoch metrics (progress.jsonl of workers that pull), one list per metric, by epoch; ``note``
    says where epochs come from, for a trial that has none."""
    epochs = sorted({p.epoch: p for p in progress if p.id == trial_id}.values(), key=lambda p: p.epoch)
    names = sorted({name for p in epochs for name in p.metrics})
    return {
        "id": trial_id,
        "epochs": [p.epoch for p in epochs],
        "metrics": {name: [_number(p.metrics.get(name)) for p in epochs] for name in names},
        "note": note,
    }
