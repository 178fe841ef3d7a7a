"""One step of a scan, the same for `hpscan run` and the operator: poll -> decide -> act -> fold records -> status.

The two shells around it differ only in where state lives between steps: `hpscan.local_scan` keeps it in the
run folder and loops every half second; `hpscan.controller` keeps it in the HPScan's status and kopf's memo and
runs one step per timer tick. Decisions are the pure functions of hpscan.core.decisions; the backends act.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial

from hpscan.api.contract import ResultRecord, ShardFile
from hpscan.api.spec import HPScanSpec
from hpscan.api.status import (
    ACTIVE_PHASES,
    TERMINAL_SCAN_PHASES,
    HPScanStatus,
    Reason,
    ShardPhase,
    ShardStatus,
    SiteState,
    SiteStatus,
)
from hpscan.api.trials import Assignment, Progress, trial_lines
from hpscan.backends.base import Backend, ScanRef, ShardLaunch
from hpscan.core.brokering import (
    ProbeOutcome,
    Target,
    gpu_failures,
    next_site_status,
    probe_due,
    probe_needed,
    with_shard_counts,
)
from hpscan.core.decisions import decide
from hpscan.core.planning import position_of
from hpscan.core.results import Aggregate
from hpscan.core.search import Search, top_up, workers_to_end
from hpscan.core.summary import build_status
from hpscan.errors import HPScanError

ProbeCache = MutableMapping[str, tuple[ProbeOutcome, datetime]]
"""Ended probe outcomes by site, image and check (probe_key), with when they ended: ten scans on one site probe it
once. The operator keeps one for all scans; entries older than the shell's probe_cache_seconds are ignored."""


def probe_key(target: Target, spec: HPScanSpec) -> str:
    """What a probe's outcome depends on: the site's settings and environment, the image, the check, the GPUs."""
    site = target.site.model_dump(mode="json", exclude={"weight", "max_running"}) if target.site else None
    payload = {"image": spec.payload.image, "check": spec.payload.gpu_check, "env": spec.payload.model_dump()["env"]}
    return json.dumps([target.name, target.backend, site, payload, spec.gpu.model_dump(mode="json")], sort_keys=True)


@dataclass
class StepResult:
    """What one step saw and did."""

    status: HPScanStatus
    states: dict[int, ShardStatus]
    new_records: list[ResultRecord] = field(default_factory=list)
    """Records that changed the summary this step, in arrival order (the local shell appends them to
    results.jsonl)."""


def remaining_shard_file(agg: Aggregate, shard: int) -> ShardFile:
    """The shard's file with only the combinations not yet recorded: a moved shard trains nothing twice, whatever
    its new site's channel holds."""
    full = agg.plan.shard_file(shard)
    todo = [c for c in full.combinations if not agg.states[position_of(c.id)]]
    return full.model_copy(update={"combinations": todo})


def _merge(states: dict[int, ShardStatus], found: Mapping[int, ShardStatus]) -> None:
    """Fold one backend's shard states in: a shard's newest job generation (moves) speaks for it."""
    for index, state in found.items():
        held = states.get(index)
        if held is None or (state.moves, state.phase in ACTIVE_PHASES) >= (held.moves, held.phase in ACTIVE_PHASES):
            states[index] = state


