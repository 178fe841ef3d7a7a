"""Benchmark: trial-epochs that grid, random, TPE and TPE + ASHA need to come within 1% of the grid's best val_loss.

A *tabular* benchmark, as HPOBench and NAS-Bench do it: the curves are real trainings replayed from a table. The
whole grid of a fixed 200-point dl1 space is trained once, for real (``dl1.train.train_many``, TensorFlow, synthetic
jets, patience 0 so every curve runs to the last epoch), and each combination's per-epoch val_loss and epoch wall
times are kept. Every strategy then runs against that table as the HPScan a user would write (``sampling``,
``earlyStopping``, shards that pull), through hpscan's own search ledger (``hpscan.core.search.Search``: Optuna's
sampler and pruner, ask/tell, repeats told instead of retrained): each trial "trains" by replaying its
combination's curve epoch by epoch (reported as the payload reports it, then the pruner decides; a pruned trial
stops there and costs only the epochs it ran), on simulated workers whose clock is the table's real epoch times,
so trials are in flight while others are suggested, as in a real scan. Why a table: the machine has 2 shared CPU
cores, where the grid trains once in minutes but 4 strategies x several seeds of live training would take hours;
replaying real curves gives every strategy exactly the losses it would have seen. What a table leaves out: dl1
seeds a network's initialisation with its trial id, so a real scan's trial of a point trains from other weights
than the grid's did; retraining the three best points under other ids moved their val_loss by up to 2.7% (0.6103
to 0.6271), the size of the 1% target, so the grid's best is partly a lucky initialisation. Each point here has
its one recorded curve (a tabular benchmark with one repeat per point; NAS-Bench-101 keeps three).

The figure: trial-epochs spent until a finished trial's val_loss (its best epoch, as dl1 records it) is within 1%
of the best in the grid, median and range over seeds; a run that never gets there counts as its whole budget
(samples x epochs). Grid runs all 200 combinations in plan order; the others stop at their ``samples``.

    .venv/bin/python bench/search.py                      # trains the grid once (minutes), then seconds
    .venv/bin/python bench/search.py --seeds 20 --samples 100 --min-epochs 1 --reduction-factor 3   # the defaults
    # last line: fraction_of_grid_epochs=<median epochs-to-target of TPE + ASHA / the full grid's trial-epochs>
    # target: <= 0.25

The table is cached in ~/.cache/hpscan-bench/ (``--cache``) under a key of the space and the settings.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import json
import math
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SPACE: list[dict[str, Any]] = [
    {"name": "learning_rate", "range": {"min": 1.0e-4, "max": 1.0e-2, "count": 5, "scale": "log"}},
    {"name": "layer1", "values": [16, 32, 64, 128]},
    {"name": "layer2", "values": [16, 64]},
    {"name": "batch_size", "values": [32, 64, 128, 256, 512]},
]
"""The scan's parameters, as in an HPScan's ``spec.parameters``: 5 x 4 x 2 x 5 = 200 grid points."""

SETTINGS: dict[str, Any] = {
    "epochs": 20,
    "patience": 0,  # every curve complete: pruning is the strategies' business, not the payload's
    "fuse": 1,  # one combination per graph, so each epoch time is that combination's own
    "seed": 0,
    "data": {"synthetic": {"jets": 36000, "seed": 1}},  # 6,000 validation jets: val_loss noise well under 1%
}
"""``spec.payload.settings`` of the grid that fills the table."""

TABLE_VERSION = 1
"""Bumped when the table's layout or the way it is filled changes (a new cache key)."""

CACHE = Path.home() / ".cache" / "hpscan-bench"
WITHIN = 0.01
"""Reached: a finished trial's val_loss within this fraction of the grid's best."""


# -- the table ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One grid point's real training: val_loss and wall seconds per epoch (a failed one ends non-finite)."""

    id: str
    parameters: dict[str, Any]
    val_loss: tuple[float, ...]
    epoch_seconds: tuple[float, ...]

    @property
    def value(self) -> float:
        """What the payload records for the full run: the best epoch's val_loss (inf when it diverged)."""
        finite = [v for v in self.val_loss if math.isfinite(v)]
        return min(finite) if finite and len(finite) == len(self.val_loss) else math.inf


