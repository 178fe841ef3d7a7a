"""`hpscan shard-run`: the shard runner, the one hpscan command that runs inside a shard job (the payload image).

It imports only the API models, the registry and the job-side package: never the operator side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hpscan.api import registry
from hpscan.cli.output import Commands
from hpscan.errors import BackendError
from hpscan.job.runner import LiveChannel, StdoutChannel, run_shard

commands = Commands()


@commands("shard-run")
def shard_run(
    shard_file: Annotated[Path, typer.Argument(help="The shard file the payload reads.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output folder (results.jsonl).")],
    payload: Annotated[list[str], typer.Argument(help="The payload command, after --, e.g. -- dl1 train-shard.")],
    channel: Annotated[
        str,
        typer.Option(
            "--channel",
            help="Where records go live: stdout, or the backend that runs the job "
            f"({', '.join(registry.entries())}), which publishes through its own channel.",
        ),
    ] = "stdout",
) -> None:
    """Run a payload on one shard file, publishing each record as it is written (used inside shard jobs)."""
    live: LiveChannel
    if channel == "stdout":
        live = StdoutChannel()
    else:
        try:
            live = registry.resolve(channel, "channel")(shard_file)
        except registry.RegistryError as error:
            raise BackendError(f"--channel {channel}: {error}") from None
    raise typer.Exit(run_shard(payload, shard_file, out_dir, live))
