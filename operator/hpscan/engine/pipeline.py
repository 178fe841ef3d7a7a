"""One step of a scan, as a pipeline of named stages (hpscan.engine's docstring gives the order)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from hpscan.api.contract import ResultRecord
from hpscan.api.spec import HPScanSpec
from hpscan.api.status import HPScanStatus, ShardStatus, SiteStatus
from hpscan.backends.base import Backend, ScanRef
from hpscan.core.brokering import Target, with_shard_counts
from hpscan.core.decisions import decide
from hpscan.core.results import Aggregate
from hpscan.core.search import Search
from hpscan.core.summary import build_status
from hpscan.engine.act import PlannedShards, settle_unstarted, start_shards, stop_and_withdraw, stop_when_ended
from hpscan.engine.context import Launcher, StepContext
from hpscan.engine.poll import hold_unanswered, poll_and_fold
from hpscan.engine.pull import pull_launcher
from hpscan.engine.settings import EngineSettings
from hpscan.engine.sites import ProbeCache, next_sites, with_outages

DEFAULT_SETTINGS = EngineSettings()


@dataclass(frozen=True)
class StepInput:
    """A scan as its shell holds it between steps: what one step starts from."""

    ref: ScanRef
    spec: HPScanSpec
    agg: Aggregate
    """The plan and the records folded so far; the step folds new ones in."""
    targets: Sequence[Target]
    """The scan's sites (hpscan.core.brokering.targets_of)."""
    previous: HPScanStatus | None = None
    """The last status: each site's state, and where shards on a site that does not answer were."""
    generation: int | None = None
    """The metadata.generation the new status observes (the operator)."""
    known: Mapping[int, ShardStatus] = field(default_factory=dict)
    """Shard states no backend reports (e.g. shards a local re-run found complete)."""
    search: Search | None = None
    """The trials of a scan whose workers pull (plan.pull); the step tells and asks it, never edits it."""


@dataclass
class StepResult:
    """What one step saw and did."""

    status: HPScanStatus
    states: dict[int, ShardStatus]
    new_records: list[ResultRecord] = field(default_factory=list)
    """Records that changed the summary this step, in arrival order (the local shell appends them to
    results.jsonl)."""


def step(
    scan: StepInput,
    backends: Mapping[str, Backend],
    settings: EngineSettings = DEFAULT_SETTINGS,
    *,
    probe_cache: ProbeCache | None = None,
    now: datetime | None = None,
) -> StepResult:
    """Bring a scan one step closer to done. ``backends`` holds at least every backend the targets name;
    ``probe_cache`` the probe outcomes scans share (the operator's); ``now`` the step's clock (a simulation's
    virtual time; default: the wall clock).

    A backend that fails (raises an HPScanError, e.g. SchedulerUnavailable) makes its sites Unreachable for this
    step, with the error as their message; the other sites go on and nothing recorded is lost."""
    used = {name: backends[name] for name in sorted({t.backend for t in scan.targets})}
    ctx = StepContext(scan.ref, scan.spec, scan.agg, scan.targets, used, now or datetime.now(UTC), dict(scan.known))
    # poll and fold
    polled = poll_and_fold(ctx, with_progress=scan.search is not None)
    hold_unanswered(ctx, scan.previous)
    # sites and probes
    sites = next_sites(ctx, scan.previous, probe_cache, settings.probe_cache_seconds)
    # decide
    decision = decide(scan.spec, scan.agg.plan.shard_count, ctx.states, scan.targets, sites, ctx.now)
    # act, handing out trials to workers that pull
    stop_and_withdraw(ctx, decision)
    launcher = _launcher(ctx, scan)
    launcher.tell(ctx, polled, decision)
    started = start_shards(ctx, decision, launcher)
    settle_unstarted(ctx, decision, started)
    launcher.feed(ctx)
    # status
    status = _status(ctx, scan, settings, with_outages(ctx, sites), launcher)
    stop_when_ended(ctx, status)
    return StepResult(status, ctx.states, polled.new_records)


def _launcher(ctx: StepContext, scan: StepInput) -> Launcher:
    """Planned shards, or workers that pull (their trials from the scan's search)."""
    if scan.search is None and not scan.agg.plan.pull:
        return PlannedShards()
    return pull_launcher(ctx, scan.search)


def _status(
    ctx: StepContext, scan: StepInput, settings: EngineSettings, sites: dict[str, SiteStatus], launcher: Launcher
) -> HPScanStatus:
    """The scan's status after this step (hpscan.core.summary.build_status), with each site's shard counts."""
    return build_status(
        scan.agg.plan,
        scan.agg,
        ctx.states,
        now=ctx.now,
        suspend=scan.spec.suspend,
        previous=scan.previous,
        generation=scan.generation,
        max_shards=settings.max_status_shards,
        targets=scan.targets,
        sites=[with_shard_counts(sites[t.name], ctx.states, scan.agg.shard_done) for t in scan.targets],
        held=launcher.held(),
    )
