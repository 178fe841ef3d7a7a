"""A deterministic simulation of the operator's control loop on Kubernetes, with faults.

The real code runs: the kopf-free reconcile (hpscan.controller.reconcile.reconcile_scan) with its engine step,
search and aggregation, the real KubernetesBackend, and in each pod the real ConfigMapChannel. Only their
neighbours are simulated (hpscan.testing.sim.kube: the API server, the watch caches, the Job controller and
kubelet; hpscan.testing.sim.workers: the payload). Time is virtual and every random choice comes from one
seeded source, so a seed replays the same schedule exactly: a failure is a seed and a fault plan.

A schedule: one scan (grid, random, TPE or TPE + ASHA; 1-3 shards) runs while faults are on (API calls that fail
or time out after they took effect, on both sides; the operator killed between two calls; caches lagging; pods
dying or evicted), then the faults stop and the scan must end within a bound. Invariants are checked after every
operator step and at the end (``violations``).
"""

from __future__ import annotations

import contextlib
import functools
import random
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hpscan.api.status import FINAL_EXITS
from hpscan.backends.base import Backend
from hpscan.backends.htcondor import HTCondorBackend
from hpscan.backends.kubernetes import backend as kubernetes_backend
from hpscan.backends.kubernetes.backend import KubernetesBackend
from hpscan.backends.kubernetes.names import CONTAINER, LABEL_ROLE, LABEL_SHARD
from hpscan.controller.reconcile import reconcile_scan
from hpscan.core import payloads
from hpscan.job.configmap import CONFIGMAP_ENV, GIVE_UP_SECONDS, ConfigMapChannel, transient
from hpscan.testing.condor import ScheddStandIn
from hpscan.testing.sim.condor import FaultySchedd, SimStartd
from hpscan.testing.sim.kube import ApiServer, CallFaults, ClientApi, LaggingCache, SimCrash
from hpscan.testing.sim.workers import SimPod, probe_words

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
NAMESPACE = "physics"


@dataclass(frozen=True)
class FaultPlan:
    """What goes wrong, and until when (virtual seconds); after ``until`` the world is friendly."""

    api_error: float = 0.0  # a call of the operator or a pod fails with a 5xx
    timeout_after: float = 0.0  # a write took effect but its caller saw a timeout
    crash: float = 0.0  # the operator dies before an API call (kill -9)
    cache_lag: float = 0.0  # most seconds a watch cache lags (Jobs and ConfigMaps independently)
    pod_death: float = 0.0  # per second and pod: the pod dies (counts against backoffLimit)
    eviction: float = 0.0  # per second and pod: evicted (DisruptionTarget: not counted)
    outage: float = 0.0  # per second: the batch system stops answering for 5-30 s (HTCondor: the schedd)
    edit_latency: float = 0.0  # most seconds before an edit of a running job's ad reaches the job (HTCondor)
    until: float = 0.0

    def without(self, name: str) -> FaultPlan:
        return replace(self, **{name: 0.0})

    def line(self) -> str:
        return ",".join(f"{k}={v:g}" for k, v in asdict(self).items() if v)


@dataclass(frozen=True)
class Scenario:
    seed: int
    backend: str = "kubernetes"  # kubernetes | htcondor
    strategy: str = "grid"  # grid | random | tpe
    early: bool = False  # ASHA (with tpe)
    budget: int = 6
    shards: int = 2
    epochs: int = 2
    retries: int = 6
    trials_per_worker: int = 2
    broken_site: bool = False  # the site's GPUs never work: its probe exits 3 (the scan must end Failed, saying so)
    faults: FaultPlan = field(default_factory=FaultPlan)

    def line(self) -> str:
        """The one-line reproduction."""
        return (
            f"seed={self.seed} backend={self.backend} strategy={self.strategy} early={int(self.early)} budget={self.budget} "
            f"shards={self.shards} epochs={self.epochs} broken_site={int(self.broken_site)} faults={self.faults.line() or 'none'}"
        )


