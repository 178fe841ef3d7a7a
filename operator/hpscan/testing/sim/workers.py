"""Simulated shard pods: ``hpscan shard-run`` with a payload that trains like dl1, over the real job-side channel.

The runner part keeps hpscan.job.runner's rules: publish is called every poll (the channel keeps what a failed
patch left and raises only when it gives up: the attempt ends), the payload's end waits for flush, the inbox is read and progress sent every poll (a
failure there is only said, the worker goes on with what it holds). The payload part keeps dl1's: a fixed shard
trains its combinations not yet recorded; a worker that pulls trains its trials in hand-out order, skips withdrawn
ones, reports every epoch, honours a stop at the next epoch boundary (one in the last epoch comes too late), stops a
trial itself at an ASHA rung's epoch when the newest thresholds it read say so (hpscan.api.trials.stops_at_rung), and
exits 0 once it read the end line and recorded every trial it holds. Like dl1 it keeps each unfinished trial's
state at its last epoch boundary (``checkpoints``: its OUT/checkpoints/), drops it with the trial's record, and a
trial it starts with a checkpoint in hand resumes at that epoch (its record's resumedFrom lists each resume). Where
the checkpoints go when the pod ends is the batch system's (sim.condor, sim.kubelet). What it leaves out: fused
groups (a group of four behaves as four trials in a row here), real files.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hpscan.api.contract import Combination, ResultRecord
from hpscan.api.trials import Assignment, Progress, stops_at_rung


def loss_of(combination: Combination, epoch: int, epochs: int) -> float:
    """A made-up validation loss that falls with the epochs and depends on the parameters only."""
    digest = hashlib.sha256(repr(sorted(combination.parameters.items())).encode()).digest()
    final = 0.4 + int.from_bytes(digest[:4], "big") / 2**32
    return round(final + 0.3 * (epochs - epoch) / max(epochs, 1), 6)


def probe_words(env: dict[str, Any]) -> tuple[int, str]:
    """The site probe's stand-in (no GPU here): CONTRACT_GPU_CHECK_EXIT's code (0 when unset), as
    tests/support/payloads/contract_payload.gpu_check says it."""
    code = int(env.get("CONTRACT_GPU_CHECK_EXIT") or 0)
    return (
        code,
        "gpu-check: 1 GPU usable (stand-in)" if code == 0 else f"gpu-check: no usable GPU (stand-in, exit {code})",
    )


@dataclass
class Training:
    combination: Combination
    epoch: int = 0
    next_epoch_at: float = 0.0
    resumed: tuple[int, ...] = ()  # the epochs it resumed at, this start's included


@dataclass(frozen=True)
class Checkpoint:
    """A trial's state at an epoch boundary, and the resumes that state went through (dl1's state.npz)."""

    epoch: int
    resumed: tuple[int, ...] = ()


@dataclass
class SimPod:
    """One attempt of one shard Job."""

    shard: int
    channel: Any  # hpscan.job.configmap.ConfigMapChannel over the simulated API
    epochs: int
    epoch_seconds: float
    started_at: float
    world: Any
    pull: bool = False
    todo: list[Combination] = field(default_factory=list)
    assignment: Assignment = field(default_factory=Assignment)
    stops: set[str] = field(default_factory=set)
    done: set[str] = field(default_factory=set)
    unpublished: list[ResultRecord] = field(default_factory=list)
    results: list[ResultRecord] = field(default_factory=list)  # its results.jsonl (the output sandbox)
    reports: list[Progress] = field(default_factory=list)
    current: Training | None = None
    exit_code: int | None = None
    started: bool = False  # whether its first reads went through (Kubernetes: ConfigMapChannel.start)
    attempt: int = 1
    knobs: dict[str, Any] | None = None  # settings.contractPayload: behave as tests/support/payloads/contract_payload
    trained_now: int = 0  # trials this attempt trained
    said: list[str] = field(default_factory=list)
    checkpoints: dict[str, Checkpoint] = field(default_factory=dict)  # its OUT/checkpoints/: trial -> state

    def start(self, checkpoints: dict[str, Checkpoint] | None = None) -> None:
        """What shard-run does first on Kubernetes: read the pages (the shard file, earlier attempts' records);
        raises on failure. ``checkpoints``: what the runner restored from the store."""
        pages = self.channel.pages()
        self.start_with(pages.shard_file, [], checkpoints)

    def start_with(
        self, shard_file: Any, carried: list[ResultRecord], checkpoints: dict[str, Checkpoint] | None = None
    ) -> None:
        """Start on a shard file, with the records its input sandbox carried (results.jsonl) and those the channel
        says earlier attempts recorded (seed_results: both are in results.jsonl, so neither is trained or
        published again), and the checkpoints its folder holds."""
        self.pull = bool(shard_file.pull)
        known = {r.id: r for r in [*carried, *self.channel.recorded()]}
        self.results = list(known.values())
        self.done = set(known)
        self.checkpoints = {t: c for t, c in (checkpoints or {}).items() if t not in self.done}
        self.todo = [c for c in shard_file.combinations if c.id not in self.done]
        self.knobs = shard_file.settings.get("contractPayload")
        if self.knobs is not None:  # the backend contract suite's payload: its epochs, its pace, its exits
            self.epochs = int(self.knobs.get("epochs", 3)) if self.pull else 1
            self.epoch_seconds = max(1.0, float(self.knobs.get("sleep", 0.0)) / self.epochs)
        if self.pull:
            self._carry()

    def _carry(self) -> None:
        """PullBridge.carry: new inbox lines in, progress out; failures only said."""
        try:
            trials, stops = self.channel.inbox()
        except Exception as error:
            self.said.append(f"could not read new trials ({error})")
        else:
            fresh = Assignment()
            fresh.fold(trials)
            self.assignment = fresh
            self.stops |= {str(line["id"]) for line in stops if "id" in line}
        if self.reports:
            try:
                self.channel.publish_progress(self.reports)
            except Exception as error:
                self.said.append(f"could not publish progress ({error})")
            self.reports = []

    def _next_trial(self) -> Combination | None:
        if not self.pull:
            return self.todo.pop(0) if self.todo else None
        for trial in self.assignment.trials.values():
            if trial.id not in self.done:
                return trial
        return None

    def tick(self, now: float) -> int | None:
        """One second of the pod's life; the exit code once it ended."""
        if self.exit_code is not None:
            return self.exit_code
        if self.knobs is not None and self.knobs.get("exitCode") is not None:
            self.exit_code = int(self.knobs["exitCode"])
            self.said.append(f"exiting with {self.exit_code} as asked")
            return self.exit_code
        if self.pull:
            self._carry()
        if self.current is not None and self.pull and self.current.combination.id in self.assignment.withdrawn:
            self.current = None  # taken back (dl1 drops a withdrawn trial at the next epoch boundary)
        if self.current is None:
            trial = self._next_trial()
            fail_first = int(((self.knobs or {}).get("failAttempts") or {}).get(str(self.shard), 0))
            if trial is not None and self.attempt <= fail_first and self.trained_now == 1:
                self.said.append(f"attempt {self.attempt}: simulated crash")
                self.exit_code = 1
                return 1
            if trial is not None:
                self.current = self._begin(trial, now)
        if self.current is not None and now >= self.current.next_epoch_at:
            self._epoch(now)
        batch, self.unpublished = self.unpublished, []
        try:  # run_shard: publish every poll (the channel sends again what a failed patch left)
            self.channel.publish(batch)
        except Exception as error:  # the channel gave up: the attempt ends, the Job retries it
            self.said.append(str(error))
            self.exit_code = 1
            return 1
        flushed = not (hasattr(self.channel, "flush") and self.channel.unsent)
        if self.current is None and self._finished() and flushed:
            self.exit_code = 0  # run_shard's flush: the job never ends well with records unsent
        return self.exit_code

    def _begin(self, trial: Combination, now: float) -> Training:
        """A trial's training: from its checkpoint's epoch when the folder holds one (dl1's resume), else epoch 0."""
        held = self.checkpoints.get(trial.id)
        if held is None or held.epoch <= 0:
            return Training(trial, 0, now + self.epoch_seconds)
        self.world.resumed(trial.id, self.shard, held.epoch)
        self.said.append(f"resuming {trial.id} at epoch {held.epoch} from its checkpoint")
        return Training(trial, held.epoch, now + self.epoch_seconds, (*held.resumed, held.epoch))

    def _epoch(self, now: float) -> None:
        assert self.current is not None
        run = self.current
        run.epoch += 1
        run.next_epoch_at = now + self.epoch_seconds
        self.world.trained_epoch(run.combination.id, self.shard, run.epoch)
        value = loss_of(run.combination, run.epoch, self.epochs)
        self.reports.append(Progress(id=run.combination.id, epoch=run.epoch, metrics={"val_loss": value}))
        at_rung = self.pull and stops_at_rung(self.assignment.rungs, run.epoch, {"val_loss": value})
        stopped = (run.combination.id in self.stops or at_rung) and run.epoch < self.epochs
        if stopped and at_rung and run.combination.id not in self.stops:
            self.world.stopped_at_rung(run.combination.id, run.epoch, value)
        if run.epoch < self.epochs and not stopped:
            self.checkpoints[run.combination.id] = Checkpoint(run.epoch, run.resumed)  # at the epoch boundary
            return
        self.checkpoints.pop(run.combination.id, None)  # dl1 deletes it once the record is appended
        record = ResultRecord(
            id=run.combination.id,
            shard=self.shard,
            parameters=run.combination.parameters,
            metrics={"val_loss": value},
            status="pruned" if stopped else "succeeded",
            epochs=run.epoch,
            max_epochs=self.epochs,
            finished_at=datetime.fromtimestamp(now, UTC),
            resumed_from=list(run.resumed) or None,
        )
        self.world.trained(run.combination.id, self.shard, run.epoch)
        self.trained_now += 1
        if (self.knobs or {}).get("trainedLog"):
            with Path(self.knobs["trainedLog"]).open("a") as log:  # type: ignore[index]
                log.write(run.combination.id + "\n")
        self.done.add(run.combination.id)
        self.unpublished.append(record)
        self.results.append(record)
        self.current = None

    def _finished(self) -> bool:
        if not self.pull:
            return not self.todo
        held = [t for t in self.assignment.trials if t not in self.done]
        return self.assignment.ended and not held

    def interrupted(self) -> list[str]:
        """What this pod loses when it dies: the trial in training, and the records not sent yet (they were only in
        its results.jsonl, an emptyDir)."""
        unsent = getattr(self.channel, "unsent", {}) if hasattr(self.channel, "flush") else {}
        lost = [r.id for r in self.unpublished] + list(unsent)
        return lost + ([self.current.combination.id] if self.current is not None else [])
