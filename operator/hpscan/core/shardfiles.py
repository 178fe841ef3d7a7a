"""Shard files on disk: one small JSON file per shard, as in the paper."""

from __future__ import annotations

from pathlib import Path

from hpscan.api.contract import ShardFile, shard_file_name
from hpscan.core.planning import Plan


def write_shard_files(plan: Plan, folder: Path) -> list[Path]:
    """Write every shard file of a plan into a folder (created if needed); returns the paths in shard order."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for shard_file in plan.shard_files():
        path = folder / shard_file_name(shard_file.shard)
        path.write_text(shard_file.model_dump_json(by_alias=True, exclude_none=True, indent=1) + "\n")
        paths.append(path)
    return paths


def read_shard_file(path: Path) -> ShardFile:
    return ShardFile.model_validate_json(path.read_bytes())
