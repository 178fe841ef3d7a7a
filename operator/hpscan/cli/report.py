"""`hpscan report DIR|NAME`: the paper's figures from a run folder, or from an HPScan on the cluster copied into one
(parallel coordinates, the Pareto front; ROC curves from the kept models, or with --retrain from retrained ones)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from hpscan.cli.output import Commands, err, out

commands = Commands()


def write_report(run_dir: Path, retrain: bool | None, top: int = 10) -> Path:
    """build_report with a progress bar on a terminal and one line per step otherwise; returns index.html."""
    from hpscan.report import build_report

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

        return build_report(run_dir, retrain=retrain, top=top, progress=tell)


@commands("report")
def report(
    name: Annotated[
        str,
        typer.Argument(
            help="A run folder (the --out of hpscan run), or an HPScan's name on the cluster (copied into --out)."
        ),
    ],
    retrain: Annotated[
        bool,
        typer.Option(
            "--retrain",
            help="Retrain the best, median and worst combination instead of using the models the scan kept "
            "(for scans that kept none, spec.artifacts.keep: none). Needs TensorFlow and the payload.",
        ),
    ] = False,
    top: Annotated[int, typer.Option("--top", min=1, max=1000, help="Rows in the table of best combinations.")] = 10,
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="Namespace of the HPScan.")] = "default",
    context: Annotated[str | None, typer.Option(help="kubeconfig context.")] = None,
    into: Annotated[
        Path | None,
        typer.Option(
            "--out", help="For an HPScan on the cluster: the run folder it is copied into [default: reports/NS/NAME]."
        ),
    ] = None,
) -> None:
    """Write DIR/report/: parallel-coordinates.png/.html, index.html, metrics.json, the Pareto front of a
    multi-objective scan, and the payload's comparison of the best, median and worst network (dl1: ROC curves,
    rejection vs f_c, c-tagging against a BDT) from the models the scan kept."""
    from hpscan.cli import cluster

    started = time.monotonic()
    run_dir = Path(name)
    if not run_dir.is_dir() and "/" not in name and not name.startswith("."):  # a Kubernetes name holds no "/"
        run_dir = cluster.mirror_scan(name, namespace, context, into or Path("reports") / namespace / name)
    page = write_report(run_dir, retrain=retrain, top=top)
    out.print(f"report written to {page.parent}/ in {time.monotonic() - started:.0f} s; open {page}", highlight=False)