def scenario_of(seed: int) -> Scenario:
    """The schedule a seed draws: most have several faults (rare events made common)."""
    rng = random.Random(seed)
    backend = rng.choice(["kubernetes", "kubernetes", "htcondor"])
    strategy = rng.choice(["grid", "random", "tpe", "tpe"])
    faults = FaultPlan(
        api_error=rng.choice([0.0, 0.02, 0.1, 0.2]),
        timeout_after=rng.choice([0.0, 0.02, 0.1]),
        crash=rng.choice([0.0, 0.0, 0.01, 0.05]),
        cache_lag=rng.choice([0.0, 3.0, 10.0]),
        pod_death=rng.choice([0.0, 0.0, 0.005, 0.02]),
        eviction=rng.choice([0.0, 0.0, 0.01]),
        outage=rng.choice([0.0, 0.005, 0.01]) if backend == "htcondor" else 0.0,
        edit_latency=rng.choice([0.0, 2.0, 10.0]) if backend == "htcondor" else 0.0,
        until=rng.choice([60.0, 200.0, 400.0]),
    )
    return Scenario(
        seed=seed,
        backend=backend,
        strategy=strategy,
        early=strategy == "tpe" and rng.random() < 0.5,
        budget=rng.randint(3, 12),
        shards=rng.randint(1, 3),
        epochs=rng.randint(1, 3),
        broken_site=rng.random() < 0.08,
        faults=faults,
    )


def manifest(s: Scenario) -> dict[str, Any]:
    sampling: dict[str, Any] = {"strategy": s.strategy, "seed": s.seed % 1000, "trialsPerWorker": s.trials_per_worker}
    if s.strategy != "grid":
        sampling["samples"] = s.budget
    parameters: list[dict[str, Any]] = [
        {"name": "units", "values": [8, 16, 32, 64]},
        {"name": "learning_rate", "range": {"min": 1e-4, "max": 1e-2, "count": 3, "scale": "log"}},
    ]
    if s.strategy == "grid":  # a grid of exactly the budget
        parameters = [{"name": "units", "values": list(range(1, s.budget + 1))}]
    spec: dict[str, Any] = {
        "objective": {"metric": "val_loss", "goal": "minimize"},
        "parameters": parameters,
        "sampling": sampling,
        "sharding": {"shards": s.shards},
        "retries": s.retries,
        "gpu": {"count": 0, "required": False},
        "payload": {"image": "sim/payload:1", "command": ["sim-payload"], "settings": {"epochs": s.epochs}},
        "sites": [
            {"name": "cluster", "kubernetes": {}} if s.backend == "kubernetes" else {"name": "grid", "htcondor": {}}
        ],
    }
    if s.broken_site:  # probed before any shard goes there: the probe says its GPUs do not work
        spec["gpu"] = {"count": 1, "required": True}
        spec["payload"]["gpuCheck"] = ["sim-gpu-check"]
        spec["sites"][0]["env"] = [{"name": "CONTRACT_GPU_CHECK_EXIT", "value": "3"}]
    if s.early:
        spec["earlyStopping"] = {"strategy": "asha", "minEpochs": 1, "reductionFactor": 2}
    return {
        "apiVersion": "hpscan.io/v1alpha1",
        "kind": "HPScan",
        "metadata": {"name": "sim", "namespace": NAMESPACE, "uid": f"uid-{s.seed}", "generation": 1},
        "spec": spec,
    }


@dataclass
class Outcome:
    scenario: Scenario
    violations: list[str]
    phase: str | None
    steps: int
    restarts: int
    calls: int
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.violations


