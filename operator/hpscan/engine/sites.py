"""Sites and probes: each site's next state (hpscan.core.brokering.next_site_status), probing the sites that need
it, and the sites an action failed on this step."""

from __future__ import annotations

import contextlib
import json
from collections.abc import MutableMapping
from datetime import datetime

from hpscan.api.spec import HPScanSpec
from hpscan.api.status import HPScanStatus, Reason, SiteState, SiteStatus
from hpscan.core.brokering import ProbeOutcome, Target, gpu_failures, next_site_status, probe_due, probe_needed
from hpscan.engine.context import StepContext
from hpscan.errors import HPScanError

ProbeCache = MutableMapping[str, tuple[ProbeOutcome, datetime]]
"""Ended probe outcomes by site, image and check (probe_key), with when they ended: ten scans on one site probe it
once. The operator keeps one for all scans; entries older than EngineSettings.probe_cache_seconds are ignored."""


def probe_key(target: Target, spec: HPScanSpec) -> str:
    """What a probe's outcome depends on: the site's settings and environment, the image, the check, the GPUs."""
    site = target.site.model_dump(mode="json", exclude={"weight", "max_running"}) if target.site else None
    payload = {"image": spec.payload.image, "check": spec.payload.gpu_check, "env": spec.payload.model_dump()["env"]}
    return json.dumps([target.name, target.backend, site, payload, spec.gpu.model_dump(mode="json")], sort_keys=True)


def next_sites(
    ctx: StepContext, previous: HPScanStatus | None, probe_cache: ProbeCache | None, cache_seconds: float
) -> dict[str, SiteStatus]:
    """Each site's next state, probing the sites that need it: from the cache when a recent probe of the same site,
    image and check ended, else through the site's backend. A probe that timed out is ended (its job removed)."""
    before = {s.name: s for s in (previous.sites if previous is not None else [])}
    needed = probe_needed(ctx.spec)
    failures = gpu_failures(ctx.states)
    sites: dict[str, SiteStatus] = {}
    for target in ctx.targets:
        held = before.get(target.name)
        outage = ctx.outages.get(target.name)
        probe: ProbeOutcome | None = None
        probes = needed
        if probe_due(held, needed, outage) and target.name not in failures:
            probe, probes, outage = _probe(ctx, target, probe_cache, cache_seconds, needed, outage)
        site = next_site_status(
            target, held, now=ctx.now, needed=probes, probe=probe, outage=outage, gpu_failure=failures.get(target.name)
        )
        timed_out = site.reason == Reason.PROBE_TIMEOUT and (held is None or held.reason != Reason.PROBE_TIMEOUT)
        if timed_out:
            with contextlib.suppress(HPScanError):  # else removed with the scan at the latest
                ctx.backends[target.backend].end_probe(ctx.scan, target.site)
        sites[target.name] = site
    return sites


def _probe(
    ctx: StepContext,
    target: Target,
    probe_cache: ProbeCache | None,
    cache_seconds: float,
    needed: bool,
    outage: str | None,
) -> tuple[ProbeOutcome | None, bool, str | None]:
    """A site's probe outcome (None: still running, or it could not be sent), whether the site is probed at all (a
    backend that cannot probe: its sites are NotProbed), and the site's outage (a probe that could not be sent)."""
    key = probe_key(target, ctx.spec)
    cached = probe_cache.get(key) if probe_cache is not None else None
    if cached is not None and (ctx.now - cached[1]).total_seconds() < cache_seconds:
        return ProbeOutcome(cached[0].exit_code, f"{cached[0].message} (probed {cached[1]:%H:%M:%S})"), needed, outage
    probe: ProbeOutcome | None = None
    probes = needed
    try:
        probe = ctx.backends[target.backend].probe(ctx.scan, ctx.spec, target.site)
        probes = probe is not None
    except HPScanError as error:
        outage = f"sending the probe: {error}"
    if probe is not None and probe.ended and probe_cache is not None:
        probe_cache[key] = (probe, ctx.now)
    return probe, probes, outage


def with_outages(ctx: StepContext, sites: dict[str, SiteStatus]) -> dict[str, SiteStatus]:
    """The sites an action failed on this step (a submit, a cancel, a hand-out): said now, not a step later."""
    for site_name, why in ctx.outages.items():
        held = sites[site_name]
        if held.state != SiteState.EXCLUDED and held.message != why:
            sites[site_name] = next_site_status(
                ctx.by_site[site_name], held, now=ctx.now, needed=probe_needed(ctx.spec), outage=why
            )
    return sites
