"""`hpscan run` and `hpscan shard-run`: a scan on this machine, and the runner around one payload process."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hpscan.cli import command
from hpscan.shardrun import StdoutChannel, run_shard


@command("shard-run")
def shard_run(
    shard_file: Annotated[Path, typer.Argument(help="The shard file the payload reads.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output folder (results.jsonl).")],
    payload: Annotated[list[str], typer.Argument(help="The payload command, after --, e.g. -- dl1 train-shard.")],
) -> None:
    """Run a payload on one shard file, publishing each record as it is written (used inside shard jobs)."""
    raise typer.Exit(run_shard(payload, shard_file, out_dir, StdoutChannel()))
