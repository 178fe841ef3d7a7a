"""Benchmark: trial-epochs that grid, random, TPE and TPE + ASHA need to come within 1% of the grid's best val_loss.

A *tabular* benchmark, as HPOBench and NAS-Bench do it: the whole grid of a fixed 200-point dl1 space is trained
once, for real (``dl1.train.train_many``, TensorFlow, synthetic jets, patience 0 so every curve runs to the last
epoch), and each combination's per-epoch val_loss curve and epoch wall times are kept in a table. Every strategy
then runs against that table: Optuna suggests trials through ask/tell, each trial "trains" by replaying its
combination's real curve epoch by epoch (``trial.report(val_loss, epoch)``, then ``trial.should_prune()``; a pruned
trial stops there and costs only the epochs it ran), and several simulated workers train at once on a clock made of
the table's real epoch times, so trials are in flight while others are suggested, as in a real scan. Why a table:
the machine has 2 shared CPU cores, where one grid takes minutes but 4 strategies x several seeds of live training
would take hours; replaying real curves gives every strategy exactly the losses it would have seen.

The figure: trial-epochs until a finished trial's val_loss (its best epoch, as the payload records it) is within 1%
of the best in the grid, median and range over seeds; a run that never gets there costs its whole budget. Grid
(Optuna's GridSampler, a seeded order) runs all 200 combinations; the others stop at ``--samples`` trials.

    .venv/bin/python bench/search.py                      # trains the grid once (minutes), then seconds
    .venv/bin/python bench/search.py --seeds 10 --samples 100 --min-epochs 1 --reduction-factor 3
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
    "data": {"synthetic": {"jets": 12000, "seed": 1}},
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


def nearest(value: Any, choices: Sequence[Any]) -> Any:
    """The grid value a suggestion stands for: itself, or the nearest number (in log distance when positive)."""
    if value in choices:
        return value
    numbers = [c for c in choices if isinstance(c, int | float) and not isinstance(c, bool)]
    if not numbers or not isinstance(value, int | float):
        raise ValueError(f"suggested value {value!r} is not one of {list(choices)}")
    if value > 0 and all(c > 0 for c in numbers):
        return min(numbers, key=lambda c: abs(math.log(c) - math.log(value)))
    return min(numbers, key=lambda c: abs(c - value))


def axes_of(table: Table) -> dict[str, list[Any]]:
    """Each parameter's grid values, in the order the table first meets them."""
    axes: dict[str, list[Any]] = {}
    for row in table.rows:
        for name, value in row.parameters.items():
            if value not in axes.setdefault(name, []):
                axes[name].append(value)
    return axes


def summarize(values: Sequence[int]) -> tuple[float, int, int]:
    """Median, minimum and maximum of a strategy's per-seed figures."""
    return statistics.median(values), min(values), max(values)


# -- the strategies, through Optuna ------------------------------------------------------------------------------
# Until hpscan.core.search lands, the sampler and the pruner are built here, as the spec fields would build them.


def make_sampler(strategy: str, seed: int, grid: dict[str, list[Any]]):
    """Stand-in for ``hpscan.core.search.make_sampler``: the Optuna sampler of ``sampling.strategy``."""
    import optuna

    if strategy == "grid":

        class AskTellGridSampler(optuna.samplers.GridSampler):
            # GridSampler calls study.stop() after the last grid point, which raises outside study.optimize()
            # (optuna/optuna#5141, documented in #5153); the scan's budget ends it here, so nothing is lost.
            def after_trial(self, study, trial, state, values) -> None:
                pass

        return AskTellGridSampler(grid, seed=seed)
    if strategy == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if strategy == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True, multivariate=True)
    raise ValueError(f"unknown sampling strategy {strategy!r}")


def make_pruner(strategy: str, min_epochs: int, reduction_factor: int):
    """Stand-in for ``hpscan.core.search.make_pruner``: the Optuna pruner of ``earlyStopping``."""
    import optuna

    if strategy == "none":
        return optuna.pruners.NopPruner()
    if strategy == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=min_epochs, reduction_factor=reduction_factor)
    raise ValueError(f"unknown early stopping strategy {strategy!r}")


