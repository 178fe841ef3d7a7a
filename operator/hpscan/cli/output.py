"""What every command module shares: the consoles, and a collector that turns HPScanErrors into one line.

Command modules collect their commands with ``commands = Commands()`` / ``@commands("name")``;
``hpscan.cli`` adds them to the app. No command module imports ``hpscan.cli`` (the imports go one way).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from hpscan.api.status import HPScanStatus
from hpscan.errors import HPScanError

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def plural(count: int, word: str) -> str:
    """``1 shard``, ``4 shards``, ``1,000 combinations``."""
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def guarded(function: Callable[..., Any]) -> Callable[..., Any]:
    """The command with its HPScanErrors turned into one line on stderr and the error's exit code."""

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except HPScanError as error:
            err.print(f"[red]error:[/] {error}", highlight=False)
            raise typer.Exit(error.exit_code) from None

    return run


class Commands:
    """The commands one module defines, in order, for ``hpscan.cli`` to add to the app."""

    def __init__(self) -> None:
        self.entries: list[tuple[str | None, Callable[..., Any], dict[str, Any]]] = []

    def __call__(self, name: str | None = None, **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def collect(function: Callable[..., Any]) -> Callable[..., Any]:
            self.entries.append((name, guarded(function), options))
            return function

        return collect


def with_error(value: float, error: float | None) -> str:
    """A value with its statistical error, when it has one."""
    return f"{value:.5g}" if error is None else f"{value:.5g} ± {error:.2g}"


def pareto_table(current: HPScanStatus) -> Table:
    """A multi-objective scan's Pareto set: one row per member, one column per objective (value ± error)."""
    metrics = list(current.pareto[0].values) if current.pareto else []
    shown = f"{len(current.pareto)} of {current.pareto_size}" if current.pareto_omitted else f"{current.pareto_size}"
    table = Table("id", *metrics, "parameters", title=f"Pareto set ({shown})", title_justify="left")
    for member in current.pareto:
        params = ", ".join(f"{k}={v}" for k, v in member.parameters.items())
        values = [with_error(member.values[m], member.errors.get(m)) for m in metrics]
        table.add_row(member.id, *values, params)
    return table
