"""Brokering, pure: which sites may take a scan's shards (probes, outages, exclusions), and where each shard goes.

The paper's grid workflow: a GPU test job runs at each site first (sites whose GPUs are misconfigured would
silently train on the CPU), shards go only to sites that passed, and a site that breaks does not stop the scan:
its unfinished shards move to another usable site, keeping what they recorded. hpscan.engine feeds these
functions what the backends saw and acts on what they return.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from hpscan.api.contract import PayloadExit
from hpscan.api.sites import Site
from hpscan.api.spec import HPScanSpec
from hpscan.api.status import (
    ACTIVE_PHASES,
    SITE_LEVEL_REASONS,
    Reason,
    ShardPhase,
    ShardStatus,
    SiteState,
    SiteStatus,
)


@dataclass(frozen=True)
class Target:
    """A place shards go: a site of the scan, or a backend's own default place (a local run's machine)."""

    name: str
    backend: str
    site: Site | None = None
    weight: int = 1
    max_running: int | None = None
    probe_timeout_seconds: float = 600
    hold_timeout_seconds: float = 1800

    @classmethod
    def of(cls, site: Site) -> Target:
        return cls(
            name=site.name,
            backend=site.backend,
            site=site,
            weight=site.weight,
            max_running=site.max_running,
            probe_timeout_seconds=site.probe_timeout_seconds,
            hold_timeout_seconds=site.hold_timeout_seconds,
        )


def targets_of(sites: Sequence[Site], default_backend: str) -> list[Target]:
    """The scan's sites as targets; without sites, one target named after ``default_backend``."""
    return [Target.of(site) for site in sites] or [Target(name=default_backend, backend=default_backend)]


@dataclass(frozen=True)
class ProbeOutcome:
    """What a site probe said: its exit code (None while it waits or runs) and a line: the probe's last words, or
    why it waits (e.g. the scheduler's message)."""

    exit_code: int | None
    message: str = ""

    @property
    def ended(self) -> bool:
        return self.exit_code is not None


def probe_needed(spec: HPScanSpec) -> bool:
    """Sites are probed when shards insist on a GPU (gpu.required with a count) and the payload has a check."""
    return spec.gpu.required and spec.gpu.count > 0 and bool(spec.payload.gpu_check)


def probe_due(before: SiteStatus | None, needed: bool, outage: str | None) -> bool:
    """Whether the engine should ask for the site's probe outcome this step (start it, or read it). A site whose
    probe timed out is not due: it waits Unreachable until next_site_status makes it Probing again, a probe timeout
    after the timeout (sending it at once would hold a GPU for a probe the site then ignores)."""
    if not needed or outage is not None:
        return False
    if before is None or before.state == SiteState.PROBING:
        return True
    return before.state == SiteState.UNREACHABLE and before.reason != Reason.PROBE_TIMEOUT  # back from an outage


def _seconds(now: datetime, since: datetime | None) -> float:
    return (now - since).total_seconds() if since is not None else 0.0


def next_site_status(
    target: Target,
    before: SiteStatus | None,
    *,
    now: datetime,
    needed: bool,
    probe: ProbeOutcome | None = None,
    outage: str | None = None,
    gpu_failure: str | None = None,
) -> SiteStatus:
    """A site's next state. Excluded is for good (for this scan); an outage makes a site Unreachable until its
    batch system answers again; a probe that has not ended within the site's probe timeout does too, and the site
    is probed again after as long again.

    ``probe``: the outcome when it was asked for (see probe_due); ``outage``: the backend's error this step;
    ``gpu_failure``: the message of a shard that found no usable GPU on this site."""

    def becomes(state: SiteState, reason: str, message: str) -> SiteStatus:
        unchanged = before is not None and before.state == state and before.reason == reason
        since = before.since if unchanged and before is not None else now
        return SiteStatus(
            name=target.name, backend=target.backend, state=state, reason=reason, message=message[:300], since=since
        )

    if before is not None and before.state == SiteState.EXCLUDED:
        return becomes(SiteState.EXCLUDED, before.reason, before.message)
    if gpu_failure is not None:
        return becomes(SiteState.EXCLUDED, Reason.GPU_UNAVAILABLE, gpu_failure)
    if outage is not None:
        return becomes(SiteState.UNREACHABLE, Reason.SITE_UNREACHABLE, outage)
    if not needed:
        return becomes(SiteState.USABLE, Reason.NOT_PROBED, "")
    if before is not None and before.state == SiteState.USABLE:
        return becomes(SiteState.USABLE, before.reason, before.message)
    if (
        before is not None
        and before.state == SiteState.UNREACHABLE
        and before.reason == Reason.PROBE_TIMEOUT
        and _seconds(now, before.since) < target.probe_timeout_seconds
    ):
        return becomes(SiteState.UNREACHABLE, before.reason, before.message)  # waits before probing again
    # From here a timed-out site is Probing again (since now); probe_due sends its probe from the next step on.
    if probe is not None and probe.ended:
        if probe.exit_code == 0:
            return becomes(SiteState.USABLE, Reason.PROBE_PASSED, probe.message)
        if probe.exit_code == PayloadExit.GPU_UNAVAILABLE:
            return becomes(SiteState.EXCLUDED, Reason.GPU_UNAVAILABLE, probe.message or "no usable GPU")
        words = f": {probe.message}" if probe.message else ""
        return becomes(SiteState.EXCLUDED, Reason.PROBE_FAILED, f"the probe exited {probe.exit_code}{words}")
    probing = before is not None and before.state == SiteState.PROBING
    started = before.since if probing and before is not None else now
    if _seconds(now, started) >= target.probe_timeout_seconds:
        why = f": {probe.message}" if probe is not None and probe.message else ""
        return becomes(
            SiteState.UNREACHABLE,
            Reason.PROBE_TIMEOUT,
            f"the probe did not end within {target.probe_timeout_seconds:g} s{why}",
        )
    status = becomes(SiteState.PROBING, Reason.PROBING, probe.message if probe is not None else "")
    return status if probing else status.model_copy(update={"since": now})


