"""Benchmark: GPU time lost to preemption, with and without trial checkpoints (docs/checkpoints.md).

A scan of workers that pull (``hpscan run``, the real dl1 payload on synthetic jets) whose workers are preempted at
random, as a preempted slot or a reclaimed spot node preempts them: each worker that trains (it reported an epoch
since its payload started) is preempted with probability ``rate x dt`` in every interval ``dt`` (a Poisson process
over training time). ``rate`` is set so that a trial meets ``--preemptions-per-trial`` preemptions on average (1 by
default): that over a trial's training time (its epochs times the epoch time). Start-up (TensorFlow, the data: tens
of seconds on a loaded CPU) is never preempted here: it costs time, not trial-epochs, and would only dilute the count.

``--backend local`` (the default): the local backend's worker processes, killed (SIGKILL); the local backend starts
each again in its folder. The epoch time comes from a first run without preemption. Without checkpoints the bench
deletes the worker's checkpoint folder at each kill (a fresh slot that never got them), so its trial starts again
from epoch 0.

``--backend htcondor``: the personal HTCondor pool (``make condor``, with your ports exported: cluster/condor/),
``hpscan run --site pool``. A running job is preempted as a pool does it: ``condor_vacate_job`` (SIGTERM to the job,
which goes back to idle and is matched again, in a new sandbox). With checkpoints the vacated job's sandbox,
its trials' newest checkpoints included, goes to the access point (its output, ON_EXIT_OR_EVICT) and on to the next
slot; the shard runner also ends with 85 (HTCondor's self-checkpointing) every ``--checkpoint-seconds`` of training
(default: the runner's, 1800 s). Without, the runner never ends for one (HPSCAN_CHECKPOINT_SECONDS of a billion) and
the bench clears the trials' checkpoint folders in the sandbox just before it vacates, so a vacated job starts its
trial again from epoch 0. The epoch time is measured in the run itself (the median time
between a worker's epoch reports; nothing is preempted before the first is known), so there is no first run.

It counts trial-epochs trained: every epoch a worker reported (its OUT/progress.jsonl: epochs trained again after a
preemption count again), plus, for each payload that stopped mid-trial (preempted, or stopped by the runner for an
exit with 85), the part of the epoch in flight, from the time between the worker's last report and the payload's
end over the epoch time. What is needed is the epochs the records say; wasted = trained / needed - 1.

    .venv/bin/python bench/preemption.py                     # 4 trials x 20 epochs, 2 workers: about 10 minutes
    .venv/bin/python bench/preemption.py --preemptions-per-trial 2 --trials 8
    .venv/bin/python bench/preemption.py --backend htcondor  # 4 trials x 20 epochs on the pool: about 15 minutes
    # last line: wasted_epochs_fraction=<with checkpoints>
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

HPSCAN = str(Path(sys.executable).parent / "hpscan")
REPO = Path(__file__).resolve().parents[1]
NO_CHECKPOINT_EXITS = "1000000000"
"""HPSCAN_CHECKPOINT_SECONDS of a pool job without self-checkpointing: the shard runner never ends for one."""


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
    last_epoch: int = 0
    report_times: list[list[float]] = field(default_factory=lambda: [[]])  # one list per payload process

    def restarted(self) -> None:
        """A new payload process in this folder (after an exit for a checkpoint): its start-up is no epoch."""
        self.report_times.append([])

    def read(self, now: float) -> None:
        try:
            with (self.folder / "progress.jsonl").open("rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except OSError:
            return  # none yet, or the sandbox is gone
        end = chunk.rfind(b"\n") + 1
        lines = chunk[:end].splitlines()
        self.offset += end
        if lines:
            self.reports += len(lines)
            self.last_report = now
            self.report_times[-1] += [now] * len(lines)
            with contextlib.suppress(ValueError, KeyError):
                self.last_epoch = int(json.loads(lines[-1])["epoch"])

    def training(self, since: float, epochs: int) -> bool:
        """Whether it trains: it reported an epoch since ``since`` (its payload's start; before that TensorFlow and
        the data load) that is not its trial's last (after that the trial is evaluated and recorded)."""
        return self.last_report > since and self.last_epoch < epochs


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
    resumed: int = 0
    checkpoint_exits: int = 0

    @property
    def wasted(self) -> float:
        return self.trained / self.needed - 1


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def argv_of(pid: int) -> list[str]:
    try:
        return [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")]
    except OSError:
        return []


def alive(pid: int) -> bool:
    """Running, not a zombie its parent has yet to reap."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def folder_of(pid: int) -> Path | None:
    """The worker folder a payload process writes to (its ``--out`` argument, from its working directory)."""
    words = argv_of(pid)
    if "--out" not in words:
        return None
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd")) / words[words.index("--out") + 1]
    except OSError:
        return None


class Local:
    """The local backend: its worker processes are the payloads `hpscan run` starts; a preemption is a SIGKILL."""

    name = "local"

    def command(self, manifest: Path, out: Path) -> tuple[list[str], dict[str, str]]:
        return [HPSCAN, "run", str(manifest), "--out", str(out), "--plain"], dict(os.environ)

    def payloads(self, runner: int) -> dict[int, Path]:
        return {pid: folder for pid in children(runner) if (folder := folder_of(pid)) is not None}

    def preempt(self, pid: int, folder: Path, checkpoints: bool) -> None:
        with contextlib.suppress(ProcessLookupError):  # it ended by itself
            os.kill(pid, signal.SIGKILL)
        if not checkpoints:
            shutil.rmtree(folder / "checkpoints", ignore_errors=True)

    def checkpoint_exits(self, out: Path) -> int:
        return 0


class Pool:
    """The personal HTCondor pool (its daemons and job sandboxes on this machine): `hpscan run --site pool`; the
    payloads are the children of the shard runners in the pool's execute folder; a preemption is condor_vacate_job."""

    name = "htcondor"

    def __init__(self, checkpoint_seconds: float | None) -> None:
        self.dir = Path(os.environ.get("HPSCAN_CONDOR_DIR", REPO / ".condor")).resolve()
        self.bin = self.dir / "release" / "bin"
        self.env = {**os.environ, "CONDOR_CONFIG": str(self.dir / "condor_config")}
        self.checkpoint_seconds = checkpoint_seconds
        found = subprocess.run(
            [str(self.bin / "condor_status"), "-schedd", "-af", "Name"],
            env=self.env, capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        if found.returncode != 0 or not found.stdout.strip():
            raise SystemExit(f"no HTCondor pool at {self.dir}: start it with `make condor` (your ports exported)")
        self.schedd = found.stdout.split()[0]
        settings = dict(line.split("=", 1) for line in (self.dir / "pool.env").read_text().split())
        self.collector = f"127.0.0.1:{settings['COLLECTOR_PORT']}"
        job_python = subprocess.run([str(REPO / "cluster/condor/job-python.sh")], capture_output=True, text=True)
        if job_python.returncode != 0:
            raise SystemExit(f"cluster/condor/job-python.sh failed: {job_python.stderr[-2000:]}")
        self.job_bin = job_python.stdout.strip()

    def site(self, checkpoints: bool) -> dict:
        """The pool as a site, as tests/integration/htcondor's condor_sites has it: 1 CPU and 1.5 GB a job."""
        variables = {
            "PATH": f"{self.job_bin}:/usr/bin:/bin",
            "MPLCONFIGDIR": "/tmp",
            **{name: "1" for name in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")},
        }
        if not checkpoints or self.checkpoint_seconds is not None:
            variables["HPSCAN_CHECKPOINT_SECONDS"] = (
                f"{self.checkpoint_seconds:g}" if checkpoints else NO_CHECKPOINT_EXITS
            )
        block = {"universe": "vanilla", "executable": "/usr/bin/env", "requestMemory": "1536MB", "requestDisk": "1GB"}
        return {
            "name": "pool",
            "env": [{"name": name, "value": value} for name, value in variables.items()],
            "htcondor": {"pool": self.collector, "schedd": self.schedd, **block},
        }

    def command(self, manifest: Path, out: Path) -> tuple[list[str], dict[str, str]]:
        return [HPSCAN, "run", str(manifest), "--out", str(out), "--plain", "--site", "pool"], self.env

    def payloads(self, runner: int) -> dict[int, Path]:
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or "shard-run" not in argv_of(int(entry.name)):
                continue
            for pid in children(int(entry.name)):
                folder = folder_of(pid)
                if folder is not None and folder.resolve().is_relative_to(self.dir / "execute"):
                    found[pid] = folder
        return found

    def preempt(self, pid: int, folder: Path, checkpoints: bool) -> None:
        if not checkpoints:  # the eviction would take them to the next slot: a site that never got them
            for trial in (folder / "checkpoints").glob("*"):  # the folder stays: the job's output list names it
                shutil.rmtree(trial, ignore_errors=True)
        try:
            ad = dict(line.split(" = ", 1) for line in (folder / ".job.ad").read_text().splitlines() if " = " in line)
        except OSError:
            return  # the job ended meanwhile
        job = f"{ad['ClusterId']}.{ad['ProcId']}"
        subprocess.run(
            [str(self.bin / "condor_vacate_job"), job], env=self.env, capture_output=True, timeout=30, check=False
        )

    def checkpoint_exits(self, out: Path) -> int:
        """Ends with 85 for a checkpoint, from every start's stderr (HTCondor returns them, in order)."""
        logs = out.glob("condor/*/*/shard-*/stderr.txt")
        return sum(log.read_text(errors="replace").count("checkpoint saved, ending with 85") for log in logs)


def median_gap(workers: dict[Path, Worker]) -> float | None:
    """The epoch time: the median time between two epoch reports of one worker, None before there is one."""
    gaps = [b - a for w in workers.values() for t in w.report_times for a, b in itertools.pairwise(t) if b > a]
    return statistics.median(gaps) if gaps else None


@dataclass(frozen=True)
class Preemption:
    """What to preempt at: ``per_trial`` preemptions over a trial's ``epochs`` of training; ``epoch_seconds`` from a
    first run without preemption (None: measured in the run itself)."""

    per_trial: float
    epochs: int
    epoch_seconds: float | None = None

    def rate(self, measured: float | None) -> float:
        """Preemptions per second of a training worker (0: none, or no epoch time known yet)."""
        epoch = self.epoch_seconds or measured
        return self.per_trial / (self.epochs * epoch) if self.per_trial and epoch else 0.0


def run(
    backend: Local | Pool, manifest: Path, out: Path, preemption: Preemption, checkpoints: bool, seed: int
) -> Outcome:
    """One scan, its workers preempted at ``preemption``'s rate."""
    rng = random.Random(seed)
    began = time.monotonic()
    command, env = backend.command(manifest, out)
    runner = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    workers: dict[Path, Worker] = {}
    started: dict[int, float] = {}  # a payload process: when the bench first saw it
    live: dict[int, Worker] = {}  # payload processes not seen ending yet, and their workers
    preempted: dict[int, float] = {}  # payload processes preempted, and when
    first_report: list[float] = []
    kills, partial, dt = 0, 0.0, 0.1
    while runner.poll() is None:
        now = time.monotonic()
        payloads = backend.payloads(runner.pid)
        for pid, folder in payloads.items():
            worker = workers.setdefault(folder, Worker(folder))
            if live.get(pid) is not worker:  # a new payload (or one seen before its exec, with its parent's argv)
                started[pid], live[pid] = now, worker
                worker.restarted()
        for worker in workers.values():
            before = worker.reports
            worker.read(now)
            if before == 0 and worker.reports:
                first_report.append(now)
        epoch = preemption.epoch_seconds or median_gap(workers)
        rate = preemption.rate(epoch)
        for pid, folder in payloads.items():
            if pid in preempted or not workers[folder].training(started[pid], preemption.epochs):
                continue  # being preempted, or not training
            if rate and rng.random() < rate * dt:
                backend.preempt(pid, folder, checkpoints)
                kills += 1
                preempted[pid] = now
        for pid in [pid for pid in live if pid not in payloads or not alive(pid)]:
            worker = live.pop(pid)
            if worker.training(started[pid], preemption.epochs):
                # It ended mid-trial (preempted, or an exit for a checkpoint): the epoch in flight is lost, in part
                # (a kill ends it at once; a vacate or the runner's stop when the bench sees it gone).
                end = preempted.get(pid, now) if isinstance(backend, Local) else now
                partial += min(max(end - worker.last_report, 0.0) / (epoch or 1.0), 1.0)
        time.sleep(dt)
    if runner.returncode != 0:
        raise SystemExit(f"hpscan run failed ({runner.returncode}): see {out}/work/*/payload.log or {out}/condor/")
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
        epoch_seconds=median_gap(workers) or 0.0,
        resumed=sum(1 for r in records if r.get("resumedFrom")),
        checkpoint_exits=backend.checkpoint_exits(out),
    )
    if first_report and started:
        outcome.startup_seconds = max(min(first_report) - min(started.values()) - outcome.epoch_seconds, 0.0)
    return outcome


def describe(name: str, outcome: Outcome) -> str:
    exits = f", {outcome.checkpoint_exits} exits for a checkpoint" if outcome.checkpoint_exits else ""
    return (
        f"{name}: {outcome.trained:.1f} trial-epochs trained for {outcome.needed} needed "
        f"({outcome.trained / outcome.needed:.3f} per epoch needed; {outcome.partial:.1f} of them epochs in flight when "
        f"a payload stopped mid-trial), {outcome.kills} preemptions ({outcome.kills / outcome.trials:.2f} per trial), "
        f"{outcome.resumed} of {outcome.trials} trials resumed{exits}, epoch {outcome.epoch_seconds:.2f} s, "
        f"{outcome.wall:.0f} s, wasted_epochs_fraction={outcome.wasted:.3f}"
    )


def write_scan(folder: Path, name: str, args: argparse.Namespace, site: dict | None = None) -> Path:
    manifest = folder / f"{name}.yaml"
    document = scan(args.trials, args.epochs, args.workers, args.jets)
    if site is not None:
        document["spec"]["sites"] = [site]
    manifest.write_text(yaml.safe_dump(document))
    return manifest


def on_local(tmp: Path, args: argparse.Namespace) -> Outcome:
    """The local half: a first run without preemption measures the epoch time that sets the rate."""
    local, manifest = Local(), write_scan(tmp, "scan", args)
    calm = run(local, manifest, tmp / "calm", Preemption(0.0, args.epochs, 1.0), True, args.seed)
    preemption = Preemption(args.preemptions_per_trial, args.epochs, calm.epoch_seconds)
    trial_seconds = args.epochs * calm.epoch_seconds  # a trial's training time
    print(
        f"no preemption: {calm.trials} trials, {calm.needed} trial-epochs in {calm.wall:.0f} s; epoch "
        f"{calm.epoch_seconds:.2f} s, worker start-up {calm.startup_seconds:.1f} s; preempting each running "
        f"worker at {preemption.rate(None) * 3600:.0f}/h of training ({args.preemptions_per_trial:g} per trial of "
        f"{trial_seconds:.0f} s)",
        flush=True,
    )
    without = run(local, manifest, tmp / "without", preemption, False, args.seed)
    print(describe("without checkpoints", without), flush=True)
    with_checkpoints = run(local, manifest, tmp / "with", preemption, True, args.seed)
    print(describe("with checkpoints", with_checkpoints), flush=True)
    return with_checkpoints


def on_pool(tmp: Path, args: argparse.Namespace) -> Outcome:
    """The pool half: the epoch time is measured in each run; with checkpoints, HTCondor's self-checkpointing."""
    pool = Pool(args.checkpoint_seconds)
    preemption = Preemption(args.preemptions_per_trial, args.epochs)
    print(
        f"htcondor pool {pool.collector} ({pool.dir}): {args.trials} trials x {args.epochs} epochs, {args.workers} "
        f"jobs that pull; preempting each running job (condor_vacate_job) {args.preemptions_per_trial:g} times per "
        f"trial's training time on average; with checkpoints the runner ends with 85 every "
        f"{'1800 (its default)' if args.checkpoint_seconds is None else f'{args.checkpoint_seconds:g}'} s of training",
        flush=True,
    )
    without = run(
        pool, write_scan(tmp, "without", args, pool.site(False)), tmp / "without", preemption, False, args.seed
    )
    print(describe("without checkpoints", without), flush=True)
    manifest = write_scan(tmp, "with", args, pool.site(True))
    with_checkpoints = run(pool, manifest, tmp / "with", preemption, True, args.seed)
    print(describe("with checkpoints", with_checkpoints), flush=True)
    return with_checkpoints


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["local", "htcondor"], default="local")
    parser.add_argument("--trials", type=int, help="default: 4")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--jets", type=int, help="synthetic jets (2/3 train): sets the epoch time; default 20000 (local), 150000 "
        "(htcondor: its jobs train on one thread, which is faster here, and an epoch should be long beside an exit)",
    )  # fmt: skip
    parser.add_argument("--preemptions-per-trial", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1, help="seed of the preemption times")
    parser.add_argument(
        "--checkpoint-seconds", type=float,
        help="htcondor: the runner ends with 85 for a checkpoint after this much training (HPSCAN_CHECKPOINT_SECONDS;"
        " default: the runner's, 1800 s)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    args.trials = args.trials or 4
    args.jets = args.jets or (20000 if args.backend == "local" else 150000)
    with tempfile.TemporaryDirectory(prefix="hpscan-preemption-") as folder:
        with_checkpoints = (on_local if args.backend == "local" else on_pool)(Path(folder), args)
    print(f"wasted_epochs_fraction={with_checkpoints.wasted:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
