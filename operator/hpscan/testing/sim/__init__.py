"""A deterministic simulation of hpscan's control loop with injected faults (tests/simulation, `make sim`).

``run(scenario_of(seed))`` replays one schedule; hpscan.testing.sim.world says what runs for real and what is
simulated."""

from hpscan.testing.sim.scenario import FaultPlan, Scenario, scenario_of
from hpscan.testing.sim.world import Outcome, run, shrink

__all__ = ["FaultPlan", "Outcome", "Scenario", "run", "scenario_of", "shrink"]
