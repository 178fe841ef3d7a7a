"""The backend's side of the shared file system: the folders it makes in a site's spool (owned by the spool's
owner, so the jobs' user can write in them), the jobs it submitted (jobs.jsonl), and what a job left behind
(its exit code, hpscan's cancel marker, its last words)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from hpscan.api.contract import ShardFile, shard_file_name
from hpscan.api.trials import append_lines
from hpscan.backends.base import last_line
from hpscan.backends.slurm.script import CANCELLED_PREFIX, EXIT_PREFIX, JOBS_FILE


@dataclass(frozen=True)
class Submitted:
    """One line of jobs.jsonl."""

    job_id: int
    moves: int
    attempt: int


def make_folder(folder: Path, spool: Path) -> None:
    """``folder`` and its parents below ``spool``; as root (a test operator, or one that maps users), each is
    given the spool's owner, so the jobs' user writes where the payload writes."""
    missing = []
    current = folder
    while not current.exists() and current != spool and spool in current.parents:
        missing.append(current)
        current = current.parent
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0 and missing:
        owner = spool.stat()
        for path in missing:
            os.chown(path, owner.st_uid, owner.st_gid)


def hand_over(tree: Path, spool: Path) -> None:
    """As root, give everything under ``tree`` to the spool's owner: the job's payload resumes from (and then
    deletes) what the operator restored there."""
    if os.geteuid() != 0 or not tree.exists():
        return
    owner = spool.stat()
    for path in [tree, *tree.rglob("*")]:
        os.chown(path, owner.st_uid, owner.st_gid)


def write_shard_file(folder: Path, shard_file: ShardFile) -> None:
    path = folder / shard_file_name(shard_file.shard)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(shard_file.model_dump_json(by_alias=True, exclude_none=True, indent=1) + "\n")
    tmp.replace(path)


def submitted(folder: Path) -> list[Submitted]:
    """The jobs submitted for the shard of ``folder``, in order."""
    try:
        lines = (folder / JOBS_FILE).read_text().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            item = json.loads(line)
            out.append(Submitted(int(item["job"]), int(item["moves"]), int(item["attempt"])))
        except (ValueError, KeyError, TypeError):
            continue  # a torn last line of a crashed operator: the job is found again by its name
    return out


def record_submitted(folder: Path, job: Submitted) -> None:
    append_lines(folder / JOBS_FILE, [{"job": job.job_id, "moves": job.moves, "attempt": job.attempt}])


def exit_code(folder: Path, job_id: int) -> int | None:
    """The shard runner's exit code the job script wrote, None when it wrote none (yet)."""
    try:
        return int((folder / f"{EXIT_PREFIX}{job_id}").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def mark_cancelled(folder: Path, job_id: int) -> None:
    (folder / f"{CANCELLED_PREFIX}{job_id}").touch()


def was_cancelled(folder: Path, job_id: int) -> bool:
    return (folder / f"{CANCELLED_PREFIX}{job_id}").exists()


def last_words(folder: Path, job_id: int) -> str:
    """The last line the job wrote to stderr (the payload's reason for failing), or to stdout."""
    return last_line(folder / f"stderr-{job_id}.txt", 200) or last_line(folder / f"stdout-{job_id}.txt", 200)
