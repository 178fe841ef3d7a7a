"""Reading HPScan manifests: YAML files (several documents each) into validated models, or one clear error."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from hpscan.api.spec import API_VERSION, KIND, HPScan
from hpscan.errors import ManifestError

MAX_MANIFEST_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a manifest: where (file, document, field path) and what."""

    source: str
    document: int | None
    path: str
    message: str
    skipped: bool = False
    """Not a problem: a document that is no HPScan (e.g. a kustomization beside the scans), left alone."""

    def __str__(self) -> str:
        where = self.source + (f" (document {self.document})" if self.document is not None else "")
        return f"{where}: {self.path + ': ' if self.path else ''}{self.message}"


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _message(error: dict[str, Any]) -> str:
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    if error["type"] == "extra_forbidden":
        return "unknown field (check the spelling; fields are camelCase)"
    if error["type"] == "missing":
        return "required field is missing"
    return message


def _is(value: Any) -> str:
    return "is missing" if value is None else f"is {value!r}"


def problems_of(document: Any, source: str, index: int | None = None) -> tuple[HPScan | None, list[Problem]]:
    """Validate one parsed YAML document as an HPScan: the model, or the list of problems (field paths in camelCase)."""
    if not isinstance(document, dict):
        return None, [
            Problem(source, index, "", f"expected a mapping (an HPScan object), got {type(document).__name__}")
        ]
    api_version, kind = document.get("apiVersion"), document.get("kind")
    if kind != KIND and not str(api_version or "").startswith(API_VERSION.split("/")[0] + "/"):
        what = f"a {kind} ({api_version})" if kind and api_version else "not a Kubernetes object (no apiVersion/kind)"
        return None, [Problem(source, index, "", f"skipped: {what}, not an HPScan", skipped=True)]
    problems = []
    if document.get("apiVersion") != API_VERSION:
        problems.append(
            Problem(source, index, "apiVersion", f"{_is(document.get('apiVersion'))}, expected {API_VERSION!r}")
        )
    if document.get("kind") != KIND:
        problems.append(Problem(source, index, "kind", f"{_is(document.get('kind'))}, expected {KIND!r}"))
    if problems:
        return None, problems
    try:
        return HPScan.model_validate(document), []
    except ValidationError as error:
        # Union members repeat the same complaint once per member; keep each (path, message) once.
        seen: dict[tuple[str, str], None] = {}
        for item in error.errors(include_url=False):
            loc = tuple(p for p in item["loc"] if not (isinstance(p, str) and p in {"int", "float", "str", "bool"}))
            seen.setdefault((_field_path(loc), _message(dict(item))), None)
        return None, [Problem(source, index, path, message) for path, message in seen]


def parse_documents(text: str, source: str) -> list[Any]:
    """Split YAML text into documents (empty ones dropped); a YAML error names the line and column."""
    try:
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.MarkedYAMLError as error:
        # The cause is where the construct began (an unclosed "{" on line 14), not where the parser gave up.
        mark = error.context_mark or error.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        detail = error.problem or ""
        if error.context and error.context_mark is not None and error.problem_mark is not None:
            detail = f"{error.context.removeprefix('while ')} that is not closed ({detail} on line {error.problem_mark.line + 1})"
        raise ManifestError(f"{source}: not valid YAML{where}: {detail}") from None
    except yaml.YAMLError as error:
        raise ManifestError(f"{source}: not valid YAML: {error}") from None


def read_text(path: Path) -> str:
    """A manifest file's text, or a ManifestError saying why it cannot be read."""
    try:
        if path.is_dir():
            raise ManifestError(f"{path}: is a folder, not a manifest file")
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise ManifestError(f"{path}: larger than {MAX_MANIFEST_BYTES // 1024 // 1024} MiB; not a manifest")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(f"{path}: no such file") from None
    except PermissionError:
        raise ManifestError(f"{path}: permission denied") from None
    except OSError as error:
        raise ManifestError(f"{path}: cannot be read ({error.strerror})") from None
    if b"\x00" in raw:
        raise ManifestError(f"{path}: a binary file, not a YAML manifest")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ManifestError(f"{path}: not UTF-8 text (byte {error.start}); not a YAML manifest") from None


def check_file(path: Path) -> tuple[list[HPScan], list[Problem]]:
    """Every HPScan in a file and every problem found; raises ManifestError only when the file cannot be parsed."""
    source = str(path)
    documents = parse_documents(read_text(path), source)
    if not documents:
        return [], [Problem(source, None, "", "holds no YAML document")]
    scans: list[HPScan] = []
    problems: list[Problem] = []
    for number, document in enumerate(documents, start=1):
        scan, found = problems_of(document, source, number if len(documents) > 1 else None)
        problems.extend(found)
        if scan is not None:
            scans.append(scan)
    return scans, problems


def load_scans(path: Path) -> list[HPScan]:
    """Every HPScan in a file, or a ManifestError listing every problem."""
    scans, problems = check_file(path)
    if real := [p for p in problems if not p.skipped]:
        raise ManifestError("\n".join(str(p) for p in real))
    return scans


def load_scan(path: Path) -> HPScan:
    """The single HPScan of a file (a file with several needs the caller to choose)."""
    scans = load_scans(path)
    if len(scans) != 1:
        raise ManifestError(f"{path}: holds {len(scans)} HPScans; this command takes a file with one")
    return scans[0]
