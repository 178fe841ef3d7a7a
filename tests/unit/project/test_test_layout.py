"""The test tree's own rule: pytest imports a test module outside a package by its file name alone (rootdir-relative
"prepend" import mode), so two such modules with one name cannot be collected in one session (`pytest tests/`):
"import file mismatch". A folder with an __init__.py makes its modules a package and is exempt."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parents[2]


def test_no_two_test_modules_outside_packages_share_a_file_name():
    by_name: dict[str, list[str]] = defaultdict(list)
    for module in TESTS.rglob("test_*.py"):
        if not (module.parent / "__init__.py").exists():
            by_name[module.name].append(str(module.relative_to(TESTS)))
    assert {name: paths for name, paths in by_name.items() if len(paths) > 1} == {}
