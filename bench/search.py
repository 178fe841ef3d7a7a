"""Benchmark: trial-epochs that grid, random, QMC, TPE, CMA-ES and TPE + ASHA need to come within 1% of the best
val_loss known on a surrogate of real dl1 trainings over the paper's six dimensions; and a two-objective row.

The space (``search_design.SPACE``) is the paper's: three layer widths, the learning rate (a continuous log range),
the batch size and the activation; 3,888 combinations of the discrete axes, continuous in the learning rate. The
curves come from a surrogate (``search_surrogate``: a random forest of the per-epoch val_loss curve, fitted to a
scrambled-Sobol design of real dl1 trainings committed in ``bench/data/dl1-design.json``), as YAHPO Gym and
HPOBench's surrogate benchmarks do: a tabular benchmark of this space would need thousands of trainings (the 200-point
grid this file replayed before had 15 points within 1% of its best, so no strategy could be told from another).
Every strategy runs as the HPScan a user would write (``sampling``, ``earlyStopping``, shards that pull), through
hpscan's own search ledger (``hpscan.core.search.Search``: Optuna's sampler and pruner, ask/tell, repeats told
instead of retrained): each trial "trains" by reading its point's surrogate curve epoch by epoch (reported as the
payload reports it, then the pruner decides; a pruned trial costs only the epochs it ran), on simulated workers
whose clock is the surrogate's epoch time, so trials are in flight while others are suggested, as in a real scan.

The figure: trial-epochs spent until a finished trial's val_loss (its best epoch, as dl1 records it) is within 1%
of the best known (the surrogate's minimum over its whole table), median and range over seeds; a run that never
gets there counts as its whole budget (samples x epochs). The multi-objective row: a scan with ``objectives:
[val_loss, n_parameters]`` (both minimised: a better tagger, a cheaper network), the hypervolume of the finished
trials' Pareto front after a fixed number of trials, in (val_loss, log10 n_parameters) up to ``HV_REFERENCE``.
Optuna's GP sampler (``GPSampler``) is not among the strategies: it needs PyTorch, which hpscan does not install,
and hpscan's ``sampling.strategy`` does not offer it.

    .venv/bin/python bench/search.py                   # fits the surrogate once (a minute), then minutes
    .venv/bin/python bench/search.py --sweep           # also ASHA's minEpochs x reductionFactor sweep
    # last line: fraction_of_grid_epochs=<median epochs-to-target of TPE + ASHA / that of random>
    # target: <= 0.5, TPE + ASHA reaching in >= 19 of 20 seeds

The fitted surrogate's table is cached in ~/.cache/hpscan-bench/ (``--cache``) under a hash of the design file.

On the 194 committed trainings (2026-12-06, ``--processes 2 --sweep``, 2 shared cores, 7 minutes of replay): 2.6%
of the space is within 1% of the best known; median trial-epochs to the target over random's: QMC 0.30, TPE 0.48,
CMA-ES 0.42, TPE + ASHA (minEpochs 1, reductionFactor 3: hpscan's defaults) 0.32 with 19/20 seeds reaching it,
random 20/20; grid (972 points, plan order) 0.32 once. Two objectives after 60 trials: hypervolume TPE 0.421
against random 0.399 (medians). The ASHA sweep keeps hpscan's defaults: they reach 19/20; minEpochs 1 with
reductionFactor 4 (20/20, 0.22) and minEpochs 2 with 3 (20/20, 0.27) did better here but their neighbours did not
(minEpochs 2 with reductionFactor 4: 9/20), over 12-epoch curves where real scans run 30 to 50 epochs.
"""

from __future__ import annotations

import argparse
import heapq
import math
import statistics
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from grid_table import CACHE, Row
from search_design import COMMITTED, SPACE, n_parameters

WITHIN = 0.01
"""Reached: a finished trial's val_loss within this fraction of the best known."""

GRID_SPACE: list[dict[str, Any]] = [
    {"name": "layer1", "values": [16, 64, 256]},
    {"name": "layer2", "values": [16, 64, 256]},
    {"name": "layer3", "values": [16, 64, 256]},
    {"name": "learning_rate", "range": {"min": 1.0e-4, "max": 2.0e-2, "count": 4, "scale": "log"}},
    {"name": "batch_size", "values": [64, 256, 1024]},
    {"name": "activation", "values": ["relu", "elu", "tanh"]},
]
"""The grid a user would write over the space: 3 x 3 x 3 x 4 x 3 x 3 = 972 points."""

