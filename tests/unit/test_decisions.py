"""Scheduling decisions: parallelism, suspend, and site spreading."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from hpscan.api.sites import Site
from hpscan.api.spec import HPScanSpec
from hpscan.api.status import ShardPhase, ShardStatus
from hpscan.core.decisions import assign_sites, decide


def spec(**extra) -> HPScanSpec:
    return HPScanSpec.model_validate(
        {"parameters": [{"name": "a", "values": [1]}], "sharding": {"shards": 1}, "payload": {"image": "p"}, **extra}
    )


def states(**phases: str) -> dict[int, ShardStatus]:
    return {int(k[1:]): ShardStatus(index=int(k[1:]), phase=ShardPhase(v)) for k, v in phases.items()}


def test_starts_up_to_parallelism_lowest_index_first():
    assert decide(spec(parallelism=2), 5, {}).start == [0, 1]
    assert decide(spec(parallelism=2), 5, states(s0="Running")).start == [1]
    assert decide(spec(parallelism=2), 5, states(s0="Running", s1="Pending")).start == []
    assert decide(spec(parallelism=2), 5, states(s0="Succeeded", s1="Failed")).start == [2, 3]


def test_no_parallelism_starts_everything():
    assert decide(spec(), 4, {}).start == [0, 1, 2, 3]


def test_finished_shards_are_never_restarted():
    assert decide(spec(), 2, states(s0="Succeeded", s1="Failed")).start == []


def test_suspend_stops_active_shards_and_starts_none():
    decision = decide(spec(suspend=True), 4, states(s0="Running", s1="Pending", s2="Succeeded"))
    assert decision.start == [] and decision.stop == [0, 1]


def test_resume_restarts_suspended_shards():
    assert decide(spec(), 3, states(s0="Suspended", s1="Succeeded")).start == [0, 2]


def site(name: str, weight: int = 1) -> Site:
    return Site.model_validate({"name": name, "weight": weight, "kubernetes": {}})


@given(st.integers(1, 200), st.lists(st.integers(1, 5), min_size=1, max_size=4))
def test_sites_get_shards_in_proportion_to_weight(shards, weights):
    sites = [site(f"s{i}", w) for i, w in enumerate(weights)]
    counts = Counter(s.name for s in assign_sites(shards, sites).values() if s is not None)
    total = sum(weights)
    for i, w in enumerate(weights):
        assert abs(counts[f"s{i}"] - shards * w / total) < len(weights)
    assert assign_sites(shards, sites) == assign_sites(shards, sites)


def test_no_sites_means_the_default_site():
    assert assign_sites(3, []) == {0: None, 1: None, 2: None}
