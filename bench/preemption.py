"""Benchmark: GPU time lost to preemption, with and without trial checkpoints (docs/checkpoints.md).

A scan of workers that pull (``hpscan run``, the local backend, the real dl1 payload on synthetic jets) whose worker
processes are killed at random, as a preempted slot or a reclaimed spot node kills them: each worker that trains
(it reported an epoch since it started) is killed with probability ``rate x dt`` in every interval ``dt`` (a Poisson
process over training time), and the local backend starts it again in its folder. ``rate`` is set so that a trial
meets ``--preemptions-per-trial`` kills on average (1 by default): that over a trial's training time (its epochs
times the epoch time a first run without preemption measured). Start-up (TensorFlow, the data: tens of seconds on
a loaded CPU) is never preempted here: it costs time, not trial-epochs, and would only dilute the count.

Without checkpoints the bench deletes the worker's checkpoint folder at each kill (a fresh slot that never got
them), so its trial starts again from epoch 0. It counts trial-epochs trained: every epoch a worker reported
(OUT/progress.jsonl: epochs trained again after a kill count again), plus, at each kill, the part of the epoch in
flight, estimated from the time since the worker's last report over the epoch time the first run measured. What
is needed is the epochs the records say; wasted = trained / needed - 1.

    .venv/bin/python bench/preemption.py                     # 4 trials x 20 epochs, 2 workers: about 10 minutes
    .venv/bin/python bench/preemption.py --preemptions-per-trial 2 --trials 8
    # last line: wasted_epochs_fraction=<with checkpoints>
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

HPSCAN = str(Path(sys.executable).parent / "hpscan")


def scan(trials: int, epochs: int, workers: int, jets: int) -> dict:
    """A scan of ``trials`` random learning rates for DL1r, pulled by ``workers`` one trial at a time."""
    return {
        "apiVersion": "hpscan.io/v1alpha1",
        "kind": "HPScan",
        "metadata": {"name": "preempted"},
        "spec": {
            "parameters": [{"name": "learning_rate", "range": {"min": 1e-4, "max": 1e-2, "scale": "log"}}],
            "sampling": {"strategy": "random", "samples": trials, "seed": 1, "trialsPerWorker": 1},
            "sharding": {"shards": workers, "pull": True},
            "retries": 20,
            "gpu": {"count": 0, "required": False},
            "payload": {
                "image": "local",
                "settings": {
                    "epochs": epochs,
                    "patience": 0,
                    "batch_size": 100,
                    "data": {"synthetic": {"jets": jets, "seed": 1}},
                },
            },
        },
    }


@dataclass
class Worker:
    """What the bench sees of one worker's folder: its epoch reports as they arrive."""

    folder: Path
    reports: int = 0
    offset: int = 0
    last_report: float = 0.0
    report_times: list[float] = field(default_factory=list)

    def read(self, now: float) -> None:
        path = self.folder / "progress.jsonl"
        if not path.exists():
            return
        with path.open("rb") as handle:
            handle.seek(self.offset)
            chunk = handle.read()
        end = chunk.rfind(b"\n") + 1
        new = len(chunk[:end].splitlines())
        self.offset += end
        if new:
            self.reports += new
            self.last_report = now
            self.report_times += [now] * new


@dataclass
class Outcome:
    wall: float
    trained: float
    needed: int
    kills: int
    trials: int
    partial: float = 0.0
    epoch_seconds: float = 0.0
    startup_seconds: float = 0.0

    @property
    def wasted(self) -> float:
        return self.trained / self.needed - 1


