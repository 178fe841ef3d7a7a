"""What the report computed once and need not compute again: test-set labels, network scores, the BDT's scores.

Entries are .npz files in ``RUN/cache/dl1-report/``, named by a hash of everything they depend on: the data
settings (with the size and modification time of data files), the model files' bytes, the BDT's settings and
``VERSION``. A changed input gives another name, so an entry is never stale; deleting the folder only costs time.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

VERSION = 1
"""Bump when what an entry holds or how it is computed changes."""


def digest(*parts: Any) -> str:
    """A short stable hash of JSON-able parts."""
    text = json.dumps([VERSION, *parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _file_fingerprint(path: Any) -> Any:
    if path is None:
        return None
    file = Path(path)
    try:
        stat = file.stat()
    except OSError:
        return str(file)
    return [str(file.resolve()), stat.st_size, stat.st_mtime_ns]


def data_key(data_settings: dict[str, Any]) -> str:
    """The key of the jets ``settings.data`` describes (files by path, size and modification time)."""
    files = {name: _file_fingerprint(data_settings.get(name)) for name in ("train", "validation", "test", "scale_dict")}
    return digest(data_settings, files)


def folder_key(folder: Path) -> str:
    """The key of a model folder: a hash of its files' bytes."""
    sha = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        sha.update(file.relative_to(folder).as_posix().encode())
        sha.update(file.read_bytes())
    return sha.hexdigest()[:20]


class Cache:
    """A folder of .npz entries."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def load(self, name: str) -> dict[str, np.ndarray] | None:
        path = self.folder / f"{name}.npz"
        try:
            with np.load(path, allow_pickle=False) as entry:
                return {key: entry[key] for key in entry.files}
        except (OSError, ValueError):
            return None

    def load_json(self, name: str) -> Any:
        try:
            return json.loads((self.folder / f"{name}.json").read_text())
        except (OSError, ValueError):
            return None

    def save_json(self, name: str, value: Any) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self.folder / f".{name}.partial.json"
        partial.write_text(json.dumps(value))
        partial.replace(self.folder / f"{name}.json")

    def save(self, name: str, **arrays: Any) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self.folder / f".{name}.partial.npz"
        stored: dict[str, Any] = {key: np.asarray(value) for key, value in arrays.items()}
        np.savez(partial, **stored)
        partial.replace(self.folder / f"{name}.npz")
