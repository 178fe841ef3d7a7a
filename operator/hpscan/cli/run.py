"""`hpscan run`: a whole scan on this machine, with live progress (rich bars on a terminal, lines otherwise)."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console, Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from hpscan.api import registry
from hpscan.api.contract import ResultRecord
from hpscan.api.spec import HPScan
from hpscan.api.status import ENDED_PHASES, HPScanStatus, ScanPhase, ShardPhase
from hpscan.cli.output import Commands, err, out, pareto_table, plural
from hpscan.core.eta import ShardProgress, estimate, per_minute
from hpscan.core.manifest import load_scan
from hpscan.core.planning import Plan
from hpscan.core.ranking import tie_note
from hpscan.core.results import Aggregate
from hpscan.engine import EngineSettings
from hpscan.errors import ManifestError
from hpscan.local_scan import run_scan, site_from_here

commands = Commands()


def _value(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


class PlainObserver:
    """One line per event, for logs and pipes."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.last_phases: dict[int, str] = {}
        self.metric = ""
        self.total = 0

    def started(self, planned: Plan, agg: Aggregate, workers: int) -> None:
        self.metric, self.total = planned.spec.objective.metric, planned.total
        self.console.print(
            f"scan {planned.scan}: {plural(planned.total, 'combination')} in {plural(planned.shard_count, 'shard')}, "
            f"{workers} at once; {agg.recorded} already recorded",
            highlight=False,
        )

    def recorded(self, record: ResultRecord, agg: Aggregate) -> None:
        value = record.metrics.get(self.metric)
        what = {
            "succeeded": f"{self.metric}={_value(value)}",
            "pruned": f"pruned after {record.epochs} epochs ({self.metric} {_value(value)})",
        }.get(record.status, f"failed: {record.error}")
        best = _value(agg.best.value if agg.best else None)
        self.console.print(
            f"[{agg.recorded}/{self.total}] shard {record.shard} {record.id} {what} (best {best})", highlight=False
        )

    def updated(self, status: HPScanStatus) -> None:
        for shard in status.shards:
            line = f"{shard.phase}{': ' + shard.message if shard.message else ''}"
            if self.last_phases.get(shard.index) != line and shard.phase != "Pending":
                self.last_phases[shard.index] = line
                self.console.print(f"shard {shard.index}: {line}", highlight=False)


def _clock_time(seconds: float) -> str:
    minutes, secs = divmod(math.ceil(round(seconds, 3)), 60)  # whole seconds, rounded up as rich's columns do
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}"


class _Computed(ProgressColumn):
    """A column whose text is computed when the view is drawn (so an ETA counts down between records)."""

    def __init__(self, text: Callable[[], str]) -> None:
        super().__init__()
        self.text = text

    def render(self, task: Task) -> Text:
        return Text(self.text())