def gpu_failures(states: Mapping[int, ShardStatus]) -> dict[str, str]:
    """Sites where a shard found no usable GPU, with the first such shard's message: excluded for the scan."""
    found: dict[str, str] = {}
    for index in sorted(states):
        state = states[index]
        if state.phase == ShardPhase.FAILED and state.reason == Reason.GPU_UNAVAILABLE and state.site:
            found.setdefault(state.site, f"shard {index}: {state.message or 'no usable GPU'}")
    return found


def with_shard_counts(site: SiteStatus, states: Mapping[int, ShardStatus], done: Sequence[int]) -> SiteStatus:
    """A site's status with its shards counted (each shard where its current job is)."""
    here = [s for s in states.values() if s.site == site.name]
    return site.model_copy(
        update={
            "running": sum(s.phase in ACTIVE_PHASES for s in here),
            "succeeded": sum(s.phase == ShardPhase.SUCCEEDED for s in here),
            "failed": sum(s.phase == ShardPhase.FAILED for s in here),
            "done": sum(done[s.index] for s in here if 0 <= s.index < len(done)),
        }
    )


@dataclass(frozen=True)
class Start:
    """A shard to submit: where, and as which move of its shard (moves > 0: it ran elsewhere before)."""

    shard: int
    site: str
    moves: int


@dataclass
class Brokered:
    """Where shards go this step."""

    starts: list[Start] = field(default_factory=list)
    withdraw: dict[int, tuple[str, str]] = field(default_factory=dict)
    """Shards whose unfinished job must be removed before they move: (reason, message), e.g. held too long."""
    waiting: dict[int, str] = field(default_factory=dict)
    """Shards that must move but no site can take now (message): they wait, Pending with NoUsableSite."""


def _must_move(
    state: ShardStatus, targets: Mapping[str, Target], sites: Mapping[str, SiteStatus], now: datetime
) -> tuple[str, str] | None:
    """Why a shard's current job cannot finish where it is, when that is the site's fault; else None."""
    if state.phase == ShardPhase.FAILED and state.reason in SITE_LEVEL_REASONS:
        return state.reason or Reason.SITE_EXCLUDED, state.message or ""
    if state.phase != ShardPhase.PENDING or state.site is None:
        return None
    target = targets.get(state.site)
    site = sites.get(state.site)
    if site is not None and site.state == SiteState.EXCLUDED:
        return Reason.SITE_EXCLUDED, f"site {state.site} was excluded: {site.message}"
    if target is not None and state.reason == Reason.HELD and _seconds(now, state.since) >= target.hold_timeout_seconds:
        return Reason.HOLD_TIMEOUT, f"held for over {target.hold_timeout_seconds:g} s: {state.message or 'held'}"
    return None


