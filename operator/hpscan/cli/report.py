"""`hpscan report DIR`: the paper's figures from a run folder (parallel coordinates; with --retrain, ROC curves)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from hpscan.cli.output import Commands, err, out

commands = Commands()


@commands("report")
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run folder: the --out of hpscan run (scan.yaml, results.jsonl).")],
    retrain: Annotated[
        bool,
        typer.Option(
            "--retrain",
            help="Also retrain the best, median and worst combination and compare them on a held-out test set "
            "against a BDT (roc.png, rejection-vs-fc.png). Needs TensorFlow and the dl1 payload.",
        ),
    ] = False,
    top: Annotated[int, typer.Option("--top", min=1, max=1000, help="Rows in the table of best combinations.")] = 10,
) -> None:
    """Write DIR/report/: parallel-coordinates.png/.html, index.html, metrics.json (and the ROC plots with --retrain)."""
    from hpscan.report import build_report

    started = time.monotonic()
    with Progress(
        TextColumn("[bold]report[/]"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    ) as bar:
        task = bar.add_task("starting", total=None)
        printed: set[int] = set()

        def tell(description: str, done: int, total: int) -> None:
            bar.update(task, description=description, completed=done, total=total)
            if not err.is_terminal and done < total and done not in printed:  # one line per step in logs
                printed.add(done)
                err.print(f"report: {description}", highlight=False)

        page = build_report(run_dir, retrain=retrain, top=top, progress=tell)
    out.print(f"report written to {page.parent}/ in {time.monotonic() - started:.0f} s; open {page}", highlight=False)
