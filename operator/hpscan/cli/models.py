"""`hpscan models` and `hpscan fetch-model`: the trained models a scan kept (spec.artifacts), listed or copied out.

A run folder of `hpscan run` keeps them in RUN/models/<combination id>/ (what is in a folder is the payload's:
dl1 writes model.keras, scale_dict.json and model.json). Scans on Kubernetes or HTCondor will keep theirs in object
storage; until then only run folders (or folders collected from a cluster) can be read.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from hpscan.cli.output import Commands, out
from hpscan.errors import ModelsError
from hpscan.report.rundir import Ranked, ScanRun, load_run

commands = Commands()


def _run(scan_or_dir: str) -> ScanRun:
    folder = Path(scan_or_dir)
    if not folder.is_dir():
        raise ModelsError(
            f"{scan_or_dir}: no such run folder. The models of a scan on Kubernetes or HTCondor will be kept in object "
            "storage (not yet supported); give the folder of a local run (the --out of hpscan run)"
        )
    return load_run(folder)


def _kept(run: ScanRun) -> list[tuple[Ranked | None, str, Path]]:
    """(ranked combination or None, id, folder) of every kept model, best first."""
    by_id = {r.id: r for r in run.ranked}
    rows: list[tuple[Ranked | None, str, Path]] = [(by_id.get(i), i, p) for i, p in run.models.items()]
    return sorted(rows, key=lambda row: (row[0].rank if row[0] is not None else len(by_id), row[1]))


@commands("models")
def models(
    scan_or_dir: Annotated[str, typer.Argument(metavar="SCAN|DIR", help="A run folder (the --out of hpscan run).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the trained models a scan kept (spec.artifacts), best first, with their rank and objective value."""
    run = _run(scan_or_dir)
    rows = _kept(run)
    metric = run.scan.spec.objective.metric
    if as_json:
        listing = [
            {
                "rank": ranked.rank + 1 if ranked else None,
                "id": model_id,
                metric: ranked.value if ranked else None,
                "parameters": ranked.record.parameters if ranked else None,
                "path": str(path),
            }
            for ranked, model_id, path in rows
        ]
        out.print_json(json.dumps(listing))
        return
    if not rows:
        keep = run.scan.spec.artifacts.keep
        out.print(
            f"{run.run_dir}: no kept models (spec.artifacts.keep: {keep}; {len(run.ranked)} combinations succeeded)",
            highlight=False,
        )
        return
    table = Table(title=f"{run.name}: {len(rows)} kept models of {len(run.ranked)} succeeded combinations")
    for column in ("rank", "id", metric, "parameters", "folder"):
        table.add_column(column, justify="right" if column in ("rank", metric) else "left")
    for ranked, model_id, path in rows:
        params = ", ".join(f"{k}={v}" for k, v in ranked.record.parameters.items()) if ranked else ""
        table.add_row(
            str(ranked.rank + 1) if ranked else "-",
            model_id,
            f"{ranked.value:.5g}" if ranked else "-",
            params,
            str(path),
        )
    out.print(table)


@commands("fetch-model")
def fetch_model(
    scan_or_dir: Annotated[str, typer.Argument(metavar="SCAN|DIR", help="A run folder (the --out of hpscan run).")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder to copy the model into (new or empty).")],
    rank: Annotated[
        int | None, typer.Option("--rank", min=1, help="The model of the combination ranked N (1 = best).")
    ] = None,
    model_id: Annotated[str | None, typer.Option("--id", help="The model of this combination id.")] = None,
) -> None:
    """Copy one kept model out of a scan: the best (default), the one ranked N, or one combination's (--id)."""
    if rank is not None and model_id is not None:
        raise ModelsError("give --rank or --id, not both")
    run = _run(scan_or_dir)
    rows = _kept(run)
    if not rows:
        raise ModelsError(
            f"{run.run_dir}: the scan kept no models (spec.artifacts.keep: {run.scan.spec.artifacts.keep})"
        )
    if model_id is not None:
        chosen = [row for row in rows if row[1] == model_id]
        what = f"combination {model_id}"
    else:
        wanted = rank or 1
        chosen = [row for row in rows if row[0] is not None and row[0].rank + 1 == wanted]
        what = f"rank {wanted}"
    if not chosen:
        kept = ", ".join(f"{r.rank + 1} ({i})" if r else i for r, i, _ in rows[:12])
        raise ModelsError(f"{run.run_dir}: no kept model of {what}; kept (rank, id): {kept}")
    ranked, chosen_id, source = chosen[0]
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ModelsError(f"{out_dir}: exists and is not an empty folder; choose a new --out")
    if out_dir.exists():
        out_dir.rmdir()
    shutil.copytree(source, out_dir)
    value = f", {run.scan.spec.objective.metric} {ranked.value:.5g}" if ranked else ""
    place = f"rank {ranked.rank + 1}" if ranked else "unranked"
    out.print(f"fetched {chosen_id} ({place}{value}) into {out_dir}", highlight=False)