def step(
    scan: ScanRef,
    spec: HPScanSpec,
    agg: Aggregate,
    backends: Mapping[str, Backend],
    targets: Sequence[Target],
    *,
    known: Mapping[int, ShardStatus] | None = None,
    previous: HPScanStatus | None = None,
    generation: int | None = None,
    max_status_shards: int | None = None,
    now: datetime | None = None,
    probe_cache: ProbeCache | None = None,
    probe_cache_seconds: float = 3600,
    search: Search | None = None,
) -> StepResult:
    """Bring a scan one step closer to done. ``backends`` holds at least every backend named in ``targets``;
    ``known`` holds shard states no backend reports (e.g. shards a local re-run found complete).

    A backend that fails (raises an HPScanError, e.g. SchedulerUnavailable) makes its sites Unreachable for this
    step, with the error as their message; the other sites go on and nothing recorded is lost.

    For workers that pull (plan.pull) ``search`` holds the scan's trials: each step tells it what was recorded
    and reported, hands trials to starting and running workers, sends the pruner's stops, takes back the trials of
    workers that left, and tells workers when no more will come."""
    now = now or datetime.now(UTC)
    planned = agg.plan
    used = {name: backends[name] for name in sorted({t.backend for t in targets})}
    by_site = {t.name: t for t in targets}
    outages: dict[str, str] = {}
    states: dict[int, ShardStatus] = dict(known or {})
    new_records: list[ResultRecord] = []
    fetched: list[ResultRecord] = []
    progress: list[Progress] = []
    for name, backend in used.items():
        try:
            backend.track(scan, spec)
            _merge(states, backend.poll(scan))
            got = backend.fetch_records(scan)
            if search is not None:
                progress += backend.fetch_progress(scan)
            fetched += got
            new_records += [record for record in got if agg.add(record)]
            agg.unreadable[f"{backend.name} channel"] = backend.unreadable(scan)
            outages.update({site: why for site, why in backend.outages(scan).items() if site in by_site})
        except HPScanError as error:
            outages.update({t.name: str(error) for t in targets if t.backend == name})

    for shard in previous.shards if previous is not None else []:
        # A shard on a site that does not answer is where the last status put it: never placed a second time.
        if shard.index not in states and shard.site in outages and shard.phase in ACTIVE_PHASES:
            states[shard.index] = shard.model_copy(
                update={"reason": Reason.SCHEDULER_UNAVAILABLE, "message": outages[shard.site]}
            )
    sites = _next_sites(scan, spec, targets, used, states, previous, outages, now, probe_cache, probe_cache_seconds)
    decision = decide(spec, planned.shard_count, states, targets, sites, now)

    def backend_of(index: int) -> str | None:
        site = states[index].site if index in states else None
        return by_site[site].backend if site in by_site else None

    def act(backend_name: str, what: str, action: Callable[[], None]) -> bool:
        """Run one backend action; a failure makes that backend's sites Unreachable, the others go on."""
        try:
            action()
        except HPScanError as error:
            for t in targets:
                if t.backend == backend_name:
                    outages[t.name] = f"{what}: {error}"
            return False
        return True

    for name, backend in used.items():
        if stop := [i for i in decision.stop if backend_of(i) in (name, None)]:
            act(name, "stopping shards", partial(backend.cancel, scan, stop))
        if leave := [i for i in decision.withdraw if backend_of(i) == name]:
            act(name, "removing jobs of shards that move", partial(backend.cancel, scan, leave))

    handed: dict[int, list[dict]] = {}
    if search is not None and not search.rebuilt:  # a restarted shell: what the workers' channels hold
        if outages:  # a channel that does not answer may hold hand-outs: hand out nothing until it does
            search = None
        else:
            channels: dict[int, Assignment] = {}
            for backend in used.values():
                channels |= backend.assignments(scan)
            search.rebuild(channels, [], [])  # this step's records and reports follow (repeated after a restart)
    if search is not None:
        stops = search.progress(progress)  # epochs first: the pruner sees a curve before its trial's record
        for record in fetched:
            search.record(record)
        for worker, trial_id in stops:
            search.stop(worker, trial_id)
        leaving = set(decision.withdraw) | {i for i, st in states.items() if st.phase not in ACTIVE_PHASES}
        for worker in sorted(leaving):
            ended_well = states[worker].phase == ShardPhase.SUCCEEDED
            back = search.left_short(worker) if ended_well else search.take_back(worker)
            if back and (owner := backend_of(worker)) is not None:
                act(owner, "taking trials back", partial(used[owner].assign, scan, worker, trial_lines([], back)))
        for worker, missing in search.short.items():
            if worker in states:
                states[worker] = states[worker].model_copy(
                    update={
                        "phase": ShardPhase.FAILED,
                        "reason": Reason.RECORDS_MISSING,
                        "message": f"the worker ended well without recording {missing} trial(s) it was handed",
                    }
                )

    started: set[int] = set()
    for name, backend in used.items():
        if planned.pull and search is None:
            break  # workers that pull start only with trials to hand them
        mine = [s for s in decision.start if by_site[s.site].backend == name]
        launches = []
        for start in mine:
            if search is not None:  # a worker starts with its first trials; more come while it runs
                per_worker = spec.sampling.trials_per_worker
                # A worker submitted before may be started again (its Job not in the watch cache yet, or suspended):
                # it is topped up to trialsPerWorker, never handed a second first batch.
                wanted = per_worker - len(search.open_trials(start.shard))
                trials = [] if start.shard in search.ended else search.hand_out(start.shard, max(0, wanted))
                if not trials and not search.open_trials(start.shard):  # the budget is spent: nothing to do
                    states[start.shard] = ShardStatus(
                        index=start.shard, site=start.site, phase=ShardPhase.SUCCEEDED, moves=start.moves
                    )
                    continue
                handed[start.shard] = trial_lines(trials)  # sent with the other workers' lines, below
                launches.append(ShardLaunch(planned.shard_file(start.shard), by_site[start.site].site, start.moves))
                continue
            shard_file = remaining_shard_file(agg, start.shard)
            if not shard_file.combinations:  # everything was recorded before its job could end where it was
                states[start.shard] = ShardStatus(
                    index=start.shard, site=start.site, phase=ShardPhase.SUCCEEDED, moves=start.moves
                )
                continue
            launches.append(ShardLaunch(shard_file, by_site[start.site].site, start.moves))
        if not launches:
            continue

        if act(name, f"submitting {len(launches)} shard(s)", partial(_send, backend, scan, spec, launches)):
            for launch in launches:
                index = launch.shard_file.shard
                site = next(s.site for s in mine if s.shard == index)
                states[index] = ShardStatus(index=index, site=site, moves=launch.moves)  # Pending until polled
                started.add(index)
                if search is not None and index in handed:
                    search.send(index, handed[index])
        elif search is not None:  # the submit failed: this step's hand-outs never left; earlier ones may be trained
            for launch in launches:
                index = launch.shard_file.shard
                search.give_back([line["trial"]["id"] for line in handed.get(index, []) if "trial" in line])
    for index, (reason, message) in decision.withdraw.items():
        if index not in started:
            states[index] = states[index].model_copy(
                update={"phase": ShardPhase.PENDING, "reason": reason, "message": message}
            )
    for index, message in decision.waiting.items():
        if index not in started:
            states[index] = states[index].model_copy(
                update={"phase": ShardPhase.PENDING, "reason": Reason.NO_USABLE_SITE, "message": message}
            )
    for index in decision.stop:
        states[index] = states[index].model_copy(update={"phase": ShardPhase.SUSPENDED})
    if search is not None:
        _feed_workers(scan, spec, search, states, used, backend_of, act)
    for site_name, why in outages.items():  # an action that failed this step: say so now
        held = sites[site_name]
        if held.state != SiteState.EXCLUDED and held.message != why:
            sites[site_name] = next_site_status(
                by_site[site_name], held, now=now, needed=probe_needed(spec), outage=why
            )

    status = build_status(
        planned,
        agg,
        states,
        now=now,
        suspend=spec.suspend,
        previous=previous,
        generation=generation,
        max_shards=max_status_shards,
        targets=targets,
        sites=[with_shard_counts(sites[t.name], states, agg.shard_done) for t in targets],
        held=search.held() if search is not None else None,
    )
    if status.phase in TERMINAL_SCAN_PHASES:  # e.g. too many failed combinations: stop what still runs
        active = [i for i, state in states.items() if state.phase in ACTIVE_PHASES]
        for name, backend in used.items():
            if mine_active := [i for i in active if backend_of(i) in (name, None)]:
                act(name, "stopping shards", partial(backend.cancel, scan, mine_active))
    return StepResult(status, states, new_records)