def broker(
    shard_count: int,
    states: Mapping[int, ShardStatus],
    targets: Sequence[Target],
    sites: Mapping[str, SiteStatus],
    *,
    parallelism: int | None,
    now: datetime,
) -> Brokered:
    """Which waiting shards start now and where, and which shards leave their site.

    Waiting shards (never submitted, suspended, or moving off a site that failed them) go, lowest index first, to
    usable sites with room (a site's maxRunning, spec.parallelism for all sites together, no shard of the scan waiting in the site's quota queue: quota_full); among those, to the one
    with the fewest active shards per unit of weight (spec order breaks ties), so weights are preferences and the
    result is deterministic; while other sites are still probed, each usable site takes at most its weighted share. A suspended shard goes back to its own site when it is usable (its job resumes). A
    moving shard never goes back to the site it leaves."""
    by_name = {t.name: t for t in targets}
    result = Brokered()
    moving: dict[int, str] = {}
    for index, current in states.items():
        why = _must_move(current, by_name, sites, now)
        if why is None or not _elsewhere(targets, sites, current.site):
            continue  # nowhere else could ever take it: it stays as it is (with every site excluded, the scan fails)
        if current.site is not None:
            moving[index] = current.site
        if current.phase == ShardPhase.PENDING:
            result.withdraw[index] = why
    active = {i: s for i, s in states.items() if s.phase in ACTIVE_PHASES and i not in result.withdraw}
    load = Counter(s.site for s in active.values())
    full = quota_full(active.values())
    room = (parallelism if parallelism is not None else shard_count) - len(active)
    usable = [t for t in targets if (site := sites.get(t.name)) is not None and site.state == SiteState.USABLE]
    # While some sites are still being probed, a usable site takes only its weighted share of the scan, so the first
    # site to pass (or one whose probe is cached) does not take every shard before the others can.
    share: dict[str, int] = {}
    contenders = [t for t in targets if (site := sites.get(t.name)) is None or site.state == SiteState.PROBING]
    if contenders:
        weights = sum(t.weight for t in [*usable, *contenders])
        share = {t.name: -(-shard_count * t.weight // weights) for t in usable}
    placed_on = Counter(s.site for s in states.values() if s.index not in result.withdraw)  # the share's count
    waiting = sorted(
        {i for i in range(shard_count) if i not in states or states[i].phase == ShardPhase.SUSPENDED} | set(moving)
    )
    for index in waiting:
        state = states.get(index)
        left = moving.get(index)
        candidates = [
            t
            for t in usable
            if t.name != left
            and (t.max_running is None or load[t.name] < t.max_running)
            and t.name not in full
            and (t.name not in share or placed_on[t.name] < share[t.name])
        ]
        if state is not None and state.phase == ShardPhase.SUSPENDED and state.site:
            own = [t for t in candidates if t.name == state.site]
            candidates = own or candidates
        if room <= 0 or not candidates:
            if left is not None:
                result.waiting[index] = _no_site_message(targets, sites, left)
            continue
        pick = min(candidates, key=lambda t: ((load[t.name] + 1) / t.weight, targets.index(t)))
        moves = 0 if state is None else state.moves + (1 if left is not None or pick.name != state.site else 0)
        result.starts.append(Start(index, pick.name, moves))
        load[pick.name] += 1
        placed_on[pick.name] += 1
        room -= 1
    return result


def quota_full(active: Iterable[ShardStatus]) -> set[str]:
    """Sites whose quota is full now: one of the scan's shards there waits in the site's queue (Pending, Queued:
    Kueue has no quota for it). More shards sent there would only wait too, so the site has no room until it is
    admitted; other sites may take them meanwhile."""
    return {s.site for s in active if s.site and s.phase == ShardPhase.PENDING and s.reason == Reason.QUEUED}


def _elsewhere(targets: Sequence[Target], sites: Mapping[str, SiteStatus], left: str | None) -> bool:
    """Whether a site other than ``left`` is or may become usable (not excluded)."""
    return any(t.name != left and (t.name not in sites or sites[t.name].state != SiteState.EXCLUDED) for t in targets)


def _no_site_message(targets: Sequence[Target], sites: Mapping[str, SiteStatus], left: str) -> str:
    others = [t.name for t in targets if t.name != left]
    if not others:
        return f"no other site than {left} to move to"
    states = ", ".join(f"{n} {sites[n].state.value if n in sites else 'unknown'}" for n in others)
    return f"waiting for a usable site with room ({states})"


def no_site_left(targets: Sequence[Target], sites: Mapping[str, SiteStatus]) -> str | None:
    """When every site is excluded for the scan, why (the scan can never finish); else None."""
    known = [sites[t.name] for t in targets if t.name in sites]
    if not known or len(known) < len(targets) or any(s.state != SiteState.EXCLUDED for s in known):
        return None
    return "; ".join(f"site {s.name}: {s.message or s.reason}" for s in known)