def search_space(grid: dict[str, list[Any]], ordered: bool = False) -> dict[str, Any]:
    """Stand-in for ``hpscan.core.search.search_space``: the Optuna distribution of each grid axis.

    Categorical by default. With ``ordered``, a numeric axis becomes a range over its values (log when all are
    positive), so TPE can use their order; ``replay`` maps each suggestion to the nearest grid value.
    """
    import optuna

    space: dict[str, Any] = {}
    for name, values in grid.items():
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        if not ordered or not numeric or len(values) < 3:
            space[name] = optuna.distributions.CategoricalDistribution(values)
        elif all(isinstance(v, int) for v in values):
            space[name] = optuna.distributions.IntDistribution(min(values), max(values), log=min(values) > 0)
        else:
            space[name] = optuna.distributions.FloatDistribution(min(values), max(values), log=min(values) > 0)
    return space


@dataclass
class Run:
    """One strategy, one seed, replayed against the table."""

    finished: list[tuple[int, float]] = field(default_factory=list)
    epochs: int = 0
    trials: int = 0
    pruned: int = 0
    failed: int = 0
    repeats: int = 0


def replay(table: Table, sampler, pruner, space: dict[str, Any], samples: int, workers: int) -> Run:
    """Run ``samples`` trials through Optuna's ask/tell on ``workers`` simulated workers, curves from the table.

    Each worker trains one trial at a time; an epoch takes that combination's recorded wall time, so workers
    finish epochs out of step and trials are in flight while others are suggested. At each epoch the trial
    reports its val_loss and asks whether to stop; a finished trial is told its best epoch's val_loss.
    """
    import optuna

    grid = axes_of(table)
    by_point = {tuple(r.parameters[n] for n in grid): r for r in table.rows}
    study = optuna.create_study(direction="minimize", sampler=sampler, pruner=pruner)
    run = Run()
    seen: set[tuple[Any, ...]] = set()
    running: dict[int, tuple[Any, Row, int]] = {}
    clock: list[tuple[float, int]] = []

    def start(worker: int, now: float) -> None:
        if run.trials >= samples:
            return
        trial = study.ask(space)
        point = tuple(nearest(trial.params[n], grid[n]) for n in grid)
        run.trials += 1
        run.repeats += point in seen
        seen.add(point)
        row = by_point[point]
        running[worker] = (trial, row, 0)
        heapq.heappush(clock, (now + row.epoch_seconds[0], worker))

    for worker in range(workers):
        start(worker, 0.0)
    while clock:
        now, worker = heapq.heappop(clock)
        trial, row, done = running.pop(worker)
        done += 1
        run.epochs += 1
        loss = row.val_loss[done - 1]
        if not math.isfinite(loss):
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            run.failed += 1
        elif done == len(row.val_loss):
            trial.report(loss, done)
            value = min(row.val_loss)
            study.tell(trial, value)
            run.finished.append((run.epochs, value))
        else:
            trial.report(loss, done)
            if trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                run.pruned += 1
            else:
                running[worker] = (trial, row, done)
                heapq.heappush(clock, (now + row.epoch_seconds[done], worker))
                continue
        start(worker, now)
    return run


@dataclass(frozen=True)
class Strategy:
    name: str
    sampling: str
    early_stopping: str
    samples: int


def run_all(
    table: Table,
    strategies: Sequence[Strategy],
    seeds: Sequence[int],
    workers: int,
    min_epochs: int,
    reduction_factor: int,
    ordered: bool = False,
) -> dict[str, list[Run]]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    axes = axes_of(table)
    space = search_space(axes, ordered)
    runs: dict[str, list[Run]] = {}
    for strategy in strategies:
        runs[strategy.name] = [
            replay(
                table,
                make_sampler(strategy.sampling, seed, axes),
                make_pruner(strategy.early_stopping, min_epochs, reduction_factor),
                space,
                strategy.samples,
                workers,
            )
            for seed in seeds
        ]
    return runs


