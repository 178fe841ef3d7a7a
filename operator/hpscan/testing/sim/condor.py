"""The HTCondor side of the simulation: the real HTCondorBackend on the schedd STAND-IN (hpscan.testing.condor),
and a simulated startd that runs each idle job as a dl1-like worker over the real job-side ChirpChannel.

What it keeps of a pool: a chirp line holds at most CHIRP_LINE_MAX bytes (the stand-in refuses longer ones, so a
job keeps ~10 dl1 records a page); an edit of a running job's ad reaches the job only when its shadow re-notifies
it (``edit_latency``); chirp calls may fail; the schedd may not answer for a while (every call raises); a job may
be evicted (back to idle, its output sandbox transferred: when_to_transfer_output ON_EXIT_OR_EVICT) or its
payload may die (max_retries and retry_until applied as the schedd's OnExitRemove does); the output sandbox
(results.jsonl and checkpoints/, the trials' states at their last epoch boundary) comes back only when an attempt
ends, evicted or not; the input sandbox carries the Iwd's results.jsonl and checkpoints/ (the real backend's
initialdir: whatever job of the shard starts next, a retry or a move, starts on them). A job hpscan removes
(condor_rm) sends its checkpoints there too as it stops (the runner, through chirp), but not its results.jsonl.

What it leaves out: matchmaking and slots (a job starts a few seconds after it is idle), holds and their timeouts
(held jobs are tested in tests/unit/backends/htcondor/test_htcondor_*.py and on the real pool), spooling, credentials, probes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import classad2

from hpscan.api.contract import CHECKPOINTS_DIR, RESULTS_FILE, ShardFile, parse_records
from hpscan.job.chirp import ChirpChannel
from hpscan.testing.condor import COMPLETED, IDLE, RUNNING, ScheddStandIn
from hpscan.testing.sim.kube import SimCrash
from hpscan.testing.sim.workers import Checkpoint, SimPod, probe_words

STATE_FILE = "state.json"
"""A simulated trial's checkpoint file in checkpoints/<trial>/ (dl1's state.npz)."""


def read_checkpoints(folder: Path) -> dict[str, Checkpoint]:
    """The checkpoints a sandbox's checkpoints/ folder holds (the payload's resume reads them)."""
    held = {}
    for path in sorted((folder / CHECKPOINTS_DIR).glob(f"*/{STATE_FILE}")):
        state = json.loads(path.read_text())
        held[path.parent.name] = Checkpoint(int(state["epoch"]), tuple(state["resumed"]))
    return held


def write_checkpoints(folder: Path, checkpoints: dict[str, Checkpoint]) -> None:
    """The output sandbox's checkpoints/ over the Iwd's (HTCondor replaces the folder as it is in the sandbox)."""
    root = folder / CHECKPOINTS_DIR
    for old in root.glob(f"*/{STATE_FILE}"):
        old.unlink()
        old.parent.rmdir()
    for trial, state in checkpoints.items():
        (root / trial).mkdir(parents=True, exist_ok=True)
        (root / trial / STATE_FILE).write_text(json.dumps({"epoch": state.epoch, "resumed": list(state.resumed)}))


class FaultySchedd:
    """The stand-in as the operator reaches it: a schedd outage raises on every call; the operator may die (kill -9)
    before any call."""

    def __init__(self, schedd: ScheddStandIn, world: Any) -> None:
        self.schedd, self.world = schedd, world

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.schedd, name)
        if not callable(method):
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            self.world.step_calls += 1
            self.world.operator_calls += 1
            faults = self.world.faults_now()
            if faults.crash and self.world.rng.random() < faults.crash:
                raise SimCrash(name)
            return method(*args, **kwargs)

        return call


class JobChirp:
    """htchirp.HTChirp inside one job: get_job_attr answers from the job's copy of its ad, which the shadow
    refreshes from the schedd's every ``edit_latency`` seconds; set_job_attr goes to the schedd's ad at once
    (refused past a chirp line); either may fail while chirp faults are on."""

    def __init__(self, startd: SimStartd, job: str) -> None:
        self.startd, self.job = startd, job

    def __enter__(self) -> JobChirp:
        world = self.startd.world
        if world.rng.random() < world.faults_now().api_error:
            raise ConnectionRefusedError("the starter's chirp proxy did not answer (simulated)")
        return self

    def __exit__(self, *args: object) -> None:
        return None

    def get_job_attr(self, job_attribute: str) -> str:
        ad = self.startd.views.get(self.job) or self.startd.schedd.jobs[self.job]
        return str(ad.lookup(job_attribute)) if job_attribute in ad else "UNDEFINED"

    def set_job_attr(self, job_attribute: str, attribute_value: str) -> None:
        self.startd.schedd.chirp(self.job, job_attribute, attribute_value)
        view = self.startd.views.get(self.job)
        if view is not None:
            view[job_attribute] = classad2.ExprTree(attribute_value)


def _copy_ad(ad: Any) -> Any:
    copy = classad2.ClassAd()
    for key in ad:
        copy[key] = ad.lookup(key)
    return copy


class SimStartd:
    """Runs idle jobs of the stand-in: one attempt at a time per job, as dl1-like workers."""

    def __init__(self, world: Any, schedd: ScheddStandIn) -> None:
        self.world, self.schedd = world, schedd
        self.pods: dict[str, SimPod] = {}
        self.views: dict[str, Any] = {}  # the job's copy of its ad (refreshed by the shadow)
        self.refreshed: dict[str, float] = {}
        self.idle_since: dict[str, float] = {}

    def tick(self, now: float) -> None:
        w = self.world
        faults = w.faults_now()
        for job, ad in sorted(self.schedd.jobs.items()):
            status = ad.eval("JobStatus")
            if "HPScanProbe" in ad:
                if status == IDLE:
                    self._probe(job)
                continue
            if status == IDLE:
                since = self.idle_since.setdefault(job, now)
                if now - since >= 2:
                    self._start(job, now)
                continue
            if status != RUNNING and job in self.pods:  # removed by hpscan (condor_rm): its runner sends checkpoints/
                pod = self.pods.pop(job)
                self.world.interrupted(pod)
                write_checkpoints(self._iwd(job), pod.checkpoints)
                continue
            if status != RUNNING or job not in self.pods:
                continue
            if now - self.refreshed.get(job, 0.0) >= w.scenario_edit_latency():
                self.views[job], self.refreshed[job] = _copy_ad(self.schedd.jobs[job]), now
            pod = self.pods[job]
            if w.rng.random() < faults.eviction:
                self._end(job, pod, code=None)
                continue
            if w.rng.random() < faults.pod_death:
                self._end(job, pod, code=1)
                continue
            code = pod.tick(now)
            if code is not None:
                self._end(job, pod, code=code)

    def _probe(self, job: str) -> None:
        """A site probe runs the gpu check (the stand-in's: CONTRACT_GPU_CHECK_EXIT) and ends at once."""
        commands = self.schedd.submitted[job]
        env = dict(item.split("=", 1) for item in commands.get("environment", "").strip('"').split() if "=" in item)
        code, words = probe_words(env)
        self.schedd.start(job)
        iwd = self._iwd(job)
        iwd.mkdir(parents=True, exist_ok=True)
        (iwd / commands.get("output", "stdout.txt")).write_text(words + "\n")
        self.schedd.set(job, JobStatus=COMPLETED, ExitCode=code, ExitBySignal=False)

    def _iwd(self, job: str) -> Path:
        return Path(str(self.schedd.jobs[job].eval("Iwd")))

    def _start(self, job: str, now: float) -> None:
        w = self.world
        self.idle_since.pop(job, None)
        self.schedd.start(job)
        self.views[job], self.refreshed[job] = _copy_ad(self.schedd.jobs[job]), now
        iwd = self._iwd(job)
        shard_path = next(iwd.glob("shard-*.json"))
        shard_file = ShardFile.model_validate_json(shard_path.read_text())
        carried = (
            parse_records((iwd / RESULTS_FILE).read_text().splitlines())[0] if (iwd / RESULTS_FILE).exists() else []
        )
        channel = ChirpChannel(shard_file.objective, client=lambda: JobChirp(self, job))
        pod = SimPod(shard_file.shard, channel, w.scenario.epochs, float(w.rng.randint(1, 4)), now, w)
        pod.attempt = int(self.schedd.jobs[job].eval("NumJobStarts"))
        pod.start_with(shard_file, carried, read_checkpoints(iwd))
        pod.started = True
        self.pods[job] = pod

    def _end(self, job: str, pod: SimPod, code: int | None) -> None:
        """The attempt ended (code None: evicted): its output sandbox comes back, the schedd decides what next."""
        del self.pods[job]
        self.views.pop(job, None)
        if code != 0:
            self.world.interrupted(pod)
        (self._iwd(job) / RESULTS_FILE).write_text("".join(json.dumps(r.to_wire()) + "\n" for r in pod.results))
        write_checkpoints(self._iwd(job), pod.checkpoints)
        commands = self.schedd.submitted[job]
        if commands.get("error"):  # the payload's stderr (a failed job's message quotes its last line)
            (self._iwd(job) / commands["error"]).write_text("".join(line + "\n" for line in pod.said))
        ad = self.schedd.jobs[job]
        if code is None:
            self.schedd.set(job, JobStatus=IDLE)
            return
        ad["ExitCode"] = code
        retries = int(commands.get("max_retries", "0"))
        stop = classad2.ExprTree(commands.get("retry_until", "false")).eval(ad) is True
        if code != 0 and not stop and int(ad.eval("NumJobStarts")) <= retries:
            self.schedd.set(job, JobStatus=IDLE)
        else:
            self.schedd.set(job, JobStatus=COMPLETED, ExitBySignal=False)
