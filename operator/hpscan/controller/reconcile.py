"""One reconcile of one HPScan: read its body, run one hpscan.engine step, and say what the status and Events
should be. Plain data in, plain data out, except the backend calls; kopf never appears.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from hpscan.api.spec import HPScan, HPScanSpec
from hpscan.api.status import (
    TERMINAL_SCAN_PHASES,
    Condition,
    ConditionType,
    HPScanStatus,
    ModelsStatus,
    Reason,
    ScanPhase,
    ShardPhase,
    SiteState,
)
from hpscan.backends.base import Backend, ScanRef, pull_refusal
from hpscan.backends.sandbox_models import sandbox_uploads
from hpscan.controller.defaults import OperatorDefaults
from hpscan.core.artifacts import models_to_prune, retry_delay
from hpscan.core.brokering import Target, targets_of
from hpscan.core.kstatus import kstatus_conditions
from hpscan.core.payloads import require_payload_accepts
from hpscan.core.planning import Plan, plan
from hpscan.core.results import Aggregate
from hpscan.core.search import Search
from hpscan.core.summary import conditions_from
from hpscan.engine import EngineSettings, ProbeCache, StepInput, step
from hpscan.errors import ArtifactStoreError, HPScanError
from hpscan.job.store import open_store


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the HPScan."""

    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass
class Outcome:
    """What a reconcile step decided: the new status (None: leave it) and the events to post."""

    status: HPScanStatus | None
    events: list[Event] = field(default_factory=list)


def scan_ref(body: Mapping[str, Any]) -> ScanRef:
    meta = body.get("metadata", {})
    return ScanRef(name=meta.get("name", ""), namespace=meta.get("namespace") or "default", uid=meta.get("uid", ""))


def previous_status(body: Mapping[str, Any]) -> HPScanStatus | None:
    raw = body.get("status") or {}
    if not raw.get("phase") or not raw.get("observedGeneration"):
        return None  # none yet, or only the CRD's defaults (observedGeneration 0): the operator wrote nothing
    try:
        known = {info.alias or name for name, info in HPScanStatus.model_fields.items()}
        return HPScanStatus.model_validate({k: v for k, v in raw.items() if k in known})
    except ValidationError:
        return None  # a status we cannot read is rebuilt from the backends


def events_between(before: HPScanStatus | None, after: HPScanStatus) -> list[Event]:
    """Milestones worth an Event: phase changes, and shards that failed for good."""
    events = []
    if before is None or before.phase != after.phase:
        kind = "Warning" if after.phase == ScanPhase.FAILED else "Normal"
        events.append(Event(kind, str(after.phase), after.message or ""))
    sites_before = {s.name: s for s in (before.sites if before else [])}
    for site in after.sites:
        held = sites_before.get(site.name)
        if held is not None and (held.state, held.reason) == (site.state, site.reason):
            continue
        if site.state in {SiteState.EXCLUDED, SiteState.UNREACHABLE}:
            events.append(Event("Warning", site.reason, f"site {site.name} {site.state.value}: {site.message}"))
        elif site.state == SiteState.USABLE and site.reason == Reason.PROBE_PASSED:
            events.append(Event("Normal", site.reason, f"site {site.name} passed its GPU probe: {site.message}"))
    failed_before = {s.index for s in (before.shards if before else []) if s.phase == ShardPhase.FAILED}
    for shard in after.shards:
        if shard.phase == ShardPhase.FAILED and shard.index not in failed_before:
            where = f" on site {shard.site}" if shard.site else ""
            events.append(
                Event("Warning", shard.reason or Reason.SHARD_FAILED, f"shard {shard.index}{where}: {shard.message}")
            )
    return events


def invalid_spec_status(message: str, generation: int | None, reason: str = Reason.INVALID_SPEC) -> HPScanStatus:
    """A scan that cannot run as written (invalid, not allowed, no backend for it): Failed, and Stalled for kstatus
    (Flux and Helm 4 report it failed, not healthy)."""
    wanted = {
        ConditionType.FAILED: (True, reason, message),
        ConditionType.COMPLETE: (False, Reason.NOT_COMPLETE, ""),
        **kstatus_conditions(ScanPhase.FAILED, reason, message, HPScanStatus().progress),
    }
    return HPScanStatus(
        phase=ScanPhase.FAILED,
        message=message,
        observed_generation=generation,
        conditions=conditions_from(wanted, [], datetime.now(UTC), generation),
    )


