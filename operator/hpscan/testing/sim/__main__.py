"""``python -m hpscan.testing.sim``: run schedules of the control-loop simulation (``make sim SEEDS=N``).

--seeds A:B        the seeds A..B-1 (default 0:2000), on every core; failures are shrunk and printed
--seed N           one seed, with --faults to replay a shrunk fault plan exactly (its reproduction line)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from dataclasses import replace
from multiprocessing import Pool

from hpscan.testing.sim.scenario import FaultPlan, Scenario, scenario_of
from hpscan.testing.sim.world import Outcome, run, shrink


def parse_faults(text: str) -> FaultPlan:
    values = dict(item.split("=") for item in text.split(",") if item and item != "none")
    return FaultPlan(**{k: float(v) for k, v in values.items()})


def scenario_from_line(seed: int, overrides: dict[str, str]) -> Scenario:
    """A scenario from a reproduction line's fields (those missing: the seed's own draw)."""
    scenario = scenario_of(seed)
    fields: dict[str, object] = {}
    for key, value in overrides.items():
        if key == "faults":
            fields[key] = parse_faults(value)
        elif key in ("strategy", "backend"):
            fields[key] = value
        elif key in ("early", "broken_site"):
            fields[key] = value == "1"
        else:
            fields[key] = int(value)
    return replace(scenario, **fields)  # type: ignore[arg-type]


def _run_seed(seed: int) -> Outcome:
    with open(os.devnull, "w") as quiet, contextlib.redirect_stderr(quiet):  # the pods' words on stderr
        return run(scenario_of(seed))


def run_seeds(seeds: range, processes: int | None = None) -> tuple[list[Outcome], float]:
    """Every seed's outcome (in seed order) and the seconds it took."""
    started = time.monotonic()
    with Pool(processes or os.cpu_count() or 1) as pool:
        outcomes = pool.map(_run_seed, seeds, chunksize=8)
    return outcomes, time.monotonic() - started


def report(outcome: Outcome) -> str:
    """A failure: what broke, the reproduction line, and the shortest failing schedule found."""
    small = shrink(outcome.scenario)
    lines = [
        f"schedule {outcome.scenario.line()} broke {len(outcome.violations)} invariant(s):",
        *(f"  {v}" for v in outcome.violations[:5]),
        f"  reproduce: python -m hpscan.testing.sim --seed {outcome.scenario.seed}",
        f"  shortest failing schedule: python -m hpscan.testing.sim {small.line().replace('seed=', '--seed ')}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hpscan.testing.sim", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0:2000")
    parser.add_argument("--seed", type=int)
    parser.add_argument("fields", nargs="*", help="key=value fields of a reproduction line (strategy=tpe ...)")
    args = parser.parse_args(argv)
    if args.seed is not None:
        scenario = scenario_from_line(args.seed, dict(f.split("=", 1) for f in args.fields))
        outcome = run(scenario)
        print(f"{scenario.line()}: {outcome.phase} after {outcome.steps} steps, {outcome.restarts} restarts")
        for violation in outcome.violations:
            print(f"  {violation}")
        return 0 if outcome.ok else 1
    first, last = (int(x) for x in args.seeds.split(":"))
    outcomes, seconds = run_seeds(range(first, last))
    failed = [o for o in outcomes if not o.ok]
    for outcome in failed[:3]:
        print(report(outcome))
    print(
        f"{len(outcomes)} schedules in {seconds:.1f} s ({len(outcomes) / seconds:.1f} per second), {len(failed)} failed"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