class LiveObserver:
    """Overall and per-shard bars, best value so far, rate and ETA (hpscan.core.eta, from when records arrived)."""

    def __init__(self, console: Console, clock: Callable[[], float] = time.monotonic) -> None:
        self.console = console
        self.clock = clock
        self.overall = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            _Computed(self._rate),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            _Computed(self._eta),
            TextColumn("best {task.fields[best]}"),
            console=console,
            get_time=clock,
        )
        self.per_shard = Progress(
            TextColumn("  shard {task.fields[index]:>3}"),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            TextColumn("{task.fields[phase]}"),
            console=console,
            get_time=clock,
        )
        self.live = Live(Group(self.overall, self.per_shard), console=console, refresh_per_second=4)
        self.scan_task: TaskID | None = None
        self.shard_tasks: dict[int, TaskID] = {}
        self.started_at = clock()
        self.workers = 1
        self.shards: list[ShardProgress] = []
        self.progress: tuple[ShardProgress, ...] = ()  # replaced whole, read by the drawing thread

    def started(self, planned: Plan, agg: Aggregate, workers: int) -> None:
        self.started_at, self.workers = self.clock(), workers
        self.shards = [
            ShardProgress(size=planned.shard_size(i), done=agg.shard_done[i]) for i in range(planned.shard_count)
        ]
        self.progress = tuple(self.shards)
        self.scan_task = self.overall.add_task(
            f"{planned.scan} ({workers} at once)", total=planned.total, completed=agg.recorded, best="-"
        )
        for i in range(planned.shard_count):
            self.shard_tasks[i] = self.per_shard.add_task(
                "", total=planned.shard_size(i), completed=agg.shard_done[i], index=i, phase="Pending"
            )
        self.live.start()

    def recorded(self, record: ResultRecord, agg: Aggregate) -> None:
        assert self.scan_task is not None
        self._arrived(dict(enumerate(agg.shard_done)))  # the aggregate knows where a record counts (plan or worker)
        self.overall.update(self.scan_task, completed=agg.recorded, best=_value(agg.best.value if agg.best else None))

    def updated(self, status: HPScanStatus) -> None:
        self._arrived({shard.index: shard.done for shard in status.shards})
        counts = status.combinations
        # workers that pull: each holds what it was handed, plus a share of the budget not handed out yet
        unhanded = max(counts.total - counts.suggested, 0)
        going = [s for s in status.shards if s.phase not in ENDED_PHASES] or status.shards
        for shard in status.shards:
            phase = str(shard.phase) + (f" ({shard.reason})" if shard.reason else "")
            self.per_shard.update(self.shard_tasks[shard.index], total=shard.total, phase=phase)
            seen = self.shards[shard.index]
            running = seen.started is None and shard.phase == ShardPhase.RUNNING
            share = -(-unhanded // len(going)) if shard in going and unhanded else 0
            self.shards[shard.index] = replace(
                seen,
                size=shard.total + share or seen.size,
                started=self.clock() if running else seen.started,
                ended=shard.phase in ENDED_PHASES,
            )
        self.progress = tuple(self.shards)

    def _arrived(self, done: dict[int, int]) -> None:
        """Shards whose count of records grew: the new records arrived now; their bars move at once."""
        now = self.clock()
        for index, count in done.items():
            shard = self.shards[index]
            if count > shard.done:
                self.shards[index] = replace(
                    shard,
                    done=count,
                    started=now if shard.started is None else shard.started,  # it records, so it runs
                    records=shard.records + count - shard.done,
                    first=now if shard.first is None else shard.first,
                    last=now,
                )
                self.per_shard.update(self.shard_tasks[index], completed=count)
        self.progress = tuple(self.shards)

    def _rate(self) -> str:
        now = self.clock()
        rate = per_minute(sum(s.records for s in self.progress), self.started_at, now)
        return "" if rate is None else f"{rate:.1f}/min"

    def _eta(self) -> str:
        left = estimate(self.progress, self.workers, self.clock())
        if left.seconds is None:
            return "-:--:--"
        return _clock_time(left.seconds) + (" (overdue)" if left.overdue else "")

    def stop(self) -> None:
        self.live.stop()


def _summary(status: HPScanStatus, run_dir: Path) -> None:
    counts = status.combinations
    colour = "green" if status.phase == ScanPhase.SUCCEEDED else "red"
    out.print(
        f"[{colour}]{status.phase}[/]: {counts.succeeded} succeeded, "
        + (f"{counts.pruned} pruned, " if counts.pruned else "")
        + f"{counts.failed} failed of {counts.total} combinations"
        + (f"; {status.message}" if status.phase != ScanPhase.SUCCEEDED and status.message else ""),
        highlight=False,
    )
    if status.training.epochs_saved:
        trained, saved = status.training.epochs, status.training.epochs_saved
        out.print(
            f"early stopping: {trained} epochs trained, {saved} saved ({saved / (trained + saved):.0%} of "
            f"{trained + saved} a run without pruning would train)",
            highlight=False,
        )
    if resumed := status.training.epochs_resumed:
        out.print(f"checkpoints: interrupted trials resumed, {resumed} epochs not trained again", highlight=False)
    if status.tied:
        out.print(f"best {tie_note(status.tied, len(status.top))}", highlight=False)
    elif status.best is not None:
        params = ", ".join(f"{k}={v}" for k, v in status.best.parameters.items())
        out.print(f"best {status.best.value:.5g} ({status.best.id}: {params})", highlight=False)
    if status.pareto_size is not None:
        out.print(pareto_table(status))
    for shard in status.shards:
        if shard.phase == "Failed":
            out.print(
                f"  shard {shard.index} failed after {shard.attempts} attempt(s): {shard.message}", highlight=False
            )
    out.print(f"results: {run_dir}/results.jsonl, status: {run_dir}/status.json", highlight=False)


def apply_overrides(scan: HPScan, overrides: list[str]) -> HPScan:
    """The scan with ``spec`` fields set from ``PATH=VALUE`` strings (dotted camelCase path under spec, YAML value),
    validated again: e.g. ``payload.settings.epochs=5`` or ``gpu.required=false``."""
    if not overrides:
        return scan
    document = scan.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"status"})
    if scan.spec.multi_objective:  # objective is the first of objectives, derived: --set objectives may reorder them
        document["spec"].pop("objective", None)
    for override in overrides:
        path, sep, text = override.partition("=")
        keys = [k for k in path.strip().removeprefix("spec.").split(".") if k]
        if not sep or not keys:
            raise ManifestError(f"--set {override!r}: give PATH=VALUE, e.g. payload.settings.epochs=5")
        node = document["spec"]
        for key in keys[:-1]:
            child = node.get(key) if isinstance(node, dict) else None
            if child is None and isinstance(node, dict):
                child = node[key] = {}
            if not isinstance(child, dict):
                raise ManifestError(f"--set {override!r}: spec.{'.'.join(keys[:-1])} is not a mapping")
            node = child
        node[keys[-1]] = yaml.safe_load(text)
    try:
        return HPScan.model_validate(document)
    except ValueError as error:
        raise ManifestError(f"--set {' '.join(overrides)}: {error}") from None


