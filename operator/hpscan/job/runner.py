"""The shard runner: runs a payload on one shard file and carries its records to the backend's live channel.

It is owned by hpscan, not by the payload, so every payload that writes ``results.jsonl`` gets live progress
for free: the runner tails the file while the payload runs and publishes each new record (Kubernetes: a
ConfigMap the operator watches; HTCondor: chirp job attributes; local: the file itself is read by the runner).
The payload's exit code is passed through unchanged (0 ok, 3 GPU unavailable, other: failed).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from hpscan.api.contract import (
    CHECKPOINTS_DIR,
    RESULTS_FILE,
    ResultRecord,
    ShardFile,
    complete_lines,
    parse_records,
)
from hpscan.api.trials import PROGRESS_FILE, STOP_FILE, TRIALS_FILE, JsonLines, Progress, append_lines, read_progress
from hpscan.errors import BackendError
from hpscan.job.checkpoints import CheckpointSync

CHECKPOINT_EXIT_CODE = 85
"""The exit code that says "a checkpoint was saved, keep it and start me again" (HTCondor's checkpoint_exit_code;
85 is ERESTART on Linux, as HTCondor's manual suggests). No payload exit is mapped to it."""

CHECKPOINT_SECONDS_ENV = "HPSCAN_CHECKPOINT_SECONDS"
"""How often, at most, a runner with a checkpoint exit code ends for a checkpoint: seconds of training, from the
attempt's first checkpoint (default 1800 s). Each end costs the payload's start (TensorFlow, the data) and the
checkpoint's transfer."""


@dataclass(frozen=True)
class CheckpointExit:
    """Ending the runner with ``code`` once the payload saved a checkpoint ``every_seconds`` after the attempt's
    first one: the batch system keeps the checkpoint folder and starts the runner again (HTCondor's
    self-checkpointing), so an evicted job resumes from it on any slot."""

    code: int = CHECKPOINT_EXIT_CODE
    every_seconds: float = 1800.0


CHECKPOINT_SETTLE_SECONDS = 0.3
"""How long the newest checkpoint file must be left alone before the runner stops the payload: the trials of a fused
group save one after the other within milliseconds, and a stop between two of them leaves them an epoch apart
(they then resume, and train, as two groups)."""


def checkpoint_due(first_saved: float | None, now: float, every_seconds: float, newest_checkpoint: float) -> bool:
    """Whether to end for a checkpoint now: ``every_seconds`` passed since the attempt's first checkpoint
    (``first_saved``; None: it saved none yet, so an end would keep nothing and an attempt's start-up never
    counts), and the payload's saving has settled (or, with epochs shorter than that, twice the interval passed)."""
    if first_saved is None or now - first_saved < every_seconds:
        return False
    return now - newest_checkpoint >= CHECKPOINT_SETTLE_SECONDS or now - first_saved >= 2 * every_seconds


def newest_checkpoint(out_dir: Path) -> float | None:
    """When the payload last saved a checkpoint (the newest file's mtime in OUT/checkpoints/), None if never."""
    times = []
    for path in (out_dir / CHECKPOINTS_DIR).glob("*/*"):
        try:
            times.append(path.stat().st_mtime)
        except FileNotFoundError:
            continue  # replaced or deleted while looked at
    return max(times, default=None)


class CheckpointWatch:
    """Whether an attempt's payload saved enough since it started to end for a checkpoint (``due``)."""

    def __init__(self, checkpoint_exit: CheckpointExit, out_dir: Path, started: float) -> None:
        self.exit, self.out_dir, self.started = checkpoint_exit, out_dir, started
        self.first_saved: float | None = None
        (out_dir / CHECKPOINTS_DIR).mkdir(
            exist_ok=True
        )  # HTCondor holds a job whose checkpoint list names a missing file

    def due(self, now: float) -> bool:
        newest = newest_checkpoint(self.out_dir)
        if newest is None or newest <= self.started:
            return False  # only an earlier attempt's: nothing new to keep
        self.first_saved = self.first_saved or newest
        return checkpoint_due(self.first_saved, now, self.exit.every_seconds, newest)


def payload_command(command: Sequence[str], shard_file: Path, out_dir: Path) -> list[str]:
    """The payload's command line: spec.payload.command with the shard file and ``--out DIR`` appended."""
    return [*command, str(shard_file), "--out", str(out_dir)]


class RecordTail:
    """Reads the records appended to a results file since the last call; never returns a half-written line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.bad_lines = 0

    def read_new(self) -> list[ResultRecord]:
        lines, self.offset = complete_lines(self.path, self.offset)
        records, problems = parse_records(lines)
        self.bad_lines += len(problems)
        return records


class LiveChannel(Protocol):
    """Where a shard's records go while it runs."""

    def recorded(self) -> list[ResultRecord]:
        """Records earlier attempts of this shard published (a retried job starts from them)."""
        ...

    def publish(self, records: list[ResultRecord]) -> None:
        """Send new records; called every poll, often with none (a channel that holds records it could not send
        sends them then). An optional ``flush()`` is called once the payload ended: send what is held, or raise."""
        ...


class PullChannel(Protocol):
    """A live channel that also carries a pulling worker's trials (ShardFile.pull): hpscan writes the worker's
    trials.jsonl and stop.jsonl lines into it, the worker's per-epoch reports go back through it."""

    def inbox(self) -> tuple[list[dict], list[dict]]:
        """Every trials.jsonl line and every stop.jsonl line hpscan has written for this worker so far, in order."""
        ...

    def publish_progress(self, reports: list[Progress]) -> None: ...


class PullBridge:
    """Carries a pulling worker's lines between its channel and the payload's files (hpscan.api.trials), so the
    payload reads and writes plain files whatever batch system runs it. Lines already in the files (an earlier
    attempt in the same folder) are not written twice: the channel's lists only grow, so a count says where
    the files are."""

    def __init__(self, channel: PullChannel, out_dir: Path) -> None:
        self.channel = channel
        self.trials, self.stops = out_dir / TRIALS_FILE, out_dir / STOP_FILE
        self.written = [self._lines(self.trials), self._lines(self.stops)]
        self.progress = JsonLines(out_dir / PROGRESS_FILE)

    @staticmethod
    def _lines(path: Path) -> int:
        return len(JsonLines(path).read_new())

    def carry(self) -> None:
        try:
            trial_lines, stop_lines = self.channel.inbox()
        except Exception as error:  # a channel that does not answer now: the worker goes on with what it holds
            sys.stderr.write(f"hpscan: could not read new trials ({error})\n")
        else:
            for index, (path, lines) in enumerate(((self.trials, trial_lines), (self.stops, stop_lines))):
                append_lines(path, lines[self.written[index] :])
                self.written[index] = max(self.written[index], len(lines))
        if reports := read_progress(self.progress.read_new()):
            try:
                self.channel.publish_progress(reports)
            except Exception as error:  # early stopping waits; the trial's record still comes
                sys.stderr.write(f"hpscan: could not publish progress ({error})\n")


def pull_bridge(channel: LiveChannel, shard_file: Path, out_dir: Path) -> PullBridge | None:
    """The bridge of a pulling worker's shard file, or None for a shard with a fixed list. A channel that cannot
    carry trials is refused at the start (the operator refuses such plans before submitting, too)."""
    try:
        pulls = ShardFile.model_validate_json(shard_file.read_bytes()).pull
    except (OSError, ValueError):
        return None  # the payload refuses an unreadable shard file itself (exit 2)
    if not pulls:
        return None
    if not hasattr(channel, "inbox"):
        raise BackendError(f"the {type(channel).__name__} cannot carry trials to a worker that pulls them")
    return PullBridge(channel, out_dir)  # type: ignore[arg-type]


class StdoutChannel:
    """Prints each record as one JSON line prefixed ``hpscan-record``: any log collector carries it."""

    prefix = "hpscan-record "

    def recorded(self) -> list[ResultRecord]:
        return []  # stdout keeps no memory: a local re-run resumes from its own results.jsonl

    def publish(self, records: list[ResultRecord]) -> None:
        for record in records:
            sys.stdout.write(self.prefix + json.dumps(record.to_wire()) + "\n")
        sys.stdout.flush()


def seed_results(results: Path, records: list[ResultRecord]) -> None:
    """Add records of earlier attempts to results.jsonl, so the payload skips them (the contract's resume)."""
    if not records:
        return
    held = {r.id for r in RecordTail(results).read_new()}
    with results.open("a", encoding="utf-8") as handle:
        for record in records:
            if record.id not in held:
                handle.write(json.dumps(record.to_wire()) + "\n")


def exit_status(returncode: int) -> int:
    """The payload's exit code as a shell gives it: 128 + N for a payload killed by signal N (Popen says -N, which
    as the runner's own exit status would read 256 - N: 247 for a payload the kernel's OOM killer took)."""
    if returncode >= 0:
        return returncode
    name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else f"signal {-returncode}"
    print(f"hpscan shard-run: the payload was killed by {name}", file=sys.stderr)
    return 128 - returncode


def run_shard(
    command: Sequence[str],
    shard_file: Path,
    out_dir: Path,
    channel: LiveChannel,
    poll_seconds: float = 1.0,
    keep_models: Callable[[list[ResultRecord]], None] | None = None,
    checkpoint_exit: CheckpointExit | None = None,
    checkpoints: CheckpointSync | None = None,
) -> int:
    """Run the payload to completion, publishing records as they appear; returns the payload's exit code.

    ``keep_models`` (e.g. job.store.ModelUploader) sees each batch of new records once it is published (and an
    empty batch at the end); it must not raise: a store's failure costs no record. With ``checkpoint_exit`` the
    runner stops the payload once a checkpoint is due, publishes what it recorded, and returns that code.
    ``checkpoints`` (the store's copy of OUT/checkpoints/) restores before the payload starts, and syncs after each
    publishing, before the models (the upload at the end, e.g. at SIGTERM, must fit in the pod's grace period)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    watch = CheckpointWatch(checkpoint_exit, out_dir, time.time()) if checkpoint_exit else None
    results = out_dir / RESULTS_FILE
    seed_results(results, channel.recorded())
    if checkpoints is not None:
        checkpoints.restore(record.id for record in RecordTail(results).read_new())  # before the payload looks
    tail = RecordTail(results)
    tail.read_new()  # what was seeded is published already
    bridge = pull_bridge(channel, shard_file, out_dir)
    if bridge is not None:
        bridge.carry()  # the first trials are there when the payload looks
    process = subprocess.Popen(payload_command(command, shard_file, out_dir))
    stopped: list[int] = []

    def forward(signum: int, _frame: object) -> None:  # let the payload stop cleanly on SIGTERM
        stopped.append(signum)
        process.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:

        def carry(records: list[ResultRecord], last: bool = False) -> None:
            channel.publish(records)
            if last and (flush := getattr(channel, "flush", None)) is not None:
                flush()  # what a failed send left: the job must not end well without it
            if checkpoints is not None:
                checkpoints.sync(records, last)
            if keep_models is not None and (records or last):  # after publishing: a slow store never delays a record
                keep_models(records)

        while process.poll() is None:
            carry(tail.read_new())
            if bridge is not None:
                bridge.carry()
            if watch is not None and watch.due(time.time()):
                _stop(process)
                carry(tail.read_new(), last=True)
                print(f"hpscan shard-run: checkpoint saved, ending with {watch.exit.code}", file=sys.stderr)
                return watch.exit.code
            time.sleep(poll_seconds)
        carry(tail.read_new(), last=True)  # the last records, and a last try for models whose upload failed
        if bridge is not None:
            bridge.carry()  # the last epochs
        if stopped and (send := getattr(channel, "send_checkpoints", None)) is not None:
            send(out_dir / CHECKPOINTS_DIR)  # stopped from outside (a removed job): its output may not go back
        return exit_status(process.returncode)
    except BaseException:  # the channel gave up (or the runner was interrupted): the payload does not outlive it
        _stop(process)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        # HTCondor's output list names it: a payload that removed it would have the job held instead of ended
        (out_dir / CHECKPOINTS_DIR).mkdir(exist_ok=True)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """End the payload: SIGTERM, SIGKILL after 30 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
