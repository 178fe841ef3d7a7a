"""Requirements of pyproject.toml installed above their declared floor: the check of `make test-lowest`.

That lane installs with `uv pip install --resolution lowest-direct`, which gives every direct requirement its
lowest version that resolves. One installed above its `>=` floor means the floor no longer resolves (another
requirement lifts it, or it has no wheel for this Python), so the floor claims what no test ran: raise it.

    python tests/floors.py EXTRA[,EXTRA...]    # exit 1, one line per requirement above its floor
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Callable, Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def requirements(project: dict, extras: Iterable[str]) -> list[Requirement]:
    """The project's dependencies and those of ``extras``, with its references to itself (hpscan[x]) expanded."""
    own = canonicalize_name(project["name"])
    optional = project.get("optional-dependencies", {})
    found = [Requirement(line) for line in project.get("dependencies", [])]
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        if extra not in optional:
            raise KeyError(f"pyproject.toml has no extra {extra!r}")
        seen.add(extra)
        for line in optional[extra]:
            requirement = Requirement(line)
            if canonicalize_name(requirement.name) == own:
                todo.extend(requirement.extras)
            else:
                found.append(requirement)
    return found


def floor(requirement: Requirement) -> Version | None:
    """The version its ``>=`` specifiers name (the highest, if several); None without one."""
    floors = [Version(spec.version) for spec in requirement.specifier if spec.operator == ">="]
    return max(floors, default=None)


def above_floor(found: Iterable[Requirement], installed: Callable[[str], str | None]) -> list[str]:
    """One line per requirement not installed at its floor (``installed`` gives a name's version, or None)."""
    problems: dict[str, str] = {}
    for requirement in found:
        low = floor(requirement)
        if low is None or (requirement.marker is not None and not requirement.marker.evaluate()):
            continue
        name = canonicalize_name(requirement.name)
        got = installed(name)
        if got is None:
            problems[name] = f"{name}: not installed (declared {requirement.specifier})"
        elif Version(got) != low:
            problems[name] = f"{name}: floor {low} declared, {got} installed by lowest-direct: raise the floor to {got}"
    return sorted(problems.values())


def installed_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def main(argv: list[str]) -> int:
    extras = [e for arg in argv for e in arg.split(",") if e]
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    problems = above_floor(requirements(project, extras), installed_version)
    for line in problems:
        print(f"floors: {line}", file=sys.stderr)
    if not problems:
        print(f"floors: every direct requirement of [{','.join(extras)}] is installed at its declared floor")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