def degraded(before: HPScanStatus | None, reason: str, message: str, generation: int | None) -> HPScanStatus:
    """The last known status with a Degraded condition saying what went wrong with a backend. A scan without one
    yet is Pending and Reconciling (kstatus: InProgress; with no condition at all it would read Current)."""
    now = datetime.now(UTC)
    status = before or HPScanStatus(
        observed_generation=generation,
        conditions=conditions_from(
            kstatus_conditions(ScanPhase.PENDING, reason, message, HPScanStatus().progress), [], now, generation
        ),
    )
    kept = [c for c in status.conditions if c.type != "Degraded"]
    trouble = Condition(
        type="Degraded",
        status="True",
        reason=reason,
        message=message[:512],
        last_transition_time=now,
        observed_generation=status.observed_generation,
    )
    return status.model_copy(update={"conditions": [*kept, trouble], "message": message})


def prune_models(ref: ScanRef, spec: HPScanSpec, read_secret: Callable[[str, str, str], str]) -> Event | None:
    """A finished scan's store down to what spec.artifacts keeps (core.artifacts.models_to_prune decides), and no
    trial checkpoint (those of trials that never got a record); the Event that says what happened, None when the
    scan has no store (one that keeps no models has one for its checkpoints: core.artifacts.job_store)."""
    store = spec.artifacts.store
    if store is None:
        return None
    try:
        models = open_store(store.s3, ref.namespace, ref.name, read_secret)
        stored = models.models()
        doomed = models_to_prune(stored, spec.objective, spec.artifacts)
        models.delete_models(doomed)
        models.delete_keys(models.keys(models.location.checkpoints_prefix))  # a job prunes those of ended trials
    except ArtifactStoreError as error:
        return Event("Warning", error.reason, f"{error}; the stored models were left as they are")
    kept, where = len(stored) - len(doomed), models.location.url
    if not spec.artifacts.save_models:
        return Event("Normal", Reason.MODELS_KEPT, f"keeps no models (keep: none); no trial checkpoint left in {where}")
    return Event("Normal", Reason.MODELS_KEPT, f"kept {kept} of {len(stored)} trained models in {where}")


PRUNE_RETRY_SECONDS, MAX_PRUNE_RETRY_SECONDS, PRUNE_TRIES = 60.0, 3600.0, 8
"""A failed prune is tried again after 60 s, doubling up to an hour, 8 tries in all (about 4 hours)."""


def settle_models(
    ref: ScanRef,
    spec: HPScanSpec,
    status: HPScanStatus,
    backends: Mapping[str, Backend],
    read_secret: Callable[[str, str, str], str],
    now: datetime,
) -> tuple[HPScanStatus, list[Event]]:
    """A finished scan's store one step closer to settled: the returned models that wait are tried again (their
    backend's waits), then, once none waits (the ranking needs every model), the prune, tried again after a
    doubling wait until it succeeds or ``PRUNE_TRIES`` failed. ``status.models`` and the ModelsStored condition
    say where it stands; an Event each time the condition changes."""
    assert status.models is not None
    uploads = []
    for uploader in sandbox_uploads(backends.values()):
        uploader.flush(ref)  # models returned by batch jobs whose upload failed: their backend's wait decides
        if (found := uploader.uploads(ref)) is not None:
            uploads.append(found)
    waiting, lost = sum(len(u.waiting) for u in uploads), sum(len(u.lost) for u in uploads)
    cause = next((u.error for u in uploads if u.error), "")
    models = status.models.model_copy(update={"waiting": waiting, "lost": lost})
    where = models.store.s3.endpoint + "/" + models.store.s3.bucket
    if waiting:
        stored: tuple[bool, str, str] = (
            False,
            Reason.MODELS_PENDING,
            f"{waiting} trained models wait for their upload to {where} ({cause}); the store is pruned once they are in",
        )
    elif models.retry_at is not None and now < models.retry_at:
        return status.model_copy(update={"models": models}), []  # a wait after a failed prune runs
    else:
        pruned = prune_models(ref, spec, read_secret)
        assert pruned is not None  # the scan keeps models in a store (status.models)
        if pruned.type == "Warning":
            failures = models.prune_failures + 1
            wait = retry_delay(failures, PRUNE_RETRY_SECONDS, PRUNE_TRIES, MAX_PRUNE_RETRY_SECONDS)
            then = f"gave up after {failures} tries" if wait is None else f"tried {failures} times, again in {wait:g} s"
            retry_at = None if wait is None else now + timedelta(seconds=wait)
            models = models.model_copy(
                update={"prune_failures": failures, "retry_at": retry_at, "settled": wait is None}
            )
            stored = (False, pruned.reason, f"{pruned.message} ({then})")
        else:
            models = models.model_copy(update={"prune_failures": 0, "retry_at": None, "settled": True})
            stored = (True, Reason.MODELS_KEPT, pruned.message)
            if lost:
                stored = (
                    False,
                    Reason.MODELS_LOST,
                    f"{pruned.message}; {lost} trained models were never stored: {cause}",
                )
    gave_up = models.settled and not stored[0]  # said once more, even when the condition reads the same
    return models_condition(status.model_copy(update={"models": models}), *stored, now, say=gave_up)


