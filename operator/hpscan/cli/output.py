"""What every command module shares: the consoles, and a collector that turns HPScanErrors into one line.

Command modules collect their commands with ``commands = Commands()`` / ``@commands("name")``;
``hpscan.cli`` adds them to the app. No command module imports ``hpscan.cli`` (the imports go one way).
"""

from __future__ import annotations

import functools
import typing
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


def quiet_flags(function: Callable[..., Any]) -> Callable[..., Any]:
    """Plain on/off flags (``--plain``) are shown without typer's ``<bool>`` type: they take no value. The
    annotations are evaluated once here (they are strings under ``from __future__ import annotations``) so the
    options typer reads are the ones changed."""
    hints = typing.get_type_hints(function, include_extras=True)
    for hint in hints.values():
        if typing.get_origin(hint) is typing.Annotated and typing.get_args(hint)[0] is bool:
            for info in typing.get_args(hint)[1:]:
                if isinstance(info, typer.models.OptionInfo) and info.metavar is None:
                    info.metavar = ""
    function.__annotations__ = hints
    return function


class Commands:
    """The commands one module defines, in order, for ``hpscan.cli`` to add to the app."""

    def __init__(self) -> None:
        self.entries: list[tuple[str | None, Callable[..., Any], dict[str, Any]]] = []

    def __call__(self, name: str | None = None, **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def collect(function: Callable[..., Any]) -> Callable[..., Any]:
            self.entries.append((name, guarded(quiet_flags(function)), options))
            return function

        return collect