@dataclass(frozen=True)
class Table:
    key: str
    epochs: int
    rows: tuple[Row, ...]
    about: dict[str, Any] = field(default_factory=dict)

    @property
    def best(self) -> float:
        return min(r.value for r in self.rows)

    @property
    def grid_epochs(self) -> int:
        """Trial-epochs of the full grid: every combination to its last epoch (or the epoch it failed at)."""
        return sum(len(r.val_loss) for r in self.rows)


def table_key(space: list[dict[str, Any]], settings: dict[str, Any]) -> str:
    """Cache key of a table: the space, the settings and the table's layout version."""
    text = json.dumps({"space": space, "settings": settings, "version": TABLE_VERSION}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def grid_plan(space: list[dict[str, Any]], shards: int = 1):
    """hpscan's own plan of the grid (its combinations in plan order, round-robin shards)."""
    from hpscan.api.spec import HPScanSpec
    from hpscan.core.planning import plan

    spec = HPScanSpec.model_validate(
        {
            "parameters": space,
            "sampling": {"strategy": "grid"},
            "sharding": {"shards": shards},
            "gpu": {"count": 0, "required": False},
            "payload": {"image": "registry.example.org/hpscan/dl1-payload:0.1.0"},
        }
    )
    return plan("search-bench", spec)


def train_grid(space: list[dict[str, Any]], settings: dict[str, Any]) -> dict[str, Any]:
    """Train every grid point for real, one after the other, and return the table as JSON-ready data."""
    import tensorflow as tf
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from dl1.data import load_dataset
    from dl1.train import ResidentData, device_name, parse_settings

    train_settings = parse_settings(settings)
    combinations = list(grid_plan(space).combinations())
    dataset = load_dataset(settings["data"], with_test=False)
    data = ResidentData(dataset.train, dataset.validation)
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    with Progress(
        TextColumn("training the grid"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True
    ) as progress:
        task = progress.add_task("grid", total=len(combinations))
        for combination in combinations:
            rows.append(_train_one(data, combination, train_settings))
            progress.advance(task)
    return {
        "key": table_key(space, settings),
        "space": space,
        "settings": settings,
        "epochs": settings["epochs"],
        "about": {
            "device": device_name(),
            "tensorflow": tf.__version__,
            "cpus": os.cpu_count(),
            "data": dataset.describe(),
            "train_seconds": round(time.perf_counter() - started, 1),
            "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        "rows": rows,
    }


def _train_one(data, combination, train_settings) -> dict[str, Any]:
    """One grid point trained alone: its val_loss and wall seconds per epoch (the first includes building it)."""
    from dl1.model import parse_combination
    from dl1.train import train_many

    curve: list[float] = []
    seconds: list[float] = []
    errors: list[str] = []
    last = time.perf_counter()

    def on_epoch(_key: str, _epoch: int, entry: dict[str, float]) -> None:
        nonlocal last
        now = time.perf_counter()
        curve.append(entry["val_loss"])
        seconds.append(now - last)
        last = now

    def on_done(outcome) -> None:
        if outcome.error:
            errors.append(outcome.error)

    config = parse_combination(combination.parameters, train_settings.model_defaults())
    train_many(data, [(combination.id, config)], train_settings, on_done, on_epoch=on_epoch)
    return {
        "id": combination.id,
        "parameters": combination.parameters,
        "val_loss": [v if math.isfinite(v) else None for v in curve],
        "epoch_seconds": seconds,
        "error": errors[0] if errors else None,
    }


def table_from_json(raw: dict[str, Any]) -> Table:
    rows = tuple(
        Row(
            id=r["id"],
            parameters=r["parameters"],
            val_loss=tuple(math.inf if v is None else float(v) for v in r["val_loss"]),
            epoch_seconds=tuple(float(s) for s in r["epoch_seconds"]),
        )
        for r in raw["rows"]
    )
    return Table(key=raw["key"], epochs=int(raw["epochs"]), rows=rows, about=raw.get("about", {}))


def load_or_train(
    space: list[dict[str, Any]], settings: dict[str, Any], cache: Path, say: Callable[[str], None] = print
) -> Table:
    """The table of this space and these settings: from the cache, or trained now (and cached, atomically)."""
    path = cache / f"search-{table_key(space, settings)}.json"
    if path.exists():
        say(f"table: {path} (cached; delete it to train again)")
        return table_from_json(json.loads(path.read_text()))
    say(f"table: training the {len(list(grid_plan(space).combinations()))}-point grid once, into {path}")
    raw = train_grid(space, settings)
    cache.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(raw))
    partial.replace(path)
    say(f"table: trained in {raw['about']['train_seconds']} s on {raw['about']['device']}, written to {path}")
    return table_from_json(raw)


# -- pure parts --------------------------------------------------------------------------------------------------


def epochs_to_reach(finished: Sequence[tuple[int, float]], target: float, budget: int) -> int:
    """Trial-epochs spent when the first finished trial came within ``target``; ``budget`` when none did.

    ``finished`` lists ``(trial-epochs spent so far, the trial's val_loss)`` in the order trials finished.
    """
    for spent, value in finished:
        if value <= target:
            return spent
    return budget


def summarize(values: Sequence[int]) -> tuple[float, int, int]:
    """Median, minimum and maximum of a strategy's per-seed figures."""
    return statistics.median(values), min(values), max(values)


# -- the strategies, through hpscan's own search ledger -----------------------------------------------------------


def scan_spec(space: list[dict[str, Any]], sampling: dict[str, Any], early_stopping: dict[str, Any], workers: int):
    """The HPScan spec a user would write for one strategy: ``workers`` shards that pull trials."""
    from hpscan.api.spec import HPScanSpec

    return HPScanSpec.model_validate(
        {
            "parameters": space,
            "sampling": sampling,
            "earlyStopping": early_stopping,
            "sharding": {"shards": workers, "pull": True},
            "gpu": {"count": 0, "required": False},
            "payload": {"image": "registry.example.org/hpscan/dl1-payload:0.1.0"},
        }
    )


@dataclass
class Run:
    """One strategy, one seed, replayed against the table."""

    finished: list[tuple[int, float]] = field(default_factory=list)
    epochs: int = 0
    trials: int = 0
    pruned: int = 0
    failed: int = 0
    repeats: int = 0
    retrained: int = 0  # trials of a point trained before (the ledger should tell repeats, not hand them out)
    explored: bool = False  # the ledger ended the scan before its samples: the sampler kept repeating itself


def replay(table: Table, spec) -> Run:
    """Run one scan's ``spec`` through hpscan's search ledger (``hpscan.core.search.Search``), curves from the table.

    Each shard is a worker that pulls trials (``sampling.trialsPerWorker`` held at once, as the engine tops them
    up) and trains them one after the other; an epoch takes that combination's recorded wall time, so workers
    finish epochs out of step and trials are in flight while others are suggested. After every epoch the worker
    reports its val_loss (``Search.progress``); a trial the pruner stops there is recorded ``pruned`` and costs the
    epochs it ran; a finished one is recorded with its best epoch's val_loss, as dl1 records it.
    """
    from hpscan.api.contract import ResultRecord
    from hpscan.api.trials import Progress
    from hpscan.core.planning import plan
    from hpscan.core.search import Search, top_up

    scan = plan("search-bench", spec)
    search = Search(scan)
    names = scan.parameter_names
    by_point = {tuple(r.parameters[n] for n in names): r for r in table.rows}
    per_worker = spec.sampling.trials_per_worker
    run = Run()
    held: dict[int, list] = {w: [] for w in range(scan.shard_count)}
    training: dict[int, tuple[Any, Row, int]] = {}
    clock: list[tuple[float, int]] = []
    trained: set[tuple[Any, ...]] = set()

    def record(worker: int, combination, status: str, value: float, epochs: int) -> None:
        search.record(
            ResultRecord(
                id=combination.id,
                shard=worker,
                parameters=combination.parameters,
                metrics={} if status == "failed" else {"val_loss": value},
                status=status,
                epochs=epochs,
                max_epochs=table.epochs,
            )
        )

    def next_trial(worker: int, now: float) -> None:
        for w, count in top_up({worker: len(search.open_trials(worker))}, per_worker).items():
            held[w] += search.hand_out(w, count)
        if not held[worker]:
            return
        combination = held[worker].pop(0)
        point = tuple(combination.parameters[n] for n in names)
        if point not in by_point:
            raise ValueError(f"trial {combination.id} {combination.parameters} is not a point of the table")
        run.retrained += point in trained
        trained.add(point)
        row = by_point[point]
        training[worker] = (combination, row, 0)
        heapq.heappush(clock, (now + row.epoch_seconds[0], worker))

    for worker in range(scan.shard_count):
        next_trial(worker, 0.0)
    while clock:
        now, worker = heapq.heappop(clock)
        combination, row, done = training.pop(worker)
        done += 1
        run.epochs += 1
        loss = row.val_loss[done - 1]
        if not math.isfinite(loss):
            record(worker, combination, "failed", loss, done)
            run.failed += 1
        else:
            stops = search.progress([Progress(id=combination.id, epoch=done, metrics={"val_loss": loss})])
            if (worker, combination.id) in stops:
                record(worker, combination, "pruned", loss, done)
                run.pruned += 1
            elif done == len(row.val_loss):
                value = min(row.val_loss)
                record(worker, combination, "succeeded", value, done)
                run.finished.append((run.epochs, value))
            else:
                training[worker] = (combination, row, done)
                heapq.heappush(clock, (now + row.epoch_seconds[done], worker))
                continue
        next_trial(worker, now)
    run.trials = search.handed_out
    run.explored = search.explored
    run.repeats = len(search.study.trials) - search.handed_out if spec.sampling.adaptive else 0
    return run


@dataclass(frozen=True)
class Strategy:
    name: str
    sampling: dict[str, Any]
    early_stopping: dict[str, Any]

    def spec(self, space: list[dict[str, Any]], seed: int, workers: int):
        return scan_spec(space, {**self.sampling, "seed": seed}, self.early_stopping, workers)


def run_all(
    table: Table, space: list[dict[str, Any]], strategies: Sequence[Strategy], seeds: Sequence[int], workers: int
) -> dict[str, list[Run]]:
    """Every strategy with every seed (Optuna's experimental-feature warnings silenced)."""
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return {s.name: [replay(table, s.spec(space, seed, workers)) for seed in seeds] for s in strategies}


def fraction(epochs: float, table: Table) -> float:
    return epochs / table.grid_epochs


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20, help="seeds per strategy (0..N-1), the same for each")
    parser.add_argument("--samples", type=int, default=100, help="sampling.samples: trials of random and TPE")
    parser.add_argument("--workers", type=int, default=4, help="trials in flight at once")
    parser.add_argument("--min-epochs", type=int, default=1, help="earlyStopping.minEpochs of TPE + ASHA")
    parser.add_argument("--reduction-factor", type=int, default=3, help="earlyStopping.reductionFactor")
    parser.add_argument(
        "--asha-samples", type=int, help="sampling.samples of TPE + ASHA (default: --samples; its trials are cheaper)"
    )
    parser.add_argument("--cache", type=Path, default=CACHE, help="folder of the trained tables")
    args = parser.parse_args(argv)

    from rich.console import Console
    from rich.table import Table as RichTable

    from hpscan.core.search import RANDOM_POINT_TRIES

    console = Console()
    if not console.is_terminal:
        console.width = 132  # a log or a pipe: wide enough for the table's columns
    table = load_or_train(SPACE, SETTINGS, args.cache, console.print)
    asha_samples = args.asha_samples or args.samples
    target = table.best * (1 + WITHIN)
    reaching = sum(r.value <= target for r in table.rows)
    console.print(
        f"grid: {len(table.rows)} combinations x {table.epochs} epochs = {table.grid_epochs} trial-epochs; "
        f"best val_loss {table.best:.4f}, target <= {target:.4f} ({reaching} combinations reach it); "
        f"trained on {table.about.get('device', '?')} in {table.about.get('train_seconds', '?')} s, "
        f"{table.about.get('data', '')}"
    )
    console.print(
        f"replayed through hpscan.core.search: seeds 0-{args.seeds - 1}, {args.workers} workers that pull, "
        f"samples {args.samples} (TPE + ASHA {asha_samples}), ASHA minEpochs {args.min_epochs} "
        f"reductionFactor {args.reduction_factor}"
    )
    strategies = [
        Strategy("grid", {"strategy": "grid"}, {"strategy": "none"}),
        Strategy("random", {"strategy": "random", "samples": args.samples}, {"strategy": "none"}),
        Strategy("TPE", {"strategy": "tpe", "samples": args.samples}, {"strategy": "none"}),
        Strategy(
            "TPE + ASHA",
            {"strategy": "tpe", "samples": asha_samples},
            {"strategy": "asha", "minEpochs": args.min_epochs, "reductionFactor": args.reduction_factor},
        ),
    ]
    started = time.perf_counter()
    runs = run_all(table, SPACE, strategies, range(args.seeds), args.workers)

    out = RichTable(title=f"trial-epochs to within {WITHIN:.0%} of the grid's best val_loss, over {args.seeds} seeds")
    for column in ("strategy", "samples", "budget", "reached", "to target: median [range]", "/ grid", "used", "trials"):
        out.add_column(column, justify="left" if column == "strategy" else "right")
    out.add_column("pruned", justify="right")
    out.add_column("repeats", justify="right")
    out.add_column("ended early", justify="right")
    medians: dict[str, float] = {}
    for strategy in strategies:
        seed_runs = runs[strategy.name]
        trials = strategy.sampling.get("samples", len(table.rows))
        budget = trials * table.epochs  # the most a run may spend: what a run that never gets there costs
        to_target = [epochs_to_reach(r.finished, target, budget) for r in seed_runs]
        median, low, high = summarize(to_target)
        medians[strategy.name] = median
        out.add_row(
            strategy.name,
            str(trials),
            str(budget),
            f"{sum(any(v <= target for _, v in r.finished) for r in seed_runs)}/{len(seed_runs)}",
            f"{median:g} [{low}-{high}]",
            f"{fraction(median, table):.3f}",
            f"{statistics.median(r.epochs for r in seed_runs):g}",
            f"{statistics.median(r.trials for r in seed_runs):g}",
            f"{statistics.median(r.pruned for r in seed_runs):g}",
            f"{statistics.median(r.repeats for r in seed_runs):g}",
            f"{sum(r.explored for r in seed_runs)}/{len(seed_runs)}",
        )
    console.print(out)
    console.print(
        "samples: sampling.samples; budget: samples x epochs (trial-epochs); reached: seeds that got within 1%; "
        "to target: trial-epochs spent when the first trial within 1% finished (the budget if none did); "
        "/ grid: that median over the full grid's trial-epochs; used, trials, pruned: trial-epochs spent, trials "
        "handed out, trials stopped by ASHA; repeats: suggestions of a point already held, told its result instead "
        "of training it (medians over seeds); ended early: runs the ledger ended before their samples, "
        f"{RANDOM_POINT_TRIES} random draws having found no point it did not hold. Points trained twice: {sum(r.retrained for v in runs.values() for r in v)}. "
        f"Replay took {time.perf_counter() - started:.1f} s. Target: TPE + ASHA <= 0.25."
    )
    print(f"fraction_of_grid_epochs={fraction(medians['TPE + ASHA'], table):.3f}")


if __name__ == "__main__":
    sys.exit(main())