class Kubelet:
    """The Job controller and the kubelet: one pod at a time per Job, retried up to backoffLimit."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.pods: dict[str, SimPod] = {}

    def _job_status(self, name: str, **status: Any) -> None:
        self.world.server.patch("job", NAMESPACE, name, {"status": status})

    def tick(self, now: float) -> None:
        w = self.world
        for (kind, _, name), job in sorted(w.server.objects.items()):
            if kind != "job":
                continue
            status = job.get("status") or {}
            if any(c.get("status") == "True" for c in status.get("conditions") or []):
                continue
            pod = self.pods.get(name)
            if job["metadata"].get("labels", {}).get(LABEL_ROLE) == "probe":
                self._probe(name, job, now)
                continue
            if job["spec"].get("suspend"):
                if pod is not None:
                    w.interrupted(pod)
                    del self.pods[name]
                    self._job_status(name, active=0, ready=0)
                continue
            if pod is None:
                failed = status.get("failed") or 0
                if failed > job["spec"].get("backoffLimit", 6):
                    condition = {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                 "message": "Job has reached the specified backoff limit"}  # fmt: skip
                    self._job_status(name, conditions=[condition], active=0, ready=0)
                    continue
                self._start(name, job, now)
                continue
            faults = w.faults_now()
            if w.rng.random() < faults.pod_death:
                self._end(name, pod, failed=True)
                continue
            if w.rng.random() < faults.eviction:
                self._end(name, pod, failed=False)
                continue
            if not pod.started and not self._first_reads(name, pod, now):
                continue
            code = pod.tick(now)
            if code == 0:
                del self.pods[name]
                done = {"type": "Complete", "status": "True"}
                self._job_status(name, active=0, ready=0, succeeded=1, conditions=[done])
            elif code in FINAL_EXITS:  # the Job's podFailurePolicy: FailJob
                self._end(name, pod, failed=True)
                message = (
                    f"Container payload for pod {name}-0 failed with exit code {code} matching FailJob rule at index 0"
                )
                failed = {"type": "Failed", "status": "True", "reason": "PodFailurePolicy", "message": message}
                self._job_status(name, conditions=[failed])
            elif code is not None:
                self._end(name, pod, failed=True)

    def _probe(self, name: str, job: dict[str, Any], now: float) -> None:
        """A site probe's pod runs the gpu check: the stand-in's exit code (CONTRACT_GPU_CHECK_EXIT, as
        tests/unit/payloads/contract_payload.gpu_check), with its words as the termination message."""
        env = {
            e["name"]: e.get("value") for c in job["spec"]["template"]["spec"]["containers"] for e in c.get("env", [])
        }
        code, words = probe_words(env)
        labels = {**job["spec"]["template"]["metadata"].get("labels", {}), "batch.kubernetes.io/job-name": name}
        when = (EPOCH + timedelta(seconds=now)).isoformat()
        terminated = {"exitCode": code, "message": words}
        self.world.server.create("pod", NAMESPACE, {
            "metadata": {"name": f"{name}-probe", "labels": labels, "creationTimestamp": when},
            "status": {"phase": "Succeeded" if code == 0 else "Failed",
                       "containerStatuses": [{"name": CONTAINER, "state": {"terminated": terminated}}]},
        })  # fmt: skip
        ended = {"type": "Complete" if code == 0 else "Failed", "status": "True"}
        self._job_status(name, conditions=[ended], succeeded=int(code == 0), failed=int(code != 0))

    def _start(self, name: str, job: dict[str, Any], now: float) -> None:
        w = self.world
        container = next(c for c in job["spec"]["template"]["spec"]["containers"] if c["name"] == CONTAINER)
        base = next(e["value"] for e in container["env"] if e["name"] == CONFIGMAP_ENV)
        channel = ConfigMapChannel(base, NAMESPACE, api_client=object(), clock=lambda: w.server.now)
        channel.core = ClientApi(w.server, w.pod_faults)  # type: ignore[assignment]
        shard = int(job["metadata"]["labels"][LABEL_SHARD])
        pod = SimPod(shard, channel, w.scenario.epochs, float(w.rng.randint(1, 4)), now, w)
        pod.attempt = int((job.get("status") or {}).get("failed") or 0) + 1
        self.pods[name] = pod
        self._job_status(name, active=1, ready=1)

    def _first_reads(self, name: str, pod: SimPod, now: float) -> bool:
        """ConfigMapChannel.start: the pod's first reads, tried again while the API server fails transiently (for
        up to GIVE_UP_SECONDS); a refusal, or failing that long, fails the attempt. Whether the pod may go on."""
        try:
            pod.start()
        except Exception as error:
            if transient(error) and now - pod.started_at < GIVE_UP_SECONDS:
                return False
            self._end(name, pod, failed=True)
            return False
        pod.started = True
        return True

    def _end(self, name: str, pod: SimPod, failed: bool) -> None:
        self.world.interrupted(pod)
        del self.pods[name]
        if failed:  # the failed pod stays, with its termination message (FallbackToLogsOnError: its last words)
            job = self.world.server.objects[("job", NAMESPACE, name)]
            labels = {**job["spec"]["template"]["metadata"].get("labels", {}), "batch.kubernetes.io/job-name": name}
            when = (EPOCH + timedelta(seconds=self.world.server.now)).isoformat()
            terminated = {"exitCode": pod.exit_code or 137, "message": "\n".join(pod.said[-3:])}
            self.world.server.create("pod", NAMESPACE, {
                "metadata": {"name": f"{name}-{pod.attempt}", "labels": labels, "creationTimestamp": when},
                "status": {"phase": "Failed", "containerStatuses": [{"name": CONTAINER, "state": {"terminated": terminated}}]},
            })  # fmt: skip
        status = self.world.server.objects[("job", NAMESPACE, name)].get("status") or {}
        self._job_status(name, active=0, ready=0, failed=(status.get("failed") or 0) + int(failed))


class World:
    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.rng = random.Random(scenario.seed)
        self.server = ApiServer(self.rng)
        self.operator_faults = CallFaults()
        self.pod_faults = CallFaults()
        self.sandboxes = Path(tempfile.mkdtemp(prefix="hpscan-sim-"))
        self.schedd = ScheddStandIn()
        self.nodes: Kubelet | SimStartd = (
            Kubelet(self) if scenario.backend == "kubernetes" else SimStartd(self, self.schedd)
        )
        self.outage_until = 0.0
        self.operator_calls = 0
        self.completions: Counter[str] = Counter()
        self.interruptions: Counter[str] = Counter()
        self.violations: list[str] = []
        self.step_calls = 0

    def faults_now(self) -> FaultPlan:
        f = self.scenario.faults
        return f if self.server.now < f.until else FaultPlan()

    def trained(self, trial_id: str, shard: int) -> None:
        self.completions[trial_id] += 1

    def interrupted(self, pod: SimPod) -> None:
        """A pod died: its trial in training, and the records it could not send yet, train again (counted)."""
        for trial in pod.interrupted():
            self.interruptions[trial] += 1

    def _lag(self) -> float:
        return self.rng.uniform(0, self.faults_now().cache_lag)

    def scenario_edit_latency(self) -> float:
        return self.faults_now().edit_latency

    def operator(self) -> tuple[Backend, dict[str, Any], dict[str, Any], dict[str, Any]]:
        """A (re)started operator: a fresh backend (and watch caches), empty memory."""
        if self.scenario.backend == "htcondor":
            schedd = FaultySchedd(self.schedd, self)
            condor = HTCondorBackend(
                self.sandboxes, schedd_factory=lambda site: schedd, max_age_seconds=0, clock=lambda: self.server.now
            )
            return condor, {}, {}, {}
        cache = LaggingCache(self.server, self._lag, self._lag)
        backend = KubernetesBackend(api_client=None, cache=cache)
        api = ClientApi(self.server, self.operator_faults, on_call=self._count)
        backend.core = backend.batch = backend.rbac = backend.networking = api  # type: ignore[assignment]
        return backend, {}, {}, {}

    def _count(self) -> None:
        self.step_calls += 1

    def run(self, max_seconds: float = 4000.0, step_seconds: float = 3.0) -> Outcome:
        s = self.scenario
        body = manifest(s)
        backend, memory, searches, probes = self.operator()
        steps = restarts = 0
        phase: str | None = None
        with _simulated_process():
            while self.server.now < max_seconds:
                faults = self.faults_now()
                self.operator_faults.error, self.operator_faults.timeout_after = faults.api_error, faults.timeout_after
                self.operator_faults.crash = faults.crash
                self.pod_faults.error, self.pod_faults.timeout_after = faults.api_error, faults.timeout_after
                self.step_calls = 0
                try:
                    outcome = reconcile_scan(
                        body, {self.scenario.backend: backend}, memory, probe_cache=probes, searches=searches,
                        now=EPOCH + timedelta(seconds=self.server.now),
                    )  # fmt: skip
                except SimCrash:
                    restarts += 1
                    backend, memory, searches, probes = self.operator()
                except Exception as error:  # kopf logs it and retries the handler: the scan is stuck meanwhile
                    self._violate(f"the reconcile raised {type(error).__name__}: {str(error)[:300]}")
                    steps += 1
                else:
                    steps += 1
                    if outcome.status is not None:
                        body["status"] = outcome.status.model_dump(mode="json", by_alias=True, exclude_none=True)
                    self._check_step(body)
                phase = (body.get("status") or {}).get("phase")
                if phase in {"Succeeded", "Failed"} and not self.nodes.pods:
                    break
                for _ in range(int(step_seconds)):
                    self.server.now += 1
                    self._outage()
                    self.nodes.tick(self.server.now)
        self._check_end(body)
        shutil.rmtree(self.sandboxes, ignore_errors=True)
        return Outcome(s, self.violations, phase, steps, restarts, self.server.calls, self.server.now)

    # invariants ------------------------------------------------------------------------------------------------

    def _outage(self) -> None:
        """The schedd stops answering for a while, now and then."""
        now = self.server.now
        if self.schedd.down is not None and now >= self.outage_until:
            self.schedd.down = None
        elif self.schedd.down is None and self.rng.random() < self.faults_now().outage:
            self.outage_until = now + self.rng.randint(5, 30)
            self.schedd.down = "Failed to connect to schedd (simulated outage)"

    def _violate(self, text: str) -> None:
        if not any(v.endswith(f": {text}") for v in self.violations):
            self.violations.append(f"t={self.server.now:g}s: {text}")

    def _check_step(self, body: dict[str, Any]) -> None:
        status = body.get("status") or {}
        counts = status.get("combinations") or {}
        ended = sum(counts.get(k, 0) for k in ("succeeded", "pruned", "failed"))
        if status.get("phase") == "Succeeded" and ended < counts.get("total", 0):
            self._violate(f"Succeeded with records missing: {counts}")
        bound = 40 + 12 * self.scenario.shards + 4 * self.scenario.budget
        if self.step_calls > bound:
            self._violate(f"{self.step_calls} API requests in one step (bound {bound})")
        if self.server.largest_object > 512 * 1024:
            self._violate(f"an object of {self.server.largest_object} bytes")
        for trial, count in self.completions.items():
            if count > 1 + self.interruptions[trial]:
                self._violate(f"trial {trial} trained to completion {count} times")

    def _retries_spent(self) -> bool:
        """Whether a Job failed for good because its pods failed more often than its backoffLimit allows."""
        condor = any(
            ad.eval("ExitCode") != 0 and int(ad.eval("NumJobStarts")) > self.scenario.retries
            for ad in [*self.schedd.jobs.values(), *self.schedd.history.values()]
            if "ExitCode" in ad
        )
        return condor or any(
            (job.get("status") or {}).get("failed", 0) > job["spec"].get("backoffLimit", 6)
            for (kind, _, _), job in self.server.objects.items()
            if kind == "job"
        )

    def _check_end(self, body: dict[str, Any]) -> None:
        status = body.get("status") or {}
        counts = status.get("combinations") or {}
        phase = status.get("phase")
        if self.scenario.broken_site:  # nothing may run there; the scan ends Failed and says why
            site = (status.get("sites") or [{}])[0]
            if phase != "Failed" or site.get("state") != "Excluded" or "GPU" not in (status.get("message") or ""):
                self._violate(
                    f"a site whose GPUs never work: the scan ended {phase!r} ({status.get('message')}), site {site}"
                )
            if self.completions:
                self._violate(f"trials trained on a site whose GPUs do not work: {dict(self.completions)}")
            return
        if phase == "Failed" and self._retries_spent():
            return  # the faults spent a shard's retries (pods died more often than spec.retries allows): its reason
        if phase != "Succeeded":
            shards = [
                (s.get("index"), s.get("phase"), s.get("reason"), s.get("message")) for s in status.get("shards") or []
            ]
            self._violate(f"the scan ended {phase!r} ({status.get('message')}), shards {shards}, not Succeeded")
        budget = self.scenario.budget
        if self.scenario.strategy != "grid" and counts.get("suggested", budget) != budget:
            self._violate(f"{counts.get('suggested')} trials suggested for a budget of {budget}")
        ended = sum(counts.get(k, 0) for k in ("succeeded", "pruned", "failed"))
        if phase == "Succeeded" and ended != budget:
            self._violate(f"{ended} trials ended for a budget of {budget}: {counts}")


_entry_points = functools.cache(payloads.entry_points)


class _InOrderPool:
    """The backend's submit pool, run in order in this thread: every shard's submit is tried (as with the real
    pool's 32 threads, where all start at once and none is cancelled when one fails), and the first failure is
    raised after all ran. A real pool's order of calls, and which queued tasks a failure cancels, is the
    scheduler's, not the seed's."""

    def __init__(self, max_workers: int | None = None) -> None:
        pass

    def __enter__(self) -> _InOrderPool:
        return self

    def __exit__(self, *args: object) -> None:
        return None

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
        results, failure = [], None
        for item in items:
            try:
                results.append(fn(item))
            except Exception as error:
                failure = failure or error
        if failure is not None:
            raise failure
        return results


@contextlib.contextmanager
def _simulated_process() -> Iterator[None]:
    """What differs in a simulated operator process: the backend's submit pool runs in order in this thread
    (_InOrderPool), and the payload checkers' entry points are looked up once (the lookup reads every installed
    package's metadata: 0.1 s, on each restart)."""
    held = kubernetes_backend.ThreadPoolExecutor, payloads.entry_points
    kubernetes_backend.ThreadPoolExecutor = _InOrderPool  # type: ignore[misc,assignment]
    payloads.entry_points = _entry_points  # type: ignore[assignment]
    try:
        yield
    finally:
        kubernetes_backend.ThreadPoolExecutor, payloads.entry_points = held  # type: ignore[misc]


def run(scenario: Scenario) -> Outcome:
    return World(scenario).run()


def shrink(scenario: Scenario) -> Scenario:
    """The simplest failing schedule found: fault kinds switched off one by one, then a smaller scan, each kept
    while the schedule still fails."""
    best = scenario
    for name in ("crash", "timeout_after", "api_error", "cache_lag", "pod_death", "eviction"):
        if getattr(best.faults, name):
            trial = replace(best, faults=best.faults.without(name))
            if not run(trial).ok:
                best = trial
    for change in ({"shards": 1}, {"epochs": 1}, {"early": False}, {"budget": max(2, best.budget // 2)}):
        trial = replace(best, **change)
        if trial != best and not run(trial).ok:
            best = trial
    return best