def payload_pids(runner: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{runner}/task/{runner}/children").read_text().split()]
    except OSError:
        return []


def run(manifest: Path, out: Path, rate: float, checkpoints: bool, epoch_seconds: float, seed: int) -> Outcome:
    """One scan; ``rate``: kills per second of a training worker (0: none)."""
    rng = random.Random(seed)
    began = time.monotonic()
    runner = subprocess.Popen(
        [HPSCAN, "run", str(manifest), "--out", str(out), "--plain"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    workers: dict[str, Worker] = {}
    started: dict[int, float] = {}  # a worker process: when the bench first saw it
    first_report: list[float] = []
    kills, partial, dt = 0, 0.0, 0.1
    while runner.poll() is None:
        now = time.monotonic()
        for folder in out.glob("work/shard-*"):
            worker = workers.setdefault(folder.name, Worker(folder))
            before = worker.reports
            worker.read(now)
            if before == 0 and worker.reports:
                first_report.append(now)
        for pid in payload_pids(runner.pid):
            started.setdefault(pid, now)
            folder = _folder_of(pid)
            worker = workers.get(folder.name) if folder else None
            if worker is None or worker.last_report <= started[pid]:
                continue  # not training yet
            if rate and rng.random() < rate * dt:
                partial += min((now - worker.last_report) / epoch_seconds, 1.0)  # the epoch in flight, in part
                _kill(pid)
                kills += 1
                if not checkpoints:
                    shutil.rmtree(worker.folder / "checkpoints", ignore_errors=True)
        time.sleep(dt)
    if runner.returncode != 0:
        raise SystemExit(f"hpscan run failed ({runner.returncode}): see {out}/work/*/payload.log")
    for worker in workers.values():
        worker.read(time.monotonic())
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    outcome = Outcome(
        wall=time.monotonic() - began,
        trained=sum(w.reports for w in workers.values()) + partial,
        needed=sum(r["epochs"] for r in records),
        kills=kills,
        trials=len(records),
        partial=partial,
    )
    gaps = [b - a for w in workers.values() for a, b in zip(w.report_times, w.report_times[1:], strict=False) if b > a]
    if gaps:
        outcome.epoch_seconds = sorted(gaps)[len(gaps) // 2]
    if first_report and started:
        outcome.startup_seconds = max(min(first_report) - min(started.values()) - outcome.epoch_seconds, 0.0)
    return outcome


def _folder_of(pid: int) -> Path | None:
    """The worker folder a payload process writes to (its ``--out`` argument)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    words = [a.decode() for a in argv]
    return Path(words[words.index("--out") + 1]) if "--out" in words else None


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it ended by itself
        os.kill(pid, signal.SIGKILL)


def describe(name: str, outcome: Outcome) -> str:
    return (
        f"{name}: {outcome.trained:.1f} trial-epochs trained for {outcome.needed} needed "
        f"({outcome.trained / outcome.needed:.3f} per epoch needed; {outcome.partial:.1f} of them epochs in flight at "
        f"a kill), {outcome.kills} preemptions "
        f"({outcome.kills / outcome.trials:.2f} per trial), {outcome.wall:.0f} s, "
        f"wasted_epochs_fraction={outcome.wasted:.3f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--jets", type=int, default=20000, help="synthetic jets (2/3 train): sets the epoch time")
    parser.add_argument("--preemptions-per-trial", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1, help="seed of the preemption times")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hpscan-preemption-") as folder:
        tmp = Path(folder)
        manifest = tmp / "scan.yaml"
        manifest.write_text(yaml.safe_dump(scan(args.trials, args.epochs, args.workers, args.jets)))
        calm = run(manifest, tmp / "calm", 0.0, True, 1.0, args.seed)
        trial_seconds = args.epochs * calm.epoch_seconds  # a trial's training time
        rate = args.preemptions_per_trial / trial_seconds
        print(
            f"no preemption: {calm.trials} trials, {calm.needed} trial-epochs in {calm.wall:.0f} s; epoch "
            f"{calm.epoch_seconds:.2f} s, worker start-up {calm.startup_seconds:.1f} s; preempting each running "
            f"worker at {rate * 3600:.0f}/h of training ({args.preemptions_per_trial:g} per trial of {trial_seconds:.0f} s)",
            flush=True,
        )
        without = run(manifest, tmp / "without", rate, False, calm.epoch_seconds, args.seed)
        print(describe("without checkpoints", without), flush=True)
        with_checkpoints = run(manifest, tmp / "with", rate, True, calm.epoch_seconds, args.seed)
        print(describe("with checkpoints", with_checkpoints), flush=True)
    print(f"wasted_epochs_fraction={with_checkpoints.wasted:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