def _feed_workers(
    scan: ScanRef,
    spec: HPScanSpec,
    search: Search,
    states: Mapping[int, ShardStatus],
    backends: Mapping[str, Backend],
    backend_of: Callable[[int], str | None],
    act: Callable[[str, str, Callable[[], None]], bool],
) -> None:
    """Top running workers up to spec.sampling.trialsPerWorker open trials, tell each, once, when the budget is
    handed out, and send every active worker's waiting lines and stops. A worker that is only submitted (Pending)
    keeps what it got at launch. A channel that refuses keeps its lines waiting for the next step: the trials stay
    that worker's (it may hold them already, if the call failed after it took effect: channels ignore a trial
    handed twice), so no trial goes to a second worker while the first may train it."""
    running = [i for i, state in states.items() if state.phase == ShardPhase.RUNNING and i not in search.ended]
    wanted = top_up({i: len(search.open_trials(i)) for i in running}, spec.sampling.trials_per_worker)
    for worker, count in wanted.items():
        search.send(worker, trial_lines(search.hand_out(worker, count)))
    for worker in workers_to_end(running, search.ended, search.all_handed_out):
        if {"end": True} not in search.outbox.get(worker, []):
            search.send(worker, [{"end": True}])
    active = {i for i, state in states.items() if state.phase in ACTIVE_PHASES}
    for worker in sorted(set(search.outbox) & active):
        name = backend_of(worker)
        lines = search.outbox[worker]
        if name is not None and act(name, "handing out trials", partial(backends[name].assign, scan, worker, lines)):
            search.sent(worker)
    for worker in sorted(set(search.unsent_stops) & active):
        name = backend_of(worker)
        ids = search.unsent_stops[worker]
        if name is not None and act(
            name, "stopping a pruned trial", partial(backends[name].stop_trials, scan, worker, ids)
        ):
            del search.unsent_stops[worker]


