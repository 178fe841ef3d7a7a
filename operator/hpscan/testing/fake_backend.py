"""An in-memory backend for tests, beside the interface it fakes (as Katib ships its fake suggestion): a batch
system held in this process, registered on demand under the name ``fake`` (site block ``fake: {}``).

Each shard's job is the simulation's payload stand-in (hpscan.testing.sim.workers.SimPod: it honours the contract
payload's knobs ``exitCode``, ``failAttempts``, ``sleep``, ``epochs`` and ``trainedLog``, trains fixed shards and
workers that pull, and stops trials when told) over an in-memory channel that loses nothing. Time is virtual:
every poll is one second of the batch system, so whatever polls it (the contract suite, ``hpscan run --site``,
the operator's reconcile) drives it, and no test waits on a clock. A restarted shell is a new FakeBackend on
the same FakeBatch.

What it does not model: the site probe (its sites are NotProbed), GPUs and node selection, payload timeouts,
outages and API faults (hpscan.testing.sim has those), pods that die or are evicted, a channel that fails or
lags, real processes and files (only the trained log the knobs name is written), and a shard job's runner
(``hpscan shard-run --channel fake`` is refused).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from hpscan.api import registry
from hpscan.api.common import CamelModel
from hpscan.api.contract import ResultRecord, ShardFile
from hpscan.api.spec import HPScan, HPScanSpec
from hpscan.api.status import FINAL_EXITS, Reason, ShardPhase, ShardStatus
from hpscan.api.trials import Assignment, Progress
from hpscan.backends.base import Backend, BackendContext, ScanRef, ShardLaunch
from hpscan.testing.sim.workers import SimPod

NAME = "fake"


class FakeSite(CamelModel):
    """A queue of the in-memory fake batch system (hpscan.testing.fake_backend; for tests)."""


@dataclass
class FakeChannel:
    """One shard's channel, kept by the batch system across attempts and restarts: what SimPod reads and writes."""

    records: list[ResultRecord] = field(default_factory=list)
    lines: list[dict] = field(default_factory=list)
    stops: list[dict] = field(default_factory=list)
    progress: list[Progress] = field(default_factory=list)

    def recorded(self) -> list[ResultRecord]:
        return list(self.records)

    def publish(self, records: list[ResultRecord]) -> None:
        self.records += records

    def inbox(self) -> tuple[list[dict], list[dict]]:
        return list(self.lines), list(self.stops)

    def publish_progress(self, reports: list[Progress]) -> None:
        self.progress += reports


@dataclass
class FakeJob:
    """One shard's job: its current attempt (None once it ended or was cancelled) and its state."""

    shard_file: ShardFile
    status: ShardStatus
    retries: int
    pod: SimPod | None = None


@dataclass
class FakeBatch:
    """The batch system: jobs and channels by (scan uid, shard), shared by every FakeBackend built on it."""

    now: float = 0.0
    jobs: dict[tuple[str, int], FakeJob] = field(default_factory=dict)
    channels: dict[tuple[str, int], FakeChannel] = field(default_factory=dict)
    trained_count: Counter[str] = field(default_factory=Counter)
    """Trainings per combination id, of every scan (a combination trained twice is a bug this shows)."""

    pruned_at_rung: dict[str, tuple[int, float]] = field(default_factory=dict)
    """Trials a worker stopped at an ASHA rung itself: (epoch, value)."""

    def trained(self, combination_id: str, shard: int, epochs: int = 0) -> None:  # SimPod's callback
        self.trained_count[combination_id] += 1

    def trained_epoch(self, combination_id: str, shard: int, epoch: int) -> None:  # SimPod's callback
        pass  # the fake's jobs keep no checkpoints: every start trains from epoch 0

    def resumed(self, combination_id: str, shard: int, epoch: int) -> None:  # SimPod's callback (never called)
        pass

    def stopped_at_rung(self, combination_id: str, epoch: int, value: float) -> None:  # SimPod's callback
        self.pruned_at_rung[combination_id] = (epoch, value)

    def channel(self, uid: str, shard: int) -> FakeChannel:
        return self.channels.setdefault((uid, shard), FakeChannel())

    def start(self, uid: str, job: FakeJob) -> None:
        """A new attempt of the job: a pod that carries on from what the channel says earlier attempts recorded."""
        job.status = job.status.model_copy(update={"attempts": job.status.attempts + 1, "phase": ShardPhase.RUNNING})
        pod = SimPod(
            shard=job.shard_file.shard,
            channel=self.channel(uid, job.shard_file.shard),
            epochs=1,
            epoch_seconds=1.0,
            started_at=self.now,
            world=self,
            attempt=job.status.attempts,
        )
        pod.start_with(job.shard_file, [])
        job.pod = pod

    def tick(self) -> None:
        """One second: every running attempt trains, and those that exit end their job or are retried."""
        self.now += 1
        for (uid, _shard), job in self.jobs.items():
            if job.pod is not None and (code := job.pod.tick(self.now)) is not None:
                self._ended(uid, job, code)

    def _ended(self, uid: str, job: FakeJob, code: int) -> None:
        said = job.pod.said[-1] if job.pod is not None and job.pod.said else f"exit code {code}"
        job.pod = None
        if code == 0:
            update: dict[str, Any] = {"phase": ShardPhase.SUCCEEDED, "reason": None, "message": None}
        elif code in FINAL_EXITS:  # a retry would fail the same way
            update = {"phase": ShardPhase.FAILED, "reason": FINAL_EXITS[code], "message": said}
        elif job.status.attempts <= job.retries:
            message = f"attempt {job.status.attempts} failed ({said})"
            job.status = job.status.model_copy(update={"reason": Reason.RETRYING, "message": message})
            self.start(uid, job)
            return
        else:
            update = {"phase": ShardPhase.FAILED, "reason": Reason.PAYLOAD_FAILED, "message": said}
        job.status = job.status.model_copy(update=update)