OBJECTIVES = [{"metric": "val_loss", "goal": "minimize"}, {"metric": "n_parameters", "goal": "minimize"}]
SAMPLES = 200
"""sampling.samples of every strategy but grid (the budget: 200 x 12 trial-epochs). 2.6% of the space is within
1% of the best known: a random run misses it in 200 trials once in about 200 (0.974^200)."""
MO_SAMPLES = 60
"""Trials of the two-objective row."""
HV_REFERENCE = (0.8, math.log10(150_000))
"""Hypervolume's reference point in (val_loss, log10 n_parameters): a network worse than chance-ish 0.8 or
larger than the space's largest (143,235 parameters) adds nothing."""


class CurveSource(Protocol):
    """Where a replayed trial's curve comes from: a point's ``Row`` (val_loss and seconds per epoch)."""

    epochs: int

    def row(self, parameters: dict[str, Any]) -> Row: ...


@dataclass
class SurrogateSource:
    """``search_surrogate.Tabulated`` as a ``CurveSource``; each row carries the network's parameter count."""

    tabulated: Any

    @property
    def epochs(self) -> int:
        return int(self.tabulated.epochs)

    def row(self, parameters: dict[str, Any]) -> Row:
        curve, seconds = self.tabulated.at(parameters)
        return Row("", parameters, curve, (seconds,) * len(curve), {"n_parameters": float(n_parameters(parameters))})


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


