"""`hpscan dashboard DIR`: a scan watched live in the browser (hpscan.dashboard), served on 127.0.0.1."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Annotated

import typer

from hpscan.cli.output import Commands, out

commands = Commands()


@commands("dashboard")
def dashboard(
    run_dir: Annotated[Path, typer.Argument(help="A run folder: the --out of hpscan run (scan.yaml, results.jsonl).")],
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port on 127.0.0.1 (0: a free one).")] = 0,
) -> None:
    """Serve a live page of the scan on 127.0.0.1: progress and ETA, parallel coordinates (brush an axis to
    filter), the sites with their probes, the shards, and a trial's per-epoch curve. Read-only; Ctrl-C ends it."""
    from hpscan.dashboard.server import start, stop
    from hpscan.dashboard.source import RunFolder

    server = start(RunFolder(run_dir), port=port)
    out.print(f"dashboard of {run_dir} on {server.url} (Ctrl-C to stop)", highlight=False)
    try:
        threading.Event().wait()
    finally:
        stop(server)
