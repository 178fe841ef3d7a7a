"""A shard's Slurm job (pure): its name, its job script and the slurmrestd request body, and the folders it uses
on the centre's shared file system."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpscan.api.contract import shard_file_name, shard_name
from hpscan.api.sites import Site
from hpscan.api.spec import HPScanSpec
from hpscan.backends.base import ScanRef
from hpscan.backends.slurm.site import SlurmSite
from hpscan.errors import BackendError

JOB_PREFIX = "hpscan"
JOBS_FILE = "jobs.jsonl"
"""The jobs hpscan submitted for a shard, one JSON line each: found again after a restart without asking Slurm."""
EXIT_PREFIX = "exit-"
"""``exit-<job id>``: the shard runner's exit code, written by the job script as its last act."""
CANCELLED_PREFIX = "cancelled-"
"""``cancelled-<job id>``: hpscan cancelled this job (the shard was suspended), not the centre."""


def slurm_of(site: Site) -> SlurmSite:
    settings = site.settings_as(SlurmSite)
    if settings is None:
        raise BackendError(f"site {site.name!r} is not a slurm site")
    return settings


def scan_folder(site: Site, scan: ScanRef) -> Path:
    """The scan's folder in the site's spool: <spool>/<namespace>/<name>-<uid>."""
    return Path(slurm_of(site).spool) / scan.namespace / (f"{scan.name}-{scan.uid}" if scan.uid else scan.name)


def shard_folder(site: Site, scan: ScanRef, shard: int) -> Path:
    """A shard's folder: its shard file, results.jsonl (the payload's --out), inbox/, jobs.jsonl, logs."""
    return scan_folder(site, scan) / shard_name(shard)


def probe_folder(site: Site, scan: ScanRef) -> Path:
    return scan_folder(site, scan) / f"probe-{site.name}"


@dataclass(frozen=True)
class JobName:
    """What a job's name says: hpscan.<uid>.<shard>.<moves>.<attempt>, or hpscan.<uid>.probe.<site>.<n>."""

    uid: str
    shard: int | None
    moves: int = 0
    attempt: int = 1
    probe: str | None = None
    probe_round: int = 0

    def __str__(self) -> str:
        if self.probe is not None:
            return f"{JOB_PREFIX}.{self.uid}.probe.{self.probe}.{self.probe_round}"
        return f"{JOB_PREFIX}.{self.uid}.{self.shard}.{self.moves}.{self.attempt}"

    @classmethod
    def parse(cls, name: str) -> JobName | None:
        """The parts of a name hpscan gave, None for any other job's name."""
        if match := re.fullmatch(rf"{JOB_PREFIX}\.([^.]+)\.(\d+)\.(\d+)\.(\d+)", name):
            return cls(match[1], int(match[2]), int(match[3]), int(match[4]))
        if match := re.fullmatch(rf"{JOB_PREFIX}\.([^.]+)\.probe\.([a-z0-9-]+)\.(\d+)", name):
            return cls(match[1], None, probe=match[2], probe_round=int(match[3]))
        return None


def memory_megabytes(memory: str) -> int:
    """Slurm's memory notation (K, M, G, T; M when bare) in MiB, as the REST API's memory_per_node takes it."""
    number, unit = int(memory[:-1] if memory[-1].isalpha() else memory), memory[-1] if memory[-1].isalpha() else "M"
    return max(1, {"K": number // 1024, "M": number, "G": number * 1024, "T": number * 1024 * 1024}[unit.upper()])


def job_environment(spec: HPScanSpec, site: Site) -> dict[str, str]:
    """The job's environment: the site's PATH, then payload.env, then the site's env (a site admin's fix wins)."""
    env = {"PATH": slurm_of(site).path}
    env.update((var.name, var.value) for var in spec.payload.env)
    env.update((var.name, var.value) for var in site.env)
    return env


def job_script(settings: SlurmSite, command: Sequence[str], folder: Path) -> str:
    """The batch script: the site's setup lines, ``command`` in ``folder``, and its exit code left in
    ``exit-$SLURM_JOB_ID`` (a job Slurm killed leaves none: its state says why).

    The command runs in the background and the shell waits for it, also through a SIGTERM (scancel, preemption),
    which it passes on: a shell that died at once would let the job read ended (proctrack/linuxproc loses the
    orphaned runner) while the runner still records the combination in training, and the shard's next attempt
    would train that combination again. A job so stopped leaves no exit file either, as before: Slurm's state says
    why it ended (cancelled, requeued, timed out), and a requeued job keeps its id."""
    setup = "\n".join(settings.setup)
    return (
        "#!/bin/bash\n"
        "# An hpscan shard job (docs/slurm.md): the shard runner publishes through the files of this folder.\n"
        f"cd {shlex.quote(str(folder))} || exit 1\n"
        f"{setup}\n"
        "trap 'stopped=1; kill -TERM \"$runner\" 2>/dev/null' TERM\n"
        f"{shlex.join(command)} &\n"
        "runner=$!\n"
        'while :; do wait "$runner"; code=$?; kill -0 "$runner" 2>/dev/null || break; done\n'
        '[[ -z "${stopped:-}" ]] || exit "$code"\n'
        f'echo "$code" > {EXIT_PREFIX}"$SLURM_JOB_ID".tmp && mv {EXIT_PREFIX}"$SLURM_JOB_ID".tmp {EXIT_PREFIX}"$SLURM_JOB_ID"\n'
        'exit "$code"\n'
    )


def shard_command(settings: SlurmSite, spec: HPScanSpec, shard: int, folder: Path) -> list[str]:
    """The shard runner around the payload, publishing through the slurm channel (hpscan.job.slurm)."""
    return [
        settings.runner, "shard-run", "--channel", "slurm", str(folder / shard_file_name(shard)),
        "--out", str(folder), "--", *spec.payload.command,
    ]  # fmt: skip


def job_request(
    spec: HPScanSpec, site: Site, name: JobName, script: str, folder: Path, env: Mapping[str, str]
) -> dict[str, Any]:
    """The body of POST /slurm/v0.0.38/job/submit: the script and the job's resources from the site block."""
    settings = slurm_of(site)
    gres = settings.gres or (f"gpu:{spec.gpu.count}" if spec.gpu.count > 0 else None)
    tag = f"{name.attempt}" if name.probe is None else "probe"
    job: dict[str, Any] = {
        "name": str(name),
        "comment": f"hpscan scan {name.uid} shard {name.shard} attempt {tag}",
        "current_working_directory": str(folder),
        "standard_output": str(folder / "stdout-%j.txt"),
        "standard_error": str(folder / "stderr-%j.txt"),
        "environment": dict(env),
        "cpus_per_task": settings.cpus,
        "memory_per_node": memory_megabytes(settings.memory),
        "requeue": settings.requeue and name.probe is None,
        "partition": settings.partition,
        "account": settings.account,
        "qos": settings.qos,
        "time_limit": settings.time_limit_minutes,
        "gres": gres,
        "constraints": settings.constraint,
    }
    return {"script": script, "job": {key: value for key, value in job.items() if value is not None}}