def _send(backend: Backend, scan: ScanRef, spec: HPScanSpec, launches: list[ShardLaunch]) -> None:
    backend.prepare(scan, spec, launches[0].shard_file.shards)
    backend.submit(scan, spec, launches)


def _next_sites(
    scan: ScanRef,
    spec: HPScanSpec,
    targets: Sequence[Target],
    backends: Mapping[str, Backend],
    states: Mapping[int, ShardStatus],
    previous: HPScanStatus | None,
    outages: Mapping[str, str],
    now: datetime,
    probe_cache: ProbeCache | None,
    probe_cache_seconds: float,
) -> dict[str, SiteStatus]:
    """Each site's next state (hpscan.core.brokering.next_site_status), probing the sites that need it: from the
    cache when a recent probe of the same site, image and check ended, else through the site's backend."""
    before = {s.name: s for s in (previous.sites if previous is not None else [])}
    needed = probe_needed(spec)
    failures = gpu_failures(states)
    sites: dict[str, SiteStatus] = {}
    for target in targets:
        held = before.get(target.name)
        outage = outages.get(target.name)
        probe: ProbeOutcome | None = None
        probes = needed
        if probe_due(held, needed, outage) and target.name not in failures:
            key = probe_key(target, spec)
            cached = probe_cache.get(key) if probe_cache is not None else None
            if cached is not None and (now - cached[1]).total_seconds() < probe_cache_seconds:
                probe = ProbeOutcome(cached[0].exit_code, f"{cached[0].message} (probed {cached[1]:%H:%M:%S})")
            else:
                try:
                    probe = backends[target.backend].probe(scan, spec, target.site)
                    probes = probe is not None  # a backend that cannot probe: its sites are NotProbed
                except HPScanError as error:
                    outage = f"sending the probe: {error}"
                if probe is not None and probe.ended and probe_cache is not None:
                    probe_cache[key] = (probe, now)
        site = next_site_status(
            target, held, now=now, needed=probes, probe=probe, outage=outage, gpu_failure=failures.get(target.name)
        )
        timed_out = site.reason == Reason.PROBE_TIMEOUT and (held is None or held.reason != Reason.PROBE_TIMEOUT)
        if timed_out:
            with contextlib.suppress(HPScanError):  # else removed with the scan at the latest
                backends[target.backend].end_probe(scan, target.site)
        sites[target.name] = site
    return sites