def fraction(epochs: float, table: Table) -> float:
    return epochs / table.grid_epochs


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds per strategy (0..N-1), the same for each")
    parser.add_argument("--samples", type=int, default=100, help="sampling.samples: trials of random and TPE")
    parser.add_argument("--workers", type=int, default=4, help="trials in flight at once")
    parser.add_argument("--min-epochs", type=int, default=1, help="earlyStopping.minEpochs of TPE + ASHA")
    parser.add_argument("--reduction-factor", type=int, default=3, help="earlyStopping.reductionFactor")
    parser.add_argument(
        "--space",
        choices=["categorical", "ordered"],
        default="categorical",
        help="Optuna distributions of the numeric axes (until hpscan.core.search decides)",
    )
    parser.add_argument("--cache", type=Path, default=CACHE, help="folder of the trained tables")
    args = parser.parse_args(argv)

    from rich.console import Console
    from rich.table import Table as RichTable

    console = Console()
    if not console.is_terminal:
        console.width = 120  # a log or a pipe: wide enough for the table's columns
    table = load_or_train(SPACE, SETTINGS, args.cache, console.print)
    target = table.best * (1 + WITHIN)
    reaching = sum(r.value <= target for r in table.rows)
    console.print(
        f"grid: {len(table.rows)} combinations x {table.epochs} epochs = {table.grid_epochs} trial-epochs; "
        f"best val_loss {table.best:.4f}, target <= {target:.4f} ({reaching} combinations reach it); "
        f"trained on {table.about.get('device', '?')} in {table.about.get('train_seconds', '?')} s, "
        f"{table.about.get('data', '')}"
    )
    console.print(
        f"replayed: seeds 0-{args.seeds - 1}, {args.workers} workers, samples {args.samples}, {args.space} space, "
        f"ASHA minEpochs {args.min_epochs} reductionFactor {args.reduction_factor}"
    )
    strategies = [
        Strategy("grid", "grid", "none", len(table.rows)),
        Strategy("random", "random", "none", args.samples),
        Strategy("TPE", "tpe", "none", args.samples),
        Strategy("TPE + ASHA", "tpe", "asha", args.samples),
    ]
    started = time.perf_counter()
    runs = run_all(
        table,
        strategies,
        range(args.seeds),
        args.workers,
        args.min_epochs,
        args.reduction_factor,
        args.space == "ordered",
    )

    out = RichTable(title=f"trial-epochs to within {WITHIN:.0%} of the grid's best val_loss, over {args.seeds} seeds")
    for column in ("strategy", "trials", "budget", "reached", "to target: median [range]", "/ grid", "used", "pruned"):
        out.add_column(column, justify="left" if column == "strategy" else "right")
    out.add_column("repeats", justify="right")
    medians: dict[str, float] = {}
    for strategy in strategies:
        seed_runs = runs[strategy.name]
        budget = strategy.samples * table.epochs  # the most a run may spend: what a run that never gets there costs
        to_target = [epochs_to_reach(r.finished, target, budget) for r in seed_runs]
        median, low, high = summarize(to_target)
        medians[strategy.name] = median
        out.add_row(
            strategy.name,
            str(strategy.samples),
            str(budget),
            f"{sum(any(v <= target for _, v in r.finished) for r in seed_runs)}/{len(seed_runs)}",
            f"{median:g} [{low}-{high}]",
            f"{fraction(median, table):.3f}",
            f"{statistics.median(r.epochs for r in seed_runs):g}",
            f"{statistics.median(r.pruned for r in seed_runs):g}",
            f"{statistics.median(r.repeats for r in seed_runs):g}",
        )
    console.print(out)
    console.print(
        "trials: sampling.samples; budget: trials x epochs (trial-epochs); reached: seeds that got within 1%; "
        "to target: trial-epochs spent when the first trial within 1% finished (the budget if none did); "
        "/ grid: the median over the full grid's trial-epochs; used: trial-epochs spent (median); pruned, "
        f"repeats: trials stopped by ASHA, suggestions of a point already suggested (median). "
        f"Replay took {time.perf_counter() - started:.1f} s. Target: TPE + ASHA <= 0.25."
    )
    print(f"fraction_of_grid_epochs={fraction(medians['TPE + ASHA'], table):.3f}")


if __name__ == "__main__":
    sys.exit(main())
