"""Workers that stop trials at ASHA's rungs themselves, in the simulation with a lagging channel: the thresholds
reach a worker late (HTCondor edits up to 10 s late, Kubernetes watch caches 10 s behind, calls failing), and a
trial a worker stops at a rung must be one the study's pruner stops there too (World._check_rung_prunes: its value
is not among the best 1/reductionFactor of everything the rung holds at the end)."""

from __future__ import annotations

import pytest

from hpscan.core import search_space
from hpscan.testing.sim import FaultPlan, Scenario
from hpscan.testing.sim.world import World

LAGGING = {
    "htcondor": FaultPlan(edit_latency=10.0, api_error=0.05, outage=0.005, until=400.0),
    "kubernetes": FaultPlan(cache_lag=10.0, api_error=0.05, timeout_after=0.02, until=400.0),
}


def lagging(seed: int, backend: str) -> Scenario:
    return Scenario(
        seed=seed, backend=backend, strategy="tpe", early=True, budget=12, shards=3, epochs=3, faults=LAGGING[backend]
    )


@pytest.mark.parametrize("backend", ["htcondor", "kubernetes"])
def test_no_worker_prunes_against_thresholds_stricter_than_the_studys_while_the_channel_lags(backend: str):
    stopped = 0
    for seed in range(8):
        world = World(lagging(seed, backend))
        outcome = world.run()
        assert outcome.ok and outcome.phase == "Succeeded", (outcome.scenario.line(), outcome.violations)
        assert all(epoch in (1, 2) for epoch, _ in world.pruned_at_rung.values())  # rungs of minEpochs 1, rf 2
        stopped += len(world.pruned_at_rung)
    assert stopped >= 8, stopped  # workers did stop trials at rungs themselves (the check is not vacuous)


def test_thresholds_that_ignore_the_trials_still_to_come_are_caught(monkeypatch):
    """A planted bug: the workers get the study's threshold of the moment (as if no other trial would report at
    the rung), which a later report can loosen: a worker then stops a trial the study keeps."""
    real = search_space.worker_rungs

    def of_the_moment(values, still_to_come, *rest):
        return real(values, 1, *rest)

    monkeypatch.setattr(search_space, "worker_rungs", of_the_moment)
    caught = []
    for seed in range(8):
        outcome = World(lagging(seed, "kubernetes")).run()
        caught += [v for v in outcome.violations if "stopped by its worker" in v]
    assert caught
