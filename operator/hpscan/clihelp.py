"""Help screens in the style typer and click users know, for ``hpscan`` and a payload's CLI (``dl1``).

Since typer's "update metavar printing" (fastapi/typer#1863) every value shows its Python type in angle brackets
(``<str>``, ``<path>``, ``<jsonl|csv>``), flags that take no value, ``--help`` included, show ``<bool>``, and the
usage line wraps a required argument in braces (``{name}``). These classes bring back the familiar form: ``TEXT``,
``INTEGER``, ``PATH``, ``[jsonl|csv]`` after an option, nothing after a flag, ``NAME`` in the usage line. Give them
as ``typer.Typer(cls=HelpGroup)`` and ``app.command(cls=HelpCommand)``. Depends on typer only (a payload may use it).
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperArgument, TyperOption

CLICK_NAMES = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "bool": "BOOLEAN"}
"""click's names for the types typer writes in Python's words; other names are upper-cased (PATH, UUID)."""


def click_label(typer_label: str | None) -> str:
    """typer's ``<int range>`` -> ``INTEGER RANGE``, ``<jsonl|csv>`` -> ``[jsonl|csv]``, ``<list[str]>`` -> ``TEXT``."""
    inner = (typer_label or "").removeprefix("<").removesuffix(">")
    if inner.startswith("list[") and inner.endswith("]"):
        inner = inner[len("list[") : -1]
    if "|" in inner:  # choices: their values, as typed
        return f"[{inner}]"
    return " ".join(CLICK_NAMES.get(word, word.upper()) for word in inner.split())


class _Option(TyperOption):
    def display_type_rich(self, ctx: Any) -> str | None:
        if self.metavar is not None:
            return self.metavar
        if self.is_flag:  # takes no value: nothing to show
            return None
        return click_label(self.display_type(ctx)) + ("..." if self.nargs != 1 else "")


class _Argument(TyperArgument):
    def display_type_rich(self, ctx: Any) -> str | None:
        return click_label(self.display_type(ctx))

    def get_usage_pieces(self, ctx: Any) -> list[str]:
        name = self.metavar or self.name.upper()
        name = name if self.required else f"[{name}]"
        return [name + ("..." if self.nargs != 1 else "")]


def _in_click_style(params: list[Any]) -> list[Any]:
    """The same parameter objects, shown the click way: only how they print changes (the subclasses add no state)."""
    for param in params:
        if type(param) is TyperOption:
            param.__class__ = _Option
        elif type(param) is TyperArgument:
            param.__class__ = _Argument
    return params


class HelpCommand(typer.core.TyperCommand):
    """A typer command whose help shows click-style metavars (see the module docstring)."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _in_click_style(super().get_params(ctx))


class HelpGroup(typer.core.TyperGroup):
    """A typer group whose help shows click-style metavars (see the module docstring)."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _in_click_style(super().get_params(ctx))
