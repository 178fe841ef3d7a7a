"""One step of a scan, the same for `hpscan run` and the operator: poll -> decide -> act -> fold records -> status.

The two shells around it differ only in where state lives between steps: `hpscan.local_scan` keeps it in the
run folder and loops every half second; `hpscan.controller` keeps it in the HPScan's status and kopf's memo and
runs one step per timer tick. Decisions are the pure functions of hpscan.core.decisions; the backends act.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from hpscan.api.contract import ResultRecord
from hpscan.api.sites import Site
from hpscan.api.spec import HPScanSpec
from hpscan.api.status import ACTIVE_PHASES, TERMINAL_SCAN_PHASES, HPScanStatus, ShardPhase, ShardStatus
from hpscan.backends.base import Backend, ScanRef, ShardLaunch
from hpscan.core.decisions import assign_sites, decide
from hpscan.core.results import Aggregate
from hpscan.core.summary import build_status


@dataclass(frozen=True)
class Placement:
    """Where one shard runs: the backend that runs it and its site (None: that backend's own default)."""

    backend: str
    site: Site | None


def place(shard_count: int, sites: Sequence[Site], default_backend: str) -> dict[int, Placement]:
    """Every shard's placement: sites spread by weight (hpscan.core.decisions.assign_sites); without sites every
    shard goes to ``default_backend``."""
    return {
        shard: Placement(site.backend if site is not None else default_backend, site)
        for shard, site in assign_sites(shard_count, sites).items()
    }


@dataclass
class StepResult:
    """What one step saw and did."""

    status: HPScanStatus
    states: dict[int, ShardStatus]
    new_records: list[ResultRecord] = field(default_factory=list)
    """Records that changed the summary this step, in arrival order (the local shell appends them to
    results.jsonl)."""


def step(
    scan: ScanRef,
    spec: HPScanSpec,
    agg: Aggregate,
    backends: Mapping[str, Backend],
    placement: Mapping[int, Placement],
    *,
    known: Mapping[int, ShardStatus] | None = None,
    previous: HPScanStatus | None = None,
    generation: int | None = None,
    max_status_shards: int | None = None,
) -> StepResult:
    """Bring a scan one step closer to done. ``backends`` holds at least every backend named in ``placement``;
    ``known`` holds shard states no backend reports (e.g. shards a local re-run found complete). Raises the
    backends' HPScanErrors (e.g. SchedulerUnavailable): the shell decides what a failed step means."""
    planned = agg.plan
    used = {name: backends[name] for name in sorted({p.backend for p in placement.values()})}
    states: dict[int, ShardStatus] = dict(known or {})
    new_records: list[ResultRecord] = []
    for backend in used.values():
        backend.track(scan, spec)
        states.update(backend.poll(scan))
        new_records += [record for record in backend.fetch_records(scan) if agg.add(record)]
        agg.unreadable[f"{backend.name} channel"] = backend.unreadable(scan)

    decision = decide(spec, planned.shard_count, states)
    for name, backend in used.items():
        if stop := [i for i in decision.stop if placement[i].backend == name]:
            backend.cancel(scan, stop)
        if start := [i for i in decision.start if placement[i].backend == name]:
            backend.prepare(scan, spec, planned.shard_count)
            backend.submit(scan, spec, [ShardLaunch(planned.shard_file(i), placement[i].site) for i in start])
    for i in decision.start:  # just submitted: Pending until the backend reports otherwise
        site = placement[i].site
        states.setdefault(i, ShardStatus(index=i, site=site.name if site is not None else None))
    for i in decision.stop:
        states[i] = states[i].model_copy(update={"phase": ShardPhase.SUSPENDED})

    status = build_status(
        planned,
        agg,
        states,
        suspend=spec.suspend,
        previous=previous,
        generation=generation,
        max_shards=max_status_shards,
    )
    if status.phase in TERMINAL_SCAN_PHASES:  # e.g. too many failed combinations: stop what still runs
        active = [i for i, state in states.items() if state.phase in ACTIVE_PHASES]
        for name, backend in used.items():
            if mine := [i for i in active if placement[i].backend == name]:
                backend.cancel(scan, mine)
    return StepResult(status, states, new_records)