def models_condition(
    status: HPScanStatus, stored: bool, reason: str, message: str, now: datetime, say: bool = False
) -> tuple[HPScanStatus, list[Event]]:
    """``status`` with its ModelsStored condition set; an Event when the condition changed, or when ``say`` (pure)."""
    kind = ConditionType.MODELS_STORED.value
    held = next((c for c in status.conditions if c.type == kind), None)
    state = "True" if stored else "False"
    since = held.last_transition_time if held is not None and held.status == state else now
    condition = Condition(
        type=kind,
        status=state,
        reason=reason,
        message=message[:512],
        last_transition_time=since,
        observed_generation=status.observed_generation,
    )
    kept = [c for c in status.conditions if c.type != kind]
    changed = held is None or (held.status, held.reason) != (state, reason)
    events = [Event("Normal" if stored else "Warning", reason, message)] if changed or say else []
    return status.model_copy(update={"conditions": [*kept, condition]}), events


def reconcile_scan(
    body: Mapping[str, Any],
    backends: Mapping[str, Backend],
    memory: dict[str, Aggregate] | None = None,
    defaults: OperatorDefaults | None = None,
    probe_cache: ProbeCache | None = None,
    read_secret: Callable[[str, str, str], str] | None = None,
    searches: dict[str, Search] | None = None,
    now: datetime | None = None,
    settings: EngineSettings | None = None,
) -> Outcome:
    """Bring one scan one step closer to done. `backends` maps a site's backend name to its Backend.

    `defaults` are the site admin's: the sites of scans whose spec.sites is empty, and what scans may ask for.
    `memory` keeps each scan's plan and records between steps, by uid (backends hand over new records, and may repeat
    old ones); without it, or after an operator restart, the backends' persistent records rebuild it.
    `read_secret(namespace, name, key)` reads the key pair of spec.artifacts.store when the scan ends, to prune its
    stored models to what spec.artifacts keeps (no pruning without it). `searches` keeps the trials of scans whose
    workers pull (hpscan.core.search), by uid; a new one is rebuilt from the backends' channels. ``now``: the
    step's clock (a simulation's virtual time; default: the wall clock). ``settings``: the engine's, as the
    handlers build them at startup (default: ``defaults.engine_settings()``)."""
    generation = body.get("metadata", {}).get("generation")
    before = previous_status(body)
    if before is not None and before.phase in TERMINAL_SCAN_PHASES and before.observed_generation == generation:
        if read_secret is None or before.models is None or before.models.settled:
            return Outcome(status=None)  # finished, its store settled, and the spec did not change since
        return settle_finished(body, before, backends, read_secret, now)
    loaded = load_scan(body, memory, before)
    if isinstance(loaded, Outcome):
        return loaded
    scan, agg = loaded
    ref = scan_ref(body)
    defaults = defaults or OperatorDefaults()
    spec = defaults.with_store(scan.spec)
    targets = targets_of(spec.sites or defaults.default_sites(), default_backend="kubernetes")
    if (refused := refusal(ref, spec, agg.plan, targets, backends, defaults, generation, before)) is not None:
        return refused
    work = StepInput(
        ref, spec, agg, targets, previous=before, generation=generation, search=search_of(agg.plan, ref, searches)
    )
    try:
        result = step(work, backends, settings or defaults.engine_settings(), probe_cache=probe_cache, now=now)
    except HPScanError as error:  # e.g. a schedd that does not answer: say so, keep what is recorded, retry later
        known = before is not None and any(c.type == "Degraded" and c.reason == error.reason for c in before.conditions)
        events = [] if known else [Event("Warning", error.reason, str(error))]
        return Outcome(degraded(before, error.reason, str(error), generation), events)
    status = with_models(result.status, ref, spec, backends)
    events = events_between(before, status)
    finished = status.phase in TERMINAL_SCAN_PHASES and (before is None or before.phase not in TERMINAL_SCAN_PHASES)
    if finished and read_secret is not None and status.models is not None:
        status, settled = settle_models(ref, spec, status, backends, read_secret, now or datetime.now(UTC))
        events += settled
    return Outcome(status, events)


