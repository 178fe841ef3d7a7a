"""The local backend: shards as processes on this machine (`hpscan run`), retried in a loop up to `retries`."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, ClassVar

from hpscan.api.contract import RESULTS_FILE, PayloadExit, ResultRecord, shard_file_name, shard_name
from hpscan.api.sites import Site
from hpscan.api.spec import HPScanSpec
from hpscan.api.status import ACTIVE_PHASES, FINAL_EXITS, Reason, ShardPhase, ShardStatus
from hpscan.api.trials import (
    PROGRESS_FILE,
    STOP_FILE,
    TRIALS_FILE,
    Assignment,
    JsonLines,
    Progress,
    append_lines,
    read_progress,
)
from hpscan.backends.base import Backend, ScanRef, ShardLaunch, last_line
from hpscan.core.brokering import ProbeOutcome
from hpscan.errors import BackendError
from hpscan.job.runner import RecordTail, payload_command

STOP_GRACE_SECONDS = 10.0


@dataclass
class _ShardJob:
    index: int
    shard_file: Path
    work_dir: Path
    expected: int
    tail: RecordTail
    attempts: int = 0
    process: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None
    phase: ShardPhase = ShardPhase.PENDING
    reason: str | None = None
    message: str | None = None
    seen: set[str] = field(default_factory=set)
    gpu_slot: str | None = None
    started_at: float = 0.0
    timed_out: bool = False


class LocalBackend(Backend):
    """Runs each shard's payload as a child process; its results.jsonl is the live channel."""

    name: ClassVar[str] = "local"
    pulls: ClassVar[bool] = True  # a worker's channel is the files of its work folder (hpscan.api.trials)

    def __init__(
        self,
        run_dir: Path,
        retries: int,
        env: dict[str, str] | None = None,
        gpu_slots: Sequence[str] = (),
        timeout_seconds: float | None = None,
        earlier_attempts: Mapping[int, int] | None = None,
        probe_outcome: ProbeOutcome | None = None,
    ) -> None:
        self.probe_outcome = probe_outcome or ProbeOutcome(0, "not probed")  # the machine's, see local_probe
        self.run_dir = run_dir
        self.retries = retries
        self.timeout_seconds = timeout_seconds  # per attempt, as spec.payload.timeoutSeconds
        self.earlier_attempts = dict(earlier_attempts or {})  # by shard: attempts of earlier runs (a resume)
        self.env = env or {}
        self.free_gpu_slots = list(gpu_slots)  # CUDA_VISIBLE_DEVICES values, one per concurrent shard
        self.jobs: dict[int, _ShardJob] = {}
        self.command: list[str] = []
        self.unreported: list[ResultRecord] = []
        self.progress_tails: dict[int, JsonLines] = {}

    def shard_path(self, index: int) -> Path:
        return self.run_dir / "shards" / shard_file_name(index)

    def work_dir(self, index: int) -> Path:
        return self.run_dir / "work" / shard_name(index)

    def submit(self, scan: ScanRef, spec: HPScanSpec, launches: Sequence[ShardLaunch]) -> None:
        self.command = list(spec.payload.command)
        for launch in launches:
            index = launch.shard_file.shard
            job = self.jobs.get(index)
            if job is not None and job.phase in ACTIVE_PHASES:
                continue  # idempotent
            if job is None or job.phase == ShardPhase.SUSPENDED:
                job = _ShardJob(
                    index=index,
                    shard_file=self.shard_path(index),
                    work_dir=self.work_dir(index),
                    expected=len(launch.shard_file.combinations),
                    tail=RecordTail(self.work_dir(index) / RESULTS_FILE),
                    attempts=job.attempts if job else self.earlier_attempts.get(index, 0),
                )
                self.jobs[index] = job
            self._start(job)

    def environment(self) -> dict[str, str]:
        """The payload's environment: ours, with hpscan's own bin folder on PATH (where `dl1` is installed)."""
        env = {**os.environ, **self.env}
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        return env

    def _start(self, job: _ShardJob) -> None:
        job.work_dir.mkdir(parents=True, exist_ok=True)
        env = self.environment()
        if shutil.which(self.command[0], path=env["PATH"]) is None:
            raise BackendError(
                f"payload command {self.command[0]!r} not found (spec.payload.command); is it installed?"
            )
        if self.free_gpu_slots and job.gpu_slot is None:
            job.gpu_slot = self.free_gpu_slots.pop(0)
        if job.gpu_slot is not None:
            env["CUDA_VISIBLE_DEVICES"] = job.gpu_slot
        job.attempts += 1
        job.log = (job.work_dir / "payload.log").open("ab")
        job.log.write(f"--- attempt {job.attempts} ---\n".encode())
        job.log.flush()
        job.process = subprocess.Popen(
            payload_command(self.command, job.shard_file, job.work_dir),
            stdout=job.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # Ctrl-C reaches the runner only; it stops the payloads itself
            preexec_fn=_stop_with_parent,
        )
        job.phase, job.reason, job.message = ShardPhase.RUNNING, None, None
        job.started_at, job.timed_out = time.monotonic(), False

    def _release(self, job: _ShardJob) -> None:
        if job.log is not None:
            job.log.close()
            job.log = None
        job.process = None
        if job.gpu_slot is not None:
            self.free_gpu_slots.append(job.gpu_slot)
            job.gpu_slot = None

    def _finish(self, job: _ShardJob, code: int) -> None:
        recorded = len(job.seen)
        self._release(job)
        if code == PayloadExit.OK and recorded >= job.expected:
            job.phase = ShardPhase.SUCCEEDED
            return
        if code in FINAL_EXITS:  # the same machine will not grow a GPU, nor the input mend itself, on a retry
            job.phase, job.reason = ShardPhase.FAILED, FINAL_EXITS[code]
            job.message = last_line(job.work_dir / "payload.log") or f"the payload exited with code {code}"
            return
        if job.timed_out:
            why = f"the attempt ran past spec.payload.timeoutSeconds ({self.timeout_seconds:g} s) and was stopped"
        elif code == PayloadExit.OK:
            why = f"exited 0 but recorded {recorded} of {job.expected} combinations"
        else:
            why = f"exit code {code}: {last_line(job.work_dir / 'payload.log')}"
        if job.attempts <= self.retries:
            self._start(job)
            job.reason, job.message = Reason.RETRYING, f"attempt {job.attempts - 1} failed ({why})"
        else:
            job.phase, job.reason, job.message = ShardPhase.FAILED, Reason.PAYLOAD_FAILED, why

    # workers that pull: the files of their work folders ---------------------------------------------------

    def assign(self, scan: ScanRef, shard: int, lines: Sequence[dict]) -> None:
        append_lines(self.work_dir(shard) / TRIALS_FILE, lines)

    def stop_trials(self, scan: ScanRef, shard: int, trial_ids: Sequence[str]) -> None:
        append_lines(self.work_dir(shard) / STOP_FILE, [{"id": i} for i in trial_ids])

    def fetch_progress(self, scan: ScanRef) -> list[Progress]:
        reports: list[Progress] = []
        for folder in sorted((self.run_dir / "work").glob("shard-*")):
            index = int(folder.name.removeprefix("shard-"))
            tail = self.progress_tails.setdefault(index, JsonLines(folder / PROGRESS_FILE))
            reports += read_progress(tail.read_new())
        return reports

    def assignments(self, scan: ScanRef) -> dict[int, Assignment]:
        out: dict[int, Assignment] = {}
        for folder in sorted((self.run_dir / "work").glob("shard-*")):
            assignment = Assignment()
            assignment.fold(JsonLines(folder / TRIALS_FILE).read_new())
            out[int(folder.name.removeprefix("shard-"))] = assignment
        return out

    def probe(self, scan: ScanRef, spec: HPScanSpec, site: Site | None) -> ProbeOutcome:
        return self.probe_outcome

    def poll(self, scan: ScanRef) -> dict[int, ShardStatus]:
        states = {}
        for job in self.jobs.values():
            self._enforce_timeout(job)
            if job.process is not None and (code := job.process.poll()) is not None:
                self._collect(job)
                self._finish(job, code)
            states[job.index] = ShardStatus(
                index=job.index,
                site="local",
                phase=job.phase,
                attempts=job.attempts,
                job=f"pid {job.process.pid}" if job.process is not None else None,
                reason=job.reason,
                message=job.message,
            )
        return states

    def _enforce_timeout(self, job: _ShardJob) -> None:
        """Kill an attempt that ran past the timeout; its exit is then handled like any failure (retried)."""
        if job.process is None or self.timeout_seconds is None or job.process.poll() is not None:
            return
        if time.monotonic() - job.started_at > self.timeout_seconds:
            job.timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(job.process.pid, signal.SIGKILL)
            job.process.wait()

    def _collect(self, job: _ShardJob) -> None:
        records = job.tail.read_new()
        job.seen.update(r.id for r in records)
        self.unreported.extend(records)

    def fetch_records(self, scan: ScanRef) -> list[ResultRecord]:
        for job in self.jobs.values():
            self._collect(job)
        new, self.unreported = self.unreported, []
        return new

    def unreadable(self, scan: ScanRef) -> int:
        return sum(job.tail.bad_lines for job in self.jobs.values())

    def cancel(self, scan: ScanRef, shards: Collection[int] | None = None) -> None:
        targets = [j for j in self.jobs.values() if j.process is not None and (shards is None or j.index in shards)]
        for job in targets:
            assert job.process is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(job.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for job in targets:
            assert job.process is not None
            try:
                job.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(job.process.pid, signal.SIGKILL)
                job.process.wait()
            self._collect(job)
            self._release(job)
            job.phase, job.reason, job.message = (
                ShardPhase.SUSPENDED,
                Reason.STOPPED,
                "stopped; recorded results are kept",
            )


def _stop_with_parent() -> None:
    """In the payload's process, before exec: SIGTERM it when hpscan dies (even by kill -9), so no orphan trains on
    and the next `hpscan run` of the folder is the only one writing to it (Linux; elsewhere nothing happens)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
