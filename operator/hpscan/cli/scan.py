"""`hpscan validate`, `hpscan plan` and `hpscan crd`: a manifest checked, planned, or turned into the CRD."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from hpscan.cli.output import Commands, err, out, plural
from hpscan.core.manifest import check_file, load_scan
from hpscan.core.payloads import check_payload, require_payload_accepts
from hpscan.core.planning import Plan, axis_preview, axis_size, axis_values, plan
from hpscan.errors import HPScanError, ManifestError

commands = Commands()


@commands()
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
            if problem.skipped:
                out.print(f"[dim]-[/] {problem}", highlight=False)
            else:
                err.print(f"[red]✗[/] {problem}", highlight=False)
        for scan in scans:
            try:
                planned = plan(scan.metadata.name, scan.spec)
            except HPScanError as error:
                err.print(f"[red]✗[/] {path}: {scan.metadata.name}: {error}", highlight=False)
                failed = True
                continue
            if payload_problems := check_payload(planned):
                for complaint in payload_problems:
                    err.print(f"[red]✗[/] {path}: {scan.metadata.name}: {complaint}", highlight=False)
                failed = True
                continue
            out.print(
                f"[green]✓[/] {path}: HPScan {scan.metadata.name}: {plural(planned.total, 'combination')} "
                f"in {plural(planned.shard_count, 'shard')}",
                highlight=False,
            )
        failed = failed or any(not p.skipped for p in problems)
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


@commands("plan")
def plan_command(
    file: Annotated[Path, typer.Argument(help="An HPScan manifest.")],
    out_dir: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write one JSON shard file per shard into this folder.")
    ] = None,
) -> None:
    """Plan a scan: its combinations and shards. With --out, write the shard files the payload reads."""
    from hpscan.core.shardfiles import write_shard_files

    scan = load_scan(file)
    planned = plan(scan.metadata.name, scan.spec)
    require_payload_accepts(planned)
    out.print(_summary(planned))
    sizes = sorted({planned.shard_size(s) for s in range(planned.shard_count)})
    sampling = scan.spec.sampling
    how = "grid" if sampling.strategy == "grid" else f"random sample (seed {sampling.seed})"
    out.print(
        f"{plural(planned.total, 'combination')} ({how}) in {plural(planned.shard_count, 'shard')} of "
        f"{' or '.join(str(s) for s in sizes)}; objective: {scan.spec.objective.goal} {scan.spec.objective.metric}",
        highlight=False,
    )
    for note in planned.notes:
        out.print(f"[yellow]note:[/] {note}", highlight=False)
    if out_dir is not None:
        paths = write_shard_files(planned, out_dir)
        out.print(f"wrote {len(paths)} shard files to {out_dir}/", highlight=False)


@commands()
def crd() -> None:
    """Print the HPScan CustomResourceDefinition (generated from the API models)."""
    from hpscan.api.crd import crd_yaml

    sys.stdout.write(crd_yaml())
