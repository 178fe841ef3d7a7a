"""The `hpscan` command, assembled from the command modules of this package (which never import it back)."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from hpscan.cli import cluster, condor, dashboard, models, report, run, scan, shard
from hpscan.cli.output import err, out
from hpscan.clihelp import HelpCommand, HelpGroup
from hpscan.errors import HPScanError

app = typer.Typer(
    name="hpscan",
    help="Declarative hyperparameter scans on GPUs: plan, validate and run HPScans locally, on Kubernetes, HTCondor or Slurm.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=HelpGroup,
)

for module in (scan, run, report, dashboard, models, cluster, condor, shard):
    for name, function, options in module.commands.entries:
        app.command(name, cls=HelpCommand, **options)(function)


def _version(value: bool) -> None:
    if value:
        from hpscan import __version__

        out.print(f"hpscan {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """hpscan: one declarative object for a whole hyperparameter scan."""


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
