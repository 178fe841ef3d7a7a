"""Scheduling decisions: parallelism, suspend, and where shards go (brokering over usable sites)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from hpscan.api.sites import Site
from hpscan.api.spec import HPScanSpec
from hpscan.api.status import Reason, ShardPhase, ShardStatus, SiteState, SiteStatus
from hpscan.core.brokering import Target, targets_of
from hpscan.core.decisions import decide

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
LOCAL = [Target(name="local", backend="local")]
USABLE = {"local": SiteStatus(name="local", backend="local", state=SiteState.USABLE)}


def spec(**extra) -> HPScanSpec:
    return HPScanSpec.model_validate(
        {"parameters": [{"name": "a", "values": [1]}], "sharding": {"shards": 1}, "payload": {"image": "p"}, **extra}
    )


def states(**phases: str) -> dict[int, ShardStatus]:
    return {int(k[1:]): ShardStatus(index=int(k[1:]), phase=ShardPhase(v), site="local") for k, v in phases.items()}


def starts(scan: HPScanSpec, shards: int, known: dict[int, ShardStatus]) -> list[int]:
    return decide(scan, shards, known, LOCAL, USABLE, NOW).start_shards


def test_starts_up_to_parallelism_lowest_index_first():
    assert starts(spec(parallelism=2), 5, {}) == [0, 1]
    assert starts(spec(parallelism=2), 5, states(s0="Running")) == [1]
    assert starts(spec(parallelism=2), 5, states(s0="Running", s1="Pending")) == []
    assert starts(spec(parallelism=2), 5, states(s0="Succeeded", s1="Failed")) == [2, 3]


def test_no_parallelism_starts_everything():
    assert starts(spec(), 4, {}) == [0, 1, 2, 3]


def test_finished_shards_are_never_restarted():
    assert starts(spec(), 2, states(s0="Succeeded", s1="Failed")) == []


def test_suspend_stops_active_shards_and_starts_none():
    decision = decide(spec(suspend=True), 4, states(s0="Running", s1="Pending", s2="Succeeded"), LOCAL, USABLE, NOW)
    assert decision.start == [] and decision.stop == [0, 1]


def test_resume_restarts_suspended_shards():
    assert starts(spec(), 3, states(s0="Suspended", s1="Succeeded")) == [0, 2]


# --- brokering over sites ---


def site(name: str, weight: int = 1, **extra) -> Site:
    return Site.model_validate({"name": name, "weight": weight, "kubernetes": {}, **extra})


def site_states(targets: list[Target], **state: SiteState) -> dict[str, SiteStatus]:
    return {
        t.name: SiteStatus(name=t.name, backend=t.backend, state=state.get(t.name, SiteState.USABLE)) for t in targets
    }


@given(st.integers(1, 200), st.lists(st.integers(1, 5), min_size=1, max_size=4))
def test_sites_get_shards_in_proportion_to_weight_deterministically(shards, weights):
    targets = targets_of([site(f"s{i}", w) for i, w in enumerate(weights)], "kubernetes")
    usable = site_states(targets)
    decision = decide(spec(), shards, {}, targets, usable, NOW)
    counts = Counter(s.site for s in decision.start)
    total = sum(weights)
    for i, w in enumerate(weights):
        assert abs(counts[f"s{i}"] - shards * w / total) <= len(weights)
    assert decision == decide(spec(), shards, {}, targets, usable, NOW)


@st.composite
def brokering_cases(draw):
    count = draw(st.integers(1, 4))
    sites = [
        site(f"s{i}", draw(st.integers(1, 4)), maxRunning=draw(st.one_of(st.none(), st.integers(0, 6))))
        for i in range(count)
    ]
    targets = targets_of(sites, "kubernetes")
    kinds = st.sampled_from(list(SiteState))
    sites_now = {t.name: SiteStatus(name=t.name, backend=t.backend, state=draw(kinds)) for t in targets}
    shards = draw(st.integers(1, 40))
    known = {}
    for index in range(shards):
        phase = draw(st.sampled_from([None, *ShardPhase]))
        if phase is not None:
            where = draw(st.sampled_from([t.name for t in targets]))
            known[index] = ShardStatus(index=index, phase=phase, site=where)
    parallelism = draw(st.one_of(st.none(), st.integers(1, 20)))
    return targets, sites_now, shards, known, parallelism


@given(brokering_cases())
def test_placement_respects_sites_capacity_and_places_all_it_can(case):
    targets, sites_now, shards, known, parallelism = case
    decision = decide(spec(parallelism=parallelism), shards, known, targets, sites_now, NOW)
    usable = {n for n, s in sites_now.items() if s.state == SiteState.USABLE}
    # never on a site that is not usable
    assert all(s.site in usable for s in decision.start)
    # never over a site's maxRunning, nor over parallelism
    active = Counter(  # a withdrawn shard's job is removed: it leaves its site
        s.site
        for s in known.values()
        if s.phase in {ShardPhase.PENDING, ShardPhase.RUNNING} and s.index not in decision.withdraw
    )
    placed = Counter(s.site for s in decision.start)
    for target in targets:
        if target.max_running is not None:
            assert active[target.name] + placed[target.name] <= max(target.max_running, active[target.name])
    running = sum(active.values())
    if parallelism is not None:
        assert running + len(decision.start) <= max(parallelism, running)
    # every waiting shard is placed when capacity exists
    waiting = [i for i in range(shards) if i not in known or known[i].phase == ShardPhase.SUSPENDED]
    room_left = (parallelism or shards) - running - len(decision.start)
    site_room = any(
        t.name in usable and (t.max_running is None or active[t.name] + placed[t.name] < t.max_running) for t in targets
    )
    probing = any(site.state == SiteState.PROBING for site in sites_now.values())  # shares cap placement then
    if room_left > 0 and site_room and not probing:
        assert {s.shard for s in decision.start} >= set(waiting)
    # deterministic, and each shard at most once
    assert decision == decide(spec(parallelism=parallelism), shards, known, targets, sites_now, NOW)
    assert len({s.shard for s in decision.start}) == len(decision.start)


def test_a_shard_that_found_no_gpu_moves_to_another_site_as_a_new_generation():
    targets = targets_of([site("a"), site("b")], "kubernetes")
    failed = {
        0: ShardStatus(index=0, site="a", phase=ShardPhase.FAILED, reason=Reason.GPU_UNAVAILABLE),
        1: ShardStatus(index=1, site="b", phase=ShardPhase.RUNNING),
    }
    decision = decide(spec(), 2, failed, targets, site_states(targets, a=SiteState.EXCLUDED), NOW)
    assert [(s.shard, s.site, s.moves) for s in decision.start] == [(0, "b", 1)]
    assert decision.withdraw == {}  # its job ended: nothing to remove


def test_a_failed_payload_is_not_moved():
    targets = targets_of([site("a"), site("b")], "kubernetes")
    failed = {0: ShardStatus(index=0, site="a", phase=ShardPhase.FAILED, reason=Reason.PAYLOAD_FAILED)}
    assert decide(spec(), 1, failed, targets, site_states(targets), NOW).start == []


def test_a_job_held_past_the_hold_timeout_is_withdrawn_and_moved():
    targets = targets_of([site("a", holdTimeoutSeconds=600), site("b")], "kubernetes")
    held = ShardStatus(index=0, site="a", phase=ShardPhase.PENDING, reason=Reason.HELD, message="no input")
    young = held.model_copy(update={"since": NOW - timedelta(seconds=599)})
    old = held.model_copy(update={"since": NOW - timedelta(seconds=601)})
    assert decide(spec(), 1, {0: young}, targets, site_states(targets), NOW).start == []
    decision = decide(spec(), 1, {0: old}, targets, site_states(targets), NOW)
    assert decision.withdraw[0][0] == Reason.HOLD_TIMEOUT and "no input" in decision.withdraw[0][1]
    assert [(s.site, s.moves) for s in decision.start] == [("b", 1)]


def test_a_pending_shard_on_a_site_excluded_since_moves_but_a_running_one_stays():
    targets = targets_of([site("a"), site("b")], "kubernetes")
    known = {
        0: ShardStatus(index=0, site="a", phase=ShardPhase.PENDING),
        1: ShardStatus(index=1, site="a", phase=ShardPhase.RUNNING),
    }
    decision = decide(spec(), 2, known, targets, site_states(targets, a=SiteState.EXCLUDED), NOW)
    assert list(decision.withdraw) == [0] and [s.shard for s in decision.start] == [0]


def test_a_shard_that_must_move_waits_when_no_site_can_take_it():
    targets = targets_of([site("a"), site("b")], "kubernetes")
    failed = {0: ShardStatus(index=0, site="a", phase=ShardPhase.FAILED, reason=Reason.GPU_UNAVAILABLE)}
    sites_now = site_states(targets, a=SiteState.EXCLUDED, b=SiteState.UNREACHABLE)
    decision = decide(spec(), 1, failed, targets, sites_now, NOW)
    assert decision.start == [] and "b Unreachable" in decision.waiting[0]


def test_a_suspended_shard_resumes_on_its_own_site_when_usable():
    targets = targets_of([site("a"), site("b", weight=5)], "kubernetes")
    suspended = {0: ShardStatus(index=0, site="a", phase=ShardPhase.SUSPENDED, moves=2)}
    [start] = decide(spec(), 1, suspended, targets, site_states(targets), NOW).start
    assert (start.site, start.moves) == ("a", 2)
    [elsewhere] = decide(spec(), 1, suspended, targets, site_states(targets, a=SiteState.EXCLUDED), NOW).start
    assert (elsewhere.site, elsewhere.moves) == ("b", 3)


def test_max_running_zero_drains_a_site():
    targets = targets_of([site("a", maxRunning=0), site("b")], "kubernetes")
    assert {s.site for s in decide(spec(), 5, {}, targets, site_states(targets), NOW).start} == {"b"}


def test_while_a_site_is_probed_a_usable_site_takes_only_its_weighted_share():
    targets = targets_of([site("cached", weight=1), site("probing", weight=3)], "kubernetes")
    sites_now = site_states(targets, probing=SiteState.PROBING)
    assert [s.site for s in decide(spec(), 8, {}, targets, sites_now, NOW).start] == ["cached", "cached"]
    everything = decide(spec(), 8, {}, targets, site_states(targets, probing=SiteState.EXCLUDED), NOW)
    assert len(everything.start) == 8  # once the probe ended, no cap