def scan_spec(
    space: list[dict[str, Any]],
    sampling: dict[str, Any],
    early_stopping: dict[str, Any],
    workers: int,
    objectives: list[dict[str, str]] | None = None,
):
    """The HPScan spec a user would write for one strategy: ``workers`` shards that pull trials."""
    from hpscan.api.spec import HPScanSpec

    return HPScanSpec.model_validate(
        {
            **({"objectives": objectives} if objectives else {}),
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
    values: list[dict[str, float]] = field(default_factory=list)  # each finished trial's record metrics


def trial_record(worker: int, combination, status: str, metrics: dict[str, float], epochs: int, max_epochs: int):
    """The record a worker writes for a trial (a failed one carries no metrics)."""
    from hpscan.api.contract import ResultRecord

    return ResultRecord(
        id=combination.id,
        shard=worker,
        parameters=combination.parameters,
        metrics={} if status == "failed" else metrics,
        status=status,
        epochs=epochs,
        max_epochs=max_epochs,
    )


def replay(source: CurveSource, spec, stop_at: float | None = None) -> Run:
    """Run one scan's ``spec`` through hpscan's search ledger (``hpscan.core.search.Search``), curves from ``source``.

    Each shard is a worker that pulls trials (``sampling.trialsPerWorker`` held at once, as the engine tops them
    up) and trains them one after the other; an epoch takes that combination's recorded wall time, so workers
    finish epochs out of step and trials are in flight while others are suggested. After every epoch the worker
    reports its val_loss (``Search.progress``); a trial the pruner stops there is recorded ``pruned`` and costs the
    epochs it ran; a finished one is recorded with its best epoch's val_loss, as dl1 records it. With ``stop_at``
    the run ends once a finished trial's val_loss is at or below it (what the ASHA sweep needs, for less time).
    """
    from hpscan.api.trials import Progress
    from hpscan.core.planning import plan
    from hpscan.core.search import Search, top_up

    scan = plan("search-bench", spec)
    search = Search(scan)
    names = scan.parameter_names
    per_worker = spec.sampling.trials_per_worker
    run = Run()
    held: dict[int, list] = {w: [] for w in range(scan.shard_count)}
    training: dict[int, tuple[Any, Row, int]] = {}
    clock: list[tuple[float, int]] = []
    trained: set[tuple[Any, ...]] = set()

    def record(worker: int, combination, status: str, value: float, epochs: int, row_metrics=None) -> None:
        metrics = {**(row_metrics or {}), "val_loss": value}
        search.record(trial_record(worker, combination, status, metrics, epochs, source.epochs))

    def next_trial(worker: int, now: float) -> None:
        for w, count in top_up({worker: len(search.open_trials(worker))}, per_worker).items():
            held[w] += search.hand_out(w, count)
        if not held[worker]:
            return
        combination = held[worker].pop(0)
        point = tuple(combination.parameters[n] for n in names)
        run.retrained += point in trained
        trained.add(point)
        row = source.row(combination.parameters)
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
            last = done == len(row.val_loss)  # dl1 ends its last epoch anyway: a stop there comes too late
            if (worker, combination.id) in stops and not last:
                record(worker, combination, "pruned", loss, done)
                run.pruned += 1
            elif last:
                value = min(row.val_loss)
                record(worker, combination, "succeeded", value, done, row.metrics)
                run.finished.append((run.epochs, value))
                run.values.append({**row.metrics, "val_loss": value})
                if stop_at is not None and value <= stop_at:
                    break
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
    early_stopping: dict[str, Any] = field(default_factory=lambda: {"strategy": "none"})
    space: list[dict[str, Any]] = field(default_factory=lambda: SPACE)
    objectives: list[dict[str, str]] | None = None

    @property
    def seeded(self) -> bool:
        """Whether the seed changes the run (a grid's plan order does not depend on it)."""
        return self.sampling["strategy"] != "grid"

    def spec(self, seed: int, workers: int):
        sampling = {**self.sampling, "seed": seed}
        return scan_spec(self.space, sampling, self.early_stopping, workers, self.objectives)


_forked_source: list[CurveSource] = []
"""The source of ``run_all``'s forked processes (inherited at the fork, not pickled: its table is 30 MB)."""


def _replay_one(job: tuple[Strategy, int, int, float | None]) -> Run:
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    strategy, seed, workers, stop_at = job
    return replay(_forked_source[0], strategy.spec(seed, workers), stop_at)


def run_all(
    source: CurveSource,
    strategies: Sequence[Strategy],
    seeds: Sequence[int],
    workers: int,
    processes: int = 1,
    stop_at: float | None = None,
) -> dict[str, list[Run]]:
    """Every strategy with every seed (grid, which has no seed, once), in ``processes`` forked processes."""
    import multiprocessing

    jobs = [(s, seed, workers, stop_at) for s in strategies for seed in (seeds if s.seeded else seeds[:1])]
    _forked_source[:] = [source]
    if processes > 1:
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            runs = pool.map(_replay_one, jobs, chunksize=1)
    else:
        runs = [_replay_one(job) for job in jobs]
    out: dict[str, list[Run]] = {s.name: [] for s in strategies}
    for (strategy, *_), run in zip(jobs, runs, strict=True):
        out[strategy.name].append(run)
    return out


def hypervolume_2d(points: Sequence[tuple[float, float]], reference: tuple[float, float]) -> float:
    """Area dominated by ``points`` (both coordinates minimised) and bounded by ``reference``: a staircase from the
    lowest x, each step as low as the best y so far."""
    inside = sorted((x, y) for x, y in points if x < reference[0] and y < reference[1])
    area, best_y = 0.0, reference[1]
    for (x, y), next_x in zip(inside, [p[0] for p in inside[1:]] + [reference[0]], strict=False):
        best_y = min(best_y, y)
        area += (next_x - x) * (reference[1] - best_y)
    return area


def front_hypervolume(run: Run) -> float:
    """Hypervolume of a multi-objective run's finished trials in (val_loss, log10 n_parameters)."""
    points = [(v["val_loss"], math.log10(v["n_parameters"])) for v in run.values]
    return hypervolume_2d(points, HV_REFERENCE)


def single_objective_strategies(samples: int, asha: dict[str, Any]) -> list[Strategy]:
    """The strategies compared, as the HPScan fields a user would write."""
    return [
        Strategy("grid", {"strategy": "grid"}, space=GRID_SPACE),
        Strategy("random", {"strategy": "random", "samples": samples}),
        Strategy("QMC (Sobol)", {"strategy": "qmc", "samples": samples}),
        Strategy("TPE", {"strategy": "tpe", "samples": samples}),
        Strategy("CMA-ES", {"strategy": "cmaes", "samples": samples}),
        Strategy("TPE + ASHA", {"strategy": "tpe", "samples": samples}, {"strategy": "asha", **asha}),
    ]


@dataclass(frozen=True)
class Outcome:
    """One strategy's figures over its seeds."""

    name: str
    trials: int
    budget: int
    to_target: list[int]
    reached: int
    runs: list[Run]

    @property
    def median(self) -> float:
        return statistics.median(self.to_target)


def outcome(name: str, runs: list[Run], trials: int, epochs: int, target: float) -> Outcome:
    budget = trials * epochs  # the most a run may spend: what a run that never gets there costs
    to_target = [epochs_to_reach(r.finished, target, budget) for r in runs]
    reached = sum(any(v <= target for _, v in r.finished) for r in runs)
    return Outcome(name, trials, budget, to_target, reached, runs)


def trials_of(strategy: Strategy) -> int:
    if "samples" in strategy.sampling:
        return int(strategy.sampling["samples"])
    return math.prod(len(p["values"]) if "values" in p else p["range"]["count"] for p in strategy.space)


def reach_table(outcomes: Sequence[Outcome], random_median: float, title: str):
    from rich.table import Table as RichTable

    out = RichTable(title=title)
    columns = ("strategy", "samples", "budget", "reached", "to target: median [range]", "/ random", "used", "trials")
    for column in (*columns, "pruned", "repeats", "ended early"):
        out.add_column(column, justify="left" if column == "strategy" else "right")
    for o in outcomes:
        out.add_row(
            o.name,
            str(o.trials),
            str(o.budget),
            f"{o.reached}/{len(o.runs)}",
            f"{o.median:g} [{min(o.to_target)}-{max(o.to_target)}]",
            f"{o.median / random_median:.3f}",
            f"{statistics.median(r.epochs for r in o.runs):g}",
            f"{statistics.median(r.trials for r in o.runs):g}",
            f"{statistics.median(r.pruned for r in o.runs):g}",
            f"{statistics.median(r.repeats for r in o.runs):g}",
            f"{sum(r.explored for r in o.runs)}/{len(o.runs)}",
        )
    return out


SWEEP = [(min_epochs, factor) for min_epochs in (1, 2, 4) for factor in (2, 3, 4)]
"""ASHA's (minEpochs, reductionFactor) pairs the sweep tries."""


def asha_sweep(source: CurveSource, args, target: float, random_median: float, console) -> None:
    """TPE + ASHA for every pair of ``SWEEP``, the same seeds, each run ended at the target: the defaults' evidence
    (its used/trials/pruned columns count up to the target, not a whole run)."""
    strategies = [
        Strategy(
            f"ASHA {m}/{f}",
            {"strategy": "tpe", "samples": args.samples},
            {"strategy": "asha", "minEpochs": m, "reductionFactor": f},
        )
        for m, f in SWEEP
    ]
    runs = run_all(source, strategies, range(args.seeds), args.workers, args.processes, stop_at=target)
    outcomes = [outcome(s.name, runs[s.name], args.samples, source.epochs, target) for s in strategies]
    title = f"ASHA sweep: TPE + ASHA minEpochs/reductionFactor, {args.seeds} seeds, each run ended at the target"
    console.print(reach_table(outcomes, random_median, title))


def multi_objective(source: CurveSource, args, console) -> None:
    """TPE vs random on two objectives: the hypervolume after ``--mo-samples`` trials."""
    from rich.table import Table as RichTable

    out = RichTable(title=f"objectives val_loss and n_parameters: hypervolume after {args.mo_samples} trials")
    for column in ("strategy", "hypervolume: median [range]", "Pareto trials (median)"):
        out.add_column(column, justify="left" if column == "strategy" else "right")
    strategies = [
        Strategy(name, {"strategy": name, "samples": args.mo_samples}, objectives=OBJECTIVES)
        for name in ("random", "tpe")
    ]
    runs = run_all(source, strategies, range(args.seeds), args.workers, args.processes)
    for strategy in strategies:
        volumes = [front_hypervolume(r) for r in runs[strategy.name]]
        fronts = [
            len(pareto_front([(v["val_loss"], v["n_parameters"]) for v in r.values])) for r in runs[strategy.name]
        ]
        out.add_row(
            strategy.name,
            f"{statistics.median(volumes):.4f} [{min(volumes):.4f}-{max(volumes):.4f}]",
            f"{statistics.median(fronts):g}",
        )
    console.print(out)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats in both coordinates (both minimised)."""
    return [p for p in points if not any(q[0] <= p[0] and q[1] <= p[1] and q != p for q in points)]


def main(argv: Sequence[str] | None = None) -> None:
    from hpscan.api.spec import EarlyStopping

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20, help="seeds per strategy (0..N-1), the same for each")
    parser.add_argument("--samples", type=int, default=SAMPLES, help="sampling.samples of every strategy but grid")
    parser.add_argument("--workers", type=int, default=4, help="trials in flight at once")
    defaults = EarlyStopping()
    parser.add_argument("--min-epochs", type=int, default=defaults.min_epochs, help="earlyStopping.minEpochs")
    parser.add_argument("--reduction-factor", type=int, default=defaults.reduction_factor, help="its reductionFactor")
    parser.add_argument("--mo-samples", type=int, default=MO_SAMPLES, help="trials of the two-objective row")
    parser.add_argument("--processes", type=int, default=1, help="runs replayed side by side (forked processes)")
    parser.add_argument("--sweep", action="store_true", help="also sweep ASHA's minEpochs and reductionFactor")
    parser.add_argument("--design", type=Path, default=COMMITTED, help="the real trainings the surrogate is fitted to")
    parser.add_argument("--cache", type=Path, default=CACHE, help="folder of the fitted surrogate's table")
    args = parser.parse_args(argv)

    from rich.console import Console
    from search_surrogate import load_or_tabulate

    console = Console()
    if not console.is_terminal:
        console.width = 140  # a log or a pipe: wide enough for the table's columns
    tabulated, error = load_or_tabulate(args.design, args.cache, console.print)
    source = SurrogateSource(tabulated)
    best = tabulated.best_known()
    target = best * (1 + WITHIN)
    console.print(
        f"surrogate: random forest of {int(error['rows'])} real dl1 trainings ({args.design.name}); held-out "
        f"(5-fold) error of the best-epoch val_loss: median {error['median_relative']:.2%}, mean "
        f"{error['mean_relative']:.2%}, Spearman {error['spearman']:.3f}; best known val_loss {best:.4f}, target "
        f"<= {target:.4f}, reached by {tabulated.share_within(target):.3%} of the space"
    )
    console.print(
        f"replayed through hpscan.core.search: seeds 0-{args.seeds - 1}, {args.workers} workers that pull, "
        f"samples {args.samples}, ASHA minEpochs {args.min_epochs} reductionFactor {args.reduction_factor}"
    )
    started = time.perf_counter()
    asha = {"minEpochs": args.min_epochs, "reductionFactor": args.reduction_factor}
    strategies = single_objective_strategies(args.samples, asha)
    runs = run_all(source, strategies, range(args.seeds), args.workers, args.processes)
    outcomes = [outcome(s.name, runs[s.name], trials_of(s), source.epochs, target) for s in strategies]
    by_name = {o.name: o for o in outcomes}
    random_median = by_name["random"].median
    title = f"trial-epochs to within {WITHIN:.0%} of the best known val_loss, over {args.seeds} seeds"
    console.print(reach_table(outcomes, random_median, title))
    console.print(
        "samples: sampling.samples (grid: its points); budget: samples x epochs (trial-epochs); reached: seeds that "
        "got within 1%; to target: trial-epochs spent when the first trial within 1% finished (the budget if none "
        "did); / random: that median over random's; used, trials, pruned: trial-epochs spent, trials handed out, "
        "trials stopped by ASHA; repeats: suggestions of a point already held, told its result instead of training "
        "it (medians over seeds); ended early: runs the ledger ended before their samples. Points trained twice: "
        f"{sum(r.retrained for v in runs.values() for r in v)}."
    )
    multi_objective(source, args, console)
    if args.sweep:
        asha_sweep(source, args, target, random_median, console)
    console.print(f"Replay took {time.perf_counter() - started:.1f} s. Target: TPE + ASHA <= 0.5 of random's epochs.")
    print(f"fraction_of_grid_epochs={by_name['TPE + ASHA'].median / random_median:.3f}")


if __name__ == "__main__":
    sys.exit(main())
