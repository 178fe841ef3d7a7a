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
