"""Benchmark: wall time of a grid scan whose trials cost unevenly, static round-robin shards vs workers that pull.

The trial costs are real: each of the 200 grid points of ``bench/grid_table.py``'s table costs its recorded median
epoch time times its epochs (dl1 on synthetic jets, 2 CPU cores; small batches cost many times more than large
ones). Both schedules use the same number of workers, each running one trial at a time:

- static: hpscan's plan cuts the grid into one shard per worker, round-robin (``Plan.shard_of``), and each worker
  trains its shard's trials; the scan ends when the slowest shard does.
- pulled: each worker takes the next trial of the grid (in plan order) the moment it is free.

Rows with mixed workers (half of them at half speed, as with two GPU generations at one site) show the other
half of the story: a fast worker pulls more trials. The last line is for ``--workers`` equal workers (10 by
default: the paper's 10 GPU jobs, and the shards of examples/dl1-seed-scan.yaml). How much static shards lose
depends on how the cost-driving axis (here batch_size, 5 values, the fastest-varying) meets the shard count:
with 5 or 10 shards every shard gets one batch size; with 4, round-robin cycles through all five.

    .venv/bin/python bench/pull.py                 # trains the table first (minutes) if it is not cached
    .venv/bin/python bench/pull.py --workers 4
    # last line: pulled_over_static=<pulled wall time / static wall time>
"""

from __future__ import annotations

import argparse
import heapq
import statistics
import sys
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import grid_table

from hpscan.api.spec import Sampling


def trial_costs(table: grid_table.Table) -> list[float]:
    """Seconds per trial in plan order: the median of its epoch times (the first carries graph building) x epochs."""
    costs = []
    for row in table.rows:
        steady = row.epoch_seconds[1:] or row.epoch_seconds
        costs.append(statistics.median(steady) * len(row.epoch_seconds))
    return costs


def static_wall(costs: Sequence[float], shard_of: Sequence[int], speeds: Sequence[float]) -> float:
    """Wall time when shard ``s`` (the trials with ``shard_of[i] == s``) runs on worker ``s`` at ``speeds[s]``."""
    loads = [0.0] * len(speeds)
    for cost, shard in zip(costs, shard_of, strict=True):
        loads[shard] += cost / speeds[shard]
    return max(loads)


def pulled_wall(costs: Sequence[float], speeds: Sequence[float], held: int = 1) -> float:
    """Wall time when workers pull trials in order, each holding ``held`` open ones (the one it trains and the
    next: hpscan's sampling.trialsPerWorker) and topped up the moment it finishes one (ties: the lower worker)."""
    pending = deque(range(len(costs)))
    queues: list[deque[int]] = [deque() for _ in speeds]
    clock: list[tuple[float, int]] = []

    def top_up_and_start(worker: int, now: float) -> None:
        while len(queues[worker]) < held and pending:
            queues[worker].append(pending.popleft())
        if queues[worker]:
            trial = queues[worker].popleft()
            heapq.heappush(clock, (now + costs[trial] / speeds[worker], worker))

    for worker in range(len(speeds)):  # the first hand-out, worker by worker
        top_up_and_start(worker, 0.0)
    end = 0.0
    while clock:
        end, worker = heapq.heappop(clock)
        top_up_and_start(worker, end)
    return end


def shards_of(plan) -> list[int]:
    """The shard of each plan position, as hpscan's planner cuts the grid (round-robin)."""
    return [plan.shard_of(position) for position in range(plan.total)]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workers", type=int, default=10, help="workers (and static shards) of the last line: the paper's 10 jobs"
    )
    parser.add_argument(
        "--held",
        type=int,
        default=Sampling.model_fields["trials_per_worker"].default,
        help="trials a pulling worker holds at once (sampling.trialsPerWorker; its default)",
    )
    parser.add_argument("--cache", type=Path, default=grid_table.CACHE, help="folder of the trained tables")
    args = parser.parse_args(argv)

    from rich.console import Console
    from rich.table import Table as RichTable

    console = Console()
    if not console.is_terminal:
        console.width = 120  # a log or a pipe: wide enough for the table
    table = grid_table.load_or_train(grid_table.SPACE, grid_table.SETTINGS, args.cache, console.print)
    costs = trial_costs(table)
    console.print(
        f"{len(costs)} trials, {sum(costs):.0f} s of training in all; one trial costs "
        f"{min(costs):.1f}-{max(costs):.1f} s (median {statistics.median(costs):.1f} s)"
    )
    out = RichTable(
        title=f"grid scan wall time: static round-robin shards vs workers that pull (holding {args.held} trials)"
    )
    for column in ("workers", "speeds", "static (s)", "pulled (s)", "ideal (s)", "pulled / static"):
        out.add_column(column, justify="right")
    headline = None
    for workers in sorted({2, 4, 5, 8, 10, args.workers}):
        shards = shards_of(grid_table.grid_plan(grid_table.SPACE, workers))
        for label, speeds in (
            ("equal", [1.0] * workers),
            ("half at 0.5x", [1.0 if w % 2 == 0 else 0.5 for w in range(workers)]),
        ):
            static, pulled = static_wall(costs, shards, speeds), pulled_wall(costs, speeds, args.held)
            ratio = pulled / static
            if workers == args.workers and label == "equal":
                headline = ratio
            out.add_row(
                str(workers),
                label,
                f"{static:.1f}",
                f"{pulled:.1f}",
                f"{sum(costs) / sum(speeds):.1f}",
                f"{ratio:.3f}",
            )
    console.print(out)
    print(f"pulled_over_static={headline:.3f}")


if __name__ == "__main__":
    sys.exit(main())