class FakeBackend(Backend):
    """The backend interface over a FakeBatch (see the module docstring for what it models and what not)."""

    name: ClassVar[str] = NAME
    pulls: ClassVar[bool] = True  # the in-memory channel carries trials, stops and progress

    def __init__(self, batch: FakeBatch | None = None) -> None:
        self.batch = batch if batch is not None else FakeBatch()
        self._handed: set[tuple[str, str]] = set()  # (uid, record id): each record handed over once per backend
        self._reported: dict[str, int] = {}  # uid -> progress reports handed over

    def _keys(self, scan: ScanRef) -> list[tuple[str, int]]:
        return sorted(key for key in self.batch.channels.keys() | self.batch.jobs.keys() if key[0] == scan.uid)

    def submit(self, scan: ScanRef, spec: HPScanSpec, launches: Sequence[ShardLaunch]) -> None:
        for launch in launches:
            key = (scan.uid, launch.shard_file.shard)
            held = self.batch.jobs.get(key)
            if held is not None and held.status.moves == launch.moves and held.status.phase != ShardPhase.SUSPENDED:
                continue  # idempotent: the job exists
            site = launch.site.name if launch.site else None
            status = ShardStatus(index=launch.shard_file.shard, site=site, moves=launch.moves, job=f"fake-{key[1]}")
            job = self.batch.jobs[key] = FakeJob(launch.shard_file, status, retries=spec.retries)
            self.batch.start(scan.uid, job)

    def poll(self, scan: ScanRef) -> dict[int, ShardStatus]:
        self.batch.tick()
        return {shard: job.status for (uid, shard), job in self.batch.jobs.items() if uid == scan.uid}

    def fetch_records(self, scan: ScanRef) -> list[ResultRecord]:
        new = []
        for key in self._keys(scan):
            for record in self.batch.channel(*key).records:
                if (scan.uid, record.id) not in self._handed:
                    self._handed.add((scan.uid, record.id))
                    new.append(record)
        return new

    def assign(self, scan: ScanRef, shard: int, lines: Sequence[dict]) -> None:
        self.batch.channel(scan.uid, shard).lines.extend(lines)

    def stop_trials(self, scan: ScanRef, shard: int, trial_ids: Sequence[str]) -> None:
        self.batch.channel(scan.uid, shard).stops.extend({"id": trial_id} for trial_id in trial_ids)

    def fetch_progress(self, scan: ScanRef) -> list[Progress]:
        reports = [report for key in self._keys(scan) for report in self.batch.channel(*key).progress]
        new, self._reported[scan.uid] = reports[self._reported.get(scan.uid, 0) :], len(reports)
        return new

    def assignments(self, scan: ScanRef) -> dict[int, Assignment]:
        held = {}
        for _uid, shard in self._keys(scan):
            if lines := self.batch.channel(scan.uid, shard).lines:
                held[shard] = Assignment()
                held[shard].fold(lines)
        return held

    def cancel(self, scan: ScanRef, shards: Collection[int] | None = None) -> None:
        """The jobs go (the trial in training is lost); what their channels hold stays."""
        for (uid, shard), job in self.batch.jobs.items():
            if uid == scan.uid and (shards is None or shard in shards) and job.status.phase in ACTIVE:
                job.pod = None
                job.status = job.status.model_copy(update={"phase": ShardPhase.SUSPENDED, "reason": None})

    def forget(self, scan: ScanRef) -> None:
        for key in self._keys(scan):
            self.batch.jobs.pop(key, None)
            self.batch.channels.pop(key, None)


ACTIVE = frozenset({ShardPhase.PENDING, ShardPhase.RUNNING})


def open_channel(shard_file: Path) -> Any:
    """The registry's in-job channel: a fake job runs in memory, never through ``hpscan shard-run``."""
    raise registry.RegistryError("the fake backend's jobs run in memory: it has no channel for hpscan shard-run")


@contextmanager
def registered(batch: FakeBatch | None = None) -> Iterator[FakeBatch]:
    """The fake backend in the registry under ``fake`` while the block runs (so a site ``{name, fake: {}}``
    validates, the operator builds it, and ``hpscan run --site`` submits to it), every backend built on ``batch``;
    unregistered afterwards."""
    batch = batch if batch is not None else FakeBatch()

    def create(context: BackendContext) -> FakeBackend:
        return FakeBackend(batch)

    def create_here(scan: HPScan, run_dir: Path, poll_seconds: float) -> tuple[FakeBackend, ScanRef]:
        return FakeBackend(batch), ScanRef(name=scan.metadata.name, namespace="local", uid=f"fake-{scan.metadata.name}")

    registry.register(
        registry.BackendEntry(
            name=NAME,
            site_model=FakeSite,
            description="Run shards in an in-memory fake batch system (tests only).",
            factory=create,
            channel=open_channel,
            here_factory=create_here,
        )
    )
    try:
        yield batch
    finally:
        registry.unregister(NAME)
