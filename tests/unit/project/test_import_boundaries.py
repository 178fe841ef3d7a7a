"""hpscan never imports a payload: the dl1 payload plugs into hpscan (entry points), never the other way round."""

from __future__ import annotations

import ast
from pathlib import Path

HPSCAN = Path(__file__).resolve().parents[3] / "operator" / "hpscan"


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module a file imports, anywhere in it (functions included), with its line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def test_no_module_of_hpscan_imports_dl1():
    files = sorted(HPSCAN.rglob("*.py"))
    assert len(files) > 20  # the walk found the package
    offenders = [
        f"{path.relative_to(HPSCAN.parent)}:{line}: {module}"
        for path in files
        for line, module in imported_modules(path)
        if module == "dl1" or module.startswith("dl1.")
    ]
    assert offenders == []


def test_the_check_sees_imports_inside_functions(tmp_path: Path):
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from dl1 import train\n    import dl1.data\n")
    assert imported_modules(sample) == [(2, "dl1"), (3, "dl1.data")]
