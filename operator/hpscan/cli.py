"""The `hpscan` command. Thin: parse arguments, call the core, print; HPScanErrors become one line and an exit code."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from hpscan import __version__
from hpscan.errors import HPScanError, ManifestError
from hpscan.manifest import check_file, load_scan
from hpscan.planning import Plan, axis_preview, axis_size, axis_values, plan

app = typer.Typer(
    name="hpscan",
    help="Declarative hyperparameter scans on GPUs: plan, validate and run HPScans locally, on Kubernetes or HTCondor.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def command(name: str | None = None, **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a command whose HPScanErrors become one line on stderr and the error's exit code."""

    def register(function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return function(*args, **kwargs)
            except HPScanError as error:
                err.print(f"[red]error:[/] {error}", highlight=False)
                raise typer.Exit(error.exit_code) from None

        app.command(name, **options)(guarded)
        return function

    return register


def _version(value: bool) -> None:
    if value:
        out.print(f"hpscan {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """hpscan: one declarative object for a whole hyperparameter scan."""


@command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="Manifest files (YAML, several documents each).")],
) -> None:
    """Check HPScan manifests: every problem is listed with its file, document and field path."""
    failed = False
    for path in files:
        try:
            scans, problems = check_file(path)
        except ManifestError as error:
            err.print(f"[red]✗[/] {error}", highlight=False)
            failed = True
            continue
        for problem in problems:
            err.print(f"[red]✗[/] {problem}", highlight=False)
        for scan in scans:
            try:
                planned = plan(scan.metadata.name, scan.spec)
            except HPScanError as error:
                err.print(f"[red]✗[/] {path}: {scan.metadata.name}: {error}", highlight=False)
                failed = True
                continue
            out.print(
                f"[green]✓[/] {path}: HPScan {scan.metadata.name}: {planned.total:,} combinations "
                f"in {planned.shard_count} shards",
                highlight=False,
            )
        failed = failed or bool(problems)
    if failed:
        raise typer.Exit(ManifestError.exit_code)


def _summary(planned: Plan) -> Table:
    spec = planned.spec
    table = Table(title=f"HPScan {planned.scan}", title_justify="left")
    table.add_column("parameter")
    table.add_column("points", justify="right")
    table.add_column("values")
    for parameter in spec.parameters:
        size = axis_size(parameter)
        shown = (
            axis_preview(axis_values(parameter))
            if size is not None
            else (
                f"{parameter.range.min:g} .. {parameter.range.max:g} ({parameter.range.scale}, continuous)"
                if parameter.range
                else ""
            )
        )
        table.add_row(parameter.name, str(size) if size is not None else "-", shown)
    return table


@command("plan")
def plan_command(
    file: Annotated[Path, typer.Argument(help="An HPScan manifest.")],
    out_dir: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write one JSON shard file per shard into this folder.")
    ] = None,
) -> None:
    """Plan a scan: its combinations and shards. With --out, write the shard files the payload reads."""
    from hpscan.shardfiles import write_shard_files

    scan = load_scan(file)
    planned = plan(scan.metadata.name, scan.spec)
    out.print(_summary(planned))
    sizes = sorted({planned.shard_size(s) for s in range(planned.shard_count)})
    sampling = scan.spec.sampling
    how = "grid" if sampling.strategy == "grid" else f"random sample (seed {sampling.seed})"
    out.print(
        f"{planned.total:,} combinations ({how}) in {planned.shard_count} shards of "
        f"{' or '.join(str(s) for s in sizes)}; objective: {scan.spec.objective.goal} {scan.spec.objective.metric}",
        highlight=False,
    )
    for note in planned.notes:
        out.print(f"[yellow]note:[/] {note}", highlight=False)
    if out_dir is not None:
        paths = write_shard_files(planned, out_dir)
        out.print(f"wrote {len(paths)} shard files to {out_dir}/", highlight=False)


@command()
def crd() -> None:
    """Print the HPScan CustomResourceDefinition (generated from the API models)."""
    from hpscan.api.crd import crd_yaml

    sys.stdout.write(crd_yaml())


# Commands of other modules register themselves on `app` when imported (keep this list short and sorted).
from hpscan import cli_cluster, cli_condor, cli_report, cli_run  # noqa: E402, F401


def main() -> None:
    """Entry point: no traceback reaches the user (set HPSCAN_DEBUG=1 to see one)."""
    try:
        app()
    except HPScanError as error:
        err.print(f"[red]error:[/] {error}", highlight=False)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception as error:  # a bug: say so plainly, keep the traceback for those who ask
        if os.environ.get("HPSCAN_DEBUG"):
            raise
        err.print(f"[red]internal error:[/] {type(error).__name__}: {error} (set HPSCAN_DEBUG=1 for the traceback)")
        sys.exit(70)