def load_scan(
    body: Mapping[str, Any], memory: dict[str, Aggregate] | None, before: HPScanStatus | None
) -> tuple[HPScan, Aggregate] | Outcome:
    """The HPScan of ``body`` and its aggregate (from ``memory``, by uid, or a new plan); an Outcome that fails
    the scan when it is invalid or its payload's checker refuses it (an Event the first time)."""
    meta = body.get("metadata", {})
    generation = meta.get("generation")
    try:
        scan = HPScan.model_validate({k: body[k] for k in ("apiVersion", "kind", "metadata", "spec") if k in body})
        key = meta.get("uid", "")  # the planned fields cannot change (CEL transition rules): one plan per uid
        agg = memory.get(key) if memory is not None else None
        if agg is None:
            planned = plan(scan.metadata.name, scan.spec)
            require_payload_accepts(planned)  # fails closed: a registered checker that cannot load refuses
            agg = Aggregate(planned)
            if memory is not None:
                memory[key] = agg
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        status = invalid_spec_status(f"{where}: {first['msg']}", generation)
        return Outcome(status, [Event("Warning", Reason.INVALID_SPEC, status.message or "")] if before is None else [])
    except HPScanError as error:  # the condition names the same reason as the Event (e.g. PayloadCheckUnavailable)
        status = invalid_spec_status(str(error), generation, error.reason)
        return Outcome(status, [Event("Warning", error.reason, str(error))] if before is None else [])
    return scan, agg


def refusal(
    ref: ScanRef,
    spec: HPScanSpec,
    planned: Plan,
    targets: Sequence[Target],
    backends: Mapping[str, Backend],
    defaults: OperatorDefaults,
    generation: int | None,
    before: HPScanStatus | None,
) -> Outcome | None:
    """An Outcome that fails a scan this operator must not run (None: it may run): privilege only a site admin
    grants, a backend that is not configured here, or what its backends refuse (e.g. workers that pull where the
    channel cannot). Never submitted; an Event the first time (every time for a missing backend)."""
    if refused := defaults.refusals(spec, ref.namespace):
        message = "; ".join(refused)
        status = invalid_spec_status(message, generation, Reason.NOT_ALLOWED)
        return Outcome(status, [Event("Warning", Reason.NOT_ALLOWED, message)] if before is None else [])
    if missing := sorted({t.backend for t in targets} - set(backends)):
        message = f"no {' or '.join(missing)} backend is configured in this operator"
        status = invalid_spec_status(message, generation)
        return Outcome(status, [Event("Warning", Reason.BACKEND_UNAVAILABLE, message)])
    if refused := [
        r
        for name in sorted({t.backend for t in targets})
        for r in [*pull_refusal(backends[name], planned), *backends[name].refusals(planned)]
    ]:
        message = "; ".join(refused)
        status = invalid_spec_status(message, generation)
        return Outcome(status, [Event("Warning", Reason.INVALID_SPEC, message)] if before is None else [])
    return None


def search_of(planned: Plan, ref: ScanRef, searches: dict[str, Search] | None) -> Search | None:
    """The trials of a scan whose workers pull, kept in ``searches`` by uid (a new one is rebuilt from the
    workers' channels); None for a planned scan."""
    if not planned.pull:
        return None
    search = (searches if searches is not None else {}).get(ref.uid) or Search(planned)
    if searches is not None:
        searches[ref.uid] = search
    return search


def with_models(status: HPScanStatus, ref: ScanRef, spec: HPScanSpec, backends: Mapping[str, Backend]) -> HPScanStatus:
    """``status`` with status.models when the scan has a store (the default one or its own: the CLI reads it
    there; one that keeps no models has it for its trials' checkpoints, pruned at the end as models are): the
    store, and the returned models that wait for their upload or were lost."""
    if spec.artifacts.store is None:
        return status
    uploads = [u for m in sandbox_uploads(backends.values()) if (u := m.uploads(ref)) is not None]
    models = ModelsStatus(
        store=spec.artifacts.store,
        waiting=sum(len(u.waiting) for u in uploads),
        lost=sum(len(u.lost) for u in uploads),
    )
    return status.model_copy(update={"models": models})


def settle_finished(
    body: Mapping[str, Any],
    before: HPScanStatus,
    backends: Mapping[str, Backend],
    read_secret: Callable[[str, str, str], str],
    now: datetime | None = None,
) -> Outcome:
    """A finished scan whose store is not settled yet (uploads wait, or the prune failed): settle_models again,
    with the store the status names; nothing else of the scan is touched."""
    assert before.models is not None
    try:
        scan = HPScan.model_validate({k: body[k] for k in ("apiVersion", "kind", "metadata", "spec") if k in body})
    except ValidationError:
        return Outcome(status=None)
    artifacts = scan.spec.artifacts.model_copy(update={"store": before.models.store})
    spec = scan.spec.model_copy(update={"artifacts": artifacts})
    status, events = settle_models(scan_ref(body), spec, before, backends, read_secret, now or datetime.now(UTC))
    return Outcome(None if status == before else status, events)
