"""`hpscan run`: a whole scan on this machine, with live progress (rich bars on a terminal, lines otherwise)."""

from __future__ import annotations

import sys
import time
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
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from hpscan.api.contract import ResultRecord
from hpscan.api.spec import HPScan
from hpscan.api.status import HPScanStatus, ScanPhase
from hpscan.cli.output import Commands, err, out, plural
from hpscan.core.manifest import load_scan
from hpscan.core.planning import Plan
from hpscan.core.results import Aggregate
from hpscan.errors import ManifestError
from hpscan.local_scan import condor_site, run_scan

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


class LiveObserver:
    """Overall and per-shard bars, best value so far, rate and ETA."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.overall = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("best {task.fields[best]}"),
            console=console,
        )
        self.per_shard = Progress(
            TextColumn("  shard {task.fields[index]:>3}"),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            TextColumn("{task.fields[phase]}"),
            console=console,
        )
        self.live = Live(Group(self.overall, self.per_shard), console=console, refresh_per_second=4)
        self.scan_task: TaskID | None = None
        self.shard_tasks: dict[int, TaskID] = {}
        self.started_at = time.monotonic()
        self.done_at_start = 0

    def started(self, planned: Plan, agg: Aggregate, workers: int) -> None:
        self.done_at_start = agg.recorded
        self.scan_task = self.overall.add_task(
            f"{planned.scan} ({workers} at once)", total=planned.total, completed=agg.recorded, rate="", best="-"
        )
        for i in range(planned.shard_count):
            self.shard_tasks[i] = self.per_shard.add_task(
                "", total=planned.shard_size(i), completed=agg.shard_done[i], index=i, phase="Pending"
            )
        self.live.start()

    def recorded(self, record: ResultRecord, agg: Aggregate) -> None:
        assert self.scan_task is not None
        minutes = (time.monotonic() - self.started_at) / 60
        rate = (agg.recorded - self.done_at_start) / minutes if minutes > 0 else 0.0
        self.overall.update(
            self.scan_task,
            completed=agg.recorded,
            rate=f"{rate:.1f}/min",
            best=_value(agg.best.value if agg.best else None),
        )

    def updated(self, status: HPScanStatus) -> None:
        for shard in status.shards:
            phase = str(shard.phase) + (f" ({shard.reason})" if shard.reason else "")
            self.per_shard.update(self.shard_tasks[shard.index], completed=shard.done, total=shard.total, phase=phase)

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
    if status.best is not None:
        params = ", ".join(f"{k}={v}" for k, v in status.best.parameters.items())
        out.print(f"best {status.best.value:.5g} ({status.best.id}: {params})", highlight=False)
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
            help="Run every shard as an HTCondor job at this htcondor site of spec.sites (followed from here, "
            "results in the run folder) instead of as processes here.",
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
        at = condor_site(scan, site) if site is not None else None
        status = run_scan(scan, run_dir, observer, workers=workers, site=at, poll_seconds=0.5 if at is None else 2.0)
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
