"""The control loop under faults: random schedules of the deterministic simulation (hpscan.testing.sim), each
checked against the invariants after every operator step and at the end. A failure prints its reproduction line
and the shortest failing schedule found. ``make sim SEEDS=N`` soaks longer."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from hpscan.core import search
from hpscan.testing.sim import FaultPlan, Scenario, run, scenario_of
from hpscan.testing.sim.__main__ import report, run_seeds, scenario_from_line

SEEDS = int(os.environ.get("HPSCAN_SIM_SEEDS", "2000"))


@pytest.mark.slow  # about 2.5 minutes on 2 cores: make test runs it, make test-fast does not
def test_random_schedules_with_faults_keep_every_invariant():
    outcomes, seconds = run_seeds(range(SEEDS))
    failed = [o for o in outcomes if not o.ok]
    restarts = sum(o.restarts for o in outcomes)
    print(f"{len(outcomes)} schedules in {seconds:.1f} s, {restarts} operator restarts, {len(failed)} failed")
    assert restarts > 0 and sum(o.scenario.faults.api_error > 0 for o in outcomes) > len(outcomes) // 2
    assert {o.scenario.backend for o in outcomes} == {"kubernetes", "htcondor"}
    assert any(o.scenario.broken_site for o in outcomes)
    assert not failed, "\n\n".join(report(o) for o in failed[:2])


def test_a_seed_replays_the_same_schedule_exactly():
    scenario = scenario_of(3)
    first, second = run(scenario), run(scenario)
    assert (first.steps, first.restarts, first.calls, first.seconds, first.violations) == (
        second.steps,
        second.restarts,
        second.calls,
        second.seconds,
        second.violations,
    )


def test_a_reproduction_line_gives_back_its_schedule():
    scenario = replace(scenario_of(7), budget=4, faults=FaultPlan(api_error=0.1, crash=0.05, until=100))
    fields = dict(item.split("=", 1) for item in scenario.line().split(" ")[1:])
    assert scenario_from_line(scenario.seed, fields) == scenario


def test_a_friendly_world_ends_every_scan_succeeded():
    for strategy, early in (("grid", False), ("random", False), ("tpe", True)):
        outcome = run(Scenario(seed=1, strategy=strategy, early=early, budget=8, shards=2, epochs=2))
        assert outcome.ok and outcome.phase == "Succeeded" and outcome.restarts == 0, outcome.violations


@pytest.mark.slow
def test_a_planted_bug_in_the_hand_out_is_caught_with_a_reproduction_line(monkeypatch):
    """The defect the outbox fixed, planted again: a hand-out that fails takes back every open trial of its worker
    (the trial in training included) and sends no withdraw line, so the worker trains it while another does."""

    def send_or_take_back(self, worker, lines):
        if worker in self._outbox:  # the last hand-out to this worker failed
            self.take_back(worker)
        if lines:
            self._outbox.setdefault(worker, []).extend(lines)

    monkeypatch.setattr(search.Search, "send", send_or_take_back)
    failed = []
    for seed in range(400):
        scenario = scenario_of(seed)
        if scenario.strategy == "grid" or not scenario.faults.api_error:
            continue
        if not (outcome := run(scenario)).ok:
            failed.append(outcome)
            break
    assert failed, "the simulation did not catch a planted hand-out bug"
    text = report(failed[0])
    assert "reproduce: python -m hpscan.testing.sim --seed" in text and "shortest failing schedule" in text


@pytest.mark.parametrize(
    "kind", ["api_error", "timeout_after", "crash", "cache_lag", "pod_death", "eviction", "outage", "edit_latency"]
)
def test_every_fault_kind_is_drawn_often(kind):
    """The fault plan draws every kind often (rare events made common; outages and edit latency are HTCondor's)."""
    drawn = sum(getattr(scenario_of(seed).faults, kind) > 0 for seed in range(200))
    assert drawn > 15


@pytest.mark.parametrize(
    ("seed", "what_it_found"),
    [
        (0, "a record whose page patch failed ended the attempt; the retried pod trained it again (defect 3)"),
        (19, "a Job seen Complete before its last page reached the cache: RecordsMissing, the scan Failed (defect 4)"),
        (195, "a lagging Job cache made the engine start its workers again: each got a second first batch, and a "
         "submit that timed out took back the trials they were training; then a status with pending < 0 raised"),
    ],
)  # fmt: skip
def test_schedules_that_found_a_defect_stay_fixed(seed, what_it_found):
    outcome = run(scenario_of(seed))
    assert outcome.ok, f"{what_it_found}: {outcome.violations}"
