"""A site's states (core/brokering.next_site_status): probed, usable, excluded for good, unreachable and back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hpscan.api.status import Reason, SiteState
from hpscan.core.brokering import ProbeOutcome, Target, next_site_status, probe_due

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
SITE = Target(name="t2", backend="htcondor", probe_timeout_seconds=600)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_probed_site_waits_then_passes_or_is_excluded_with_the_checks_words():
    probing = next_site_status(SITE, None, now=T0, needed=True, probe=ProbeOutcome(None, "probe sent"))
    assert (probing.state, probing.since) == (SiteState.PROBING, T0)
    still = next_site_status(SITE, probing, now=at(30), needed=True, probe=ProbeOutcome(None, "waits for a slot"))
    assert (still.state, still.since, still.message) == (SiteState.PROBING, T0, "waits for a slot")
    usable = next_site_status(SITE, still, now=at(40), needed=True, probe=ProbeOutcome(0, "1 GPU usable"))
    assert (usable.state, usable.reason, usable.message) == (SiteState.USABLE, Reason.PROBE_PASSED, "1 GPU usable")
    excluded = next_site_status(SITE, still, now=at(40), needed=True, probe=ProbeOutcome(3, "no CUDA device"))
    assert (excluded.state, excluded.reason, excluded.message) == (
        SiteState.EXCLUDED,
        "GPUUnavailable",
        "no CUDA device",
    )
    broken = next_site_status(SITE, still, now=at(40), needed=True, probe=ProbeOutcome(127, "dl1: not found"))
    assert (broken.state, broken.reason) == (SiteState.EXCLUDED, Reason.PROBE_FAILED)
    assert broken.message == "the probe exited 127: dl1: not found"


def test_a_probe_that_does_not_end_in_time_makes_the_site_unreachable_and_it_is_probed_again_later():
    probing = next_site_status(SITE, None, now=T0, needed=True, probe=ProbeOutcome(None, "sent"))
    late = next_site_status(SITE, probing, now=at(600), needed=True, probe=ProbeOutcome(None, "0/2 nodes available"))
    assert (late.state, late.reason) == (SiteState.UNREACHABLE, Reason.PROBE_TIMEOUT)
    assert "did not end within 600 s: 0/2 nodes available" in late.message
    assert not probe_due(late, needed=True, outage=None)  # not sent again at once
    waiting = next_site_status(SITE, late, now=at(900), needed=True, probe=ProbeOutcome(None, "sent"))
    assert (waiting.state, waiting.since) == (SiteState.UNREACHABLE, at(600))  # waits before the next probe
    again = next_site_status(SITE, waiting, now=at(1200), needed=True, probe=ProbeOutcome(None, "probe sent again"))
    assert (again.state, again.since) == (SiteState.PROBING, at(1200))


def test_an_outage_is_unreachable_until_the_site_answers_and_exclusion_is_for_good():
    usable = next_site_status(SITE, None, now=T0, needed=False)
    assert (usable.state, usable.reason) == (SiteState.USABLE, Reason.NOT_PROBED)
    down = next_site_status(SITE, usable, now=at(10), needed=False, outage="schedd ce01 did not answer")
    assert (down.state, down.reason, down.message) == (
        SiteState.UNREACHABLE,
        Reason.SITE_UNREACHABLE,
        "schedd ce01 did not answer",
    )
    assert not probe_due(down, needed=True, outage="still down")
    assert next_site_status(SITE, down, now=at(20), needed=False).state == SiteState.USABLE
    lost = next_site_status(SITE, usable, now=at(30), needed=False, gpu_failure="shard 3: no usable GPU")
    assert (lost.state, lost.reason) == (SiteState.EXCLUDED, Reason.GPU_UNAVAILABLE)
    later = next_site_status(SITE, lost, now=at(40), needed=True, probe=ProbeOutcome(0, "fine now"))
    assert (later.state, later.since) == (SiteState.EXCLUDED, at(30))


def test_after_a_probe_timeout_the_probe_is_due_again_only_after_as_long_again():
    """A timed-out probe is not sent again at once (it would hold a GPU for nothing): the site waits Unreachable for
    its probe timeout again, then turns Probing at the boundary, and only then is the probe due."""
    probing = next_site_status(SITE, None, now=T0, needed=True, probe=ProbeOutcome(None, "sent"))
    late = next_site_status(SITE, probing, now=at(600), needed=True, probe=ProbeOutcome(None, "no slot"))
    assert (late.state, late.reason, late.since) == (SiteState.UNREACHABLE, Reason.PROBE_TIMEOUT, at(600))
    assert not probe_due(late, needed=True, outage=None)
    waiting = next_site_status(SITE, late, now=at(1199.999), needed=True)
    assert (waiting.state, waiting.since) == (SiteState.UNREACHABLE, at(600))
    assert not probe_due(waiting, needed=True, outage=None)
    due = next_site_status(SITE, waiting, now=at(1200), needed=True)  # exactly the probe timeout after the timeout
    assert (due.state, due.since) == (SiteState.PROBING, at(1200))
    assert probe_due(due, needed=True, outage=None)


def test_a_site_back_from_an_outage_is_probed_again_at_once():
    probing = next_site_status(SITE, None, now=T0, needed=True, probe=ProbeOutcome(None, "sent"))
    down = next_site_status(SITE, probing, now=at(10), needed=True, outage="schedd ce01 did not answer")
    assert (down.state, down.reason) == (SiteState.UNREACHABLE, Reason.SITE_UNREACHABLE)
    assert not probe_due(down, needed=True, outage="still down")
    assert probe_due(down, needed=True, outage=None)