@commands("run")
def run(
    file: Annotated[Path, typer.Argument(help="An HPScan manifest.")],
    out_dir: Annotated[
        Path | None, typer.Option("--out", "-o", help="Run folder (default runs/<scan name>); re-running resumes.")
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", "-w", min=1, help="Shards at once (default: one per GPU, or per CPU).")
    ] = None,
    report: Annotated[
        bool,
        typer.Option(
            "--report",
            help="Write the report at the end: parallel coordinates, and the payload's comparison of the kept best, "
            "median and worst models (retrained when the scan keeps none).",
        ),
    ] = False,
    plain: Annotated[bool, typer.Option("--plain", help="Line output even on a terminal.")] = False,
    site: Annotated[
        str | None,
        typer.Option(
            "--site",
            help="Run every shard as a job at this site of spec.sites, one whose backend submits from this machine "
            f"({', '.join(n for n, e in registry.entries().items() if e.submits_from_here)}), followed from here with "
            "the results in the run folder, instead of as processes here.",
        ),
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="PATH=VALUE",
            help="Change a spec field for this run (repeatable; PATH under spec, VALUE in YAML), e.g. "
            "--set payload.settings.epochs=5 --set gpu.required=false: a reduced local form of a cluster scan.",
        ),
    ] = None,
) -> None:
    """Run a whole scan on this machine: shards as local processes, live progress, results in the run folder."""
    scan = apply_overrides(load_scan(file), overrides or [])
    run_dir = out_dir or Path("runs") / scan.metadata.name
    live = sys.stdout.isatty() and not plain
    observer: LiveObserver | PlainObserver = LiveObserver(out) if live else PlainObserver(out)
    try:
        at = site_from_here(scan, site) if site is not None else None
        settings = EngineSettings(poll_seconds=0.5 if at is None else 2.0)  # a remote batch system is asked less often
        status = run_scan(scan, run_dir, observer, settings, workers=workers, site=at)
    except KeyboardInterrupt:
        if isinstance(observer, LiveObserver):
            observer.stop()
        err.print(f"interrupted: recorded results are kept in {run_dir}; run the same command to resume")
        raise typer.Exit(130) from None
    finally:
        if isinstance(observer, LiveObserver):
            observer.stop()
    _summary(status, run_dir)
    if report and status.phase == ScanPhase.SUCCEEDED:
        from hpscan.cli.report import write_report

        started = time.monotonic()
        where = write_report(run_dir, retrain=None)  # the kept models; retrained when the scan kept none
        out.print(f"report: {where} (written in {time.monotonic() - started:.0f} s)", highlight=False)
    if status.phase != ScanPhase.SUCCEEDED:
        raise typer.Exit(1)
