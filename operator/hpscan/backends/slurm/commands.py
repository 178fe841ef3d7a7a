"""The thin client of Slurm's commands on a login node (``sbatch``, ``squeue --json``, ``scancel``): the same four
calls as SlurmRest, for centres that run no slurmrestd (``slurm.interface: commands``; docs/slurm.md).

The commands run as whoever runs hpscan (munge on a login node), or as a token's user when one is given (SLURM_JWT,
where the centre allows JWT for its commands). ``squeue --json`` answers in slurmrestd's own format, so the jobs
read the same (SlurmJob.from_rest). sbatch has no JSON input before Slurm 23.02: the slurmrestd request body is
turned into sbatch's options (``sbatch_arguments``, pure), and its environment into ``export`` lines at the top
of the script, since ``--export`` cannot carry values holding commas.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hpscan.backends.base import batch_call
from hpscan.backends.slurm.states import SlurmJob
from hpscan.errors import BackendError, SchedulerUnavailable

TIMEOUT_SECONDS = 30.0
UNKNOWN_JOB = "Invalid job id specified"
"""scancel's words for a job slurmctld no longer holds (ended more than MinJobAge ago, or never was)."""
ENDED_JOB = "already completing or completed"
UNREACHABLE = ("Unable to contact slurm controller", "Socket timed out", "Connection refused", "Zero Bytes were")
"""Slurm's words when slurmctld does not answer (the site is Unreachable, not refusing)."""

_OPTIONS = {
    "name": "--job-name={}",
    "comment": "--comment={}",
    "current_working_directory": "--chdir={}",
    "standard_output": "--output={}",
    "standard_error": "--error={}",
    "cpus_per_task": "--cpus-per-task={}",
    "memory_per_node": "--mem={}M",  # slurmrestd's memory is in megabytes
    "partition": "--partition={}",
    "account": "--account={}",
    "qos": "--qos={}",
    "time_limit": "--time={}",  # minutes, as slurmrestd's
    "gres": "--gres={}",
    "constraints": "--constraint={}",
}
"""sbatch's option for each field of the slurmrestd job description that job_request writes (``requeue`` is a
flag of its own, ``environment`` goes into the script)."""


class SlurmCommandError(Exception):
    """A Slurm command failed (its words in the message)."""


def sbatch_arguments(job: Mapping[str, Any]) -> list[str]:
    """sbatch's options for a slurmrestd job description (the fields job_request writes; others are refused, so
    a field added there cannot be silently dropped here)."""
    unknown = sorted(set(job) - set(_OPTIONS) - {"environment", "requeue"})
    if unknown:
        raise BackendError(f"sbatch has no option for the job fields {unknown}")
    options = [
        ("--requeue" if value else "--no-requeue") if key == "requeue" else _OPTIONS[key].format(value)
        for key, value in job.items()
        if key != "environment"
    ]
    return ["--parsable", "--export=NONE", *options]


def with_environment(script: str, environment: Mapping[str, str]) -> str:
    """The script with ``export`` lines for the job's environment after its first line (the interpreter)."""
    first, _, rest = script.partition("\n")
    exports = "".join(f"export {name}={shlex.quote(value)}\n" for name, value in sorted(environment.items()))
    return f"{first}\n{exports}{rest}"


def submitted_id(output: str) -> int:
    """The job id of ``sbatch --parsable`` ("<id>" or "<id>;<cluster>")."""
    return int(output.strip().splitlines()[-1].split(";")[0])


class SlurmCommands:
    """Slurm's commands, run with this process's environment (SLURM_CONF, munge), plus SLURM_JWT when a token
    is given."""

    def __init__(self, token: str = "", environ: Mapping[str, str] | None = None) -> None:
        self.environ = dict(os.environ if environ is None else environ)
        if token:
            self.environ["SLURM_JWT"] = token

    def _run(self, what: str, argv: Sequence[str], stdin: str | None = None) -> str:
        with batch_call(self._failed(what), catching=(SlurmCommandError, OSError, subprocess.TimeoutExpired)):
            done = subprocess.run(
                argv, input=stdin, capture_output=True, text=True, env=self.environ, timeout=TIMEOUT_SECONDS
            )
            if done.returncode != 0:
                words = " ".join((done.stderr or done.stdout).split()) or f"exit {done.returncode}"
                raise SlurmCommandError(f"{argv[0]}: {words}")
            return done.stdout

    @staticmethod
    def _failed(what: str) -> Callable[[Exception], BackendError]:
        def failed(error: Exception) -> BackendError:
            words = str(error)
            if isinstance(error, SlurmCommandError) and not any(part in words for part in UNREACHABLE):
                return BackendError(f"Slurm refused {what}: {words}")
            return SchedulerUnavailable(f"Slurm did not answer while {what}: {words}")

        return failed

    def _squeue(self, what: str, *selection: str) -> list[SlurmJob]:
        answer = json.loads(self._run(what, ["squeue", "--json", "--states=all", *selection]) or "{}")
        return [SlurmJob.from_rest(entry) for entry in answer.get("jobs") or []]

    def jobs(self) -> list[SlurmJob]:
        """Every job slurmctld holds (running, pending, and ended within MinJobAge)."""
        return self._squeue("listing the jobs")

    def submit(self, body: dict[str, Any]) -> int:
        """Submit one batch job (a slurmrestd request body); its id."""
        job = body["job"]
        script = with_environment(body["script"], job.get("environment") or {})
        output = self._run(f"submitting job {job.get('name')}", ["sbatch", *sbatch_arguments(job)], stdin=script)
        return submitted_id(output)

    def job(self, job_id: int) -> SlurmJob | None:
        """One job; None when slurmctld no longer knows it. (``squeue --json`` of Slurm 22.05 ignores its
        selection options and answers every job, so the job is picked here.)"""
        jobs = self._squeue(f"looking for job {job_id}", f"--jobs={job_id}")
        return next((job for job in jobs if job.job_id == job_id), None)

    def cancel(self, job_id: int) -> None:
        """scancel: one that has ended, or that slurmctld forgot, is not an error."""
        try:
            self._run(f"cancelling job {job_id}", ["scancel", str(job_id)])
        except BackendError as error:
            if UNKNOWN_JOB not in str(error) and ENDED_JOB not in str(error):
                raise
