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
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from hpscan.backends.base import Backend
from hpscan.backends.htcondor import HTCondorBackend
from hpscan.backends.kubernetes import backend as kubernetes_backend
from hpscan.backends.kubernetes.backend import KubernetesBackend
from hpscan.controller.reconcile import reconcile_scan
from hpscan.core import payloads
from hpscan.core.rungs import promotable_index, rung_epoch
from hpscan.core.search_space import asha_rung_values
from hpscan.testing.condor import ScheddStandIn
from hpscan.testing.sim.condor import FaultySchedd, SimStartd
from hpscan.testing.sim.kube import ApiServer, CallFaults, ClientApi, LaggingCache, SimCrash
from hpscan.testing.sim.kubelet import Kubelet
from hpscan.testing.sim.scenario import EPOCH, FaultPlan, Scenario, manifest
from hpscan.testing.sim.workers import SimPod


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
        self.pruned_at_rung: dict[str, tuple[int, float]] = {}  # trials a worker stopped itself: (epoch, value)
        self.epochs_trained: Counter[str] = Counter()  # every epoch trained, again or not
        self.shards_of: dict[str, set[int]] = {}  # the shards whose workers trained a trial
        self.recorded_epochs: dict[str, int] = {}  # a trial's epochs, as its (last) record says
        self.violations: list[str] = []
        self.step_calls = 0

    def faults_now(self) -> FaultPlan:
        f = self.scenario.faults
        return f if self.server.now < f.until else FaultPlan()

    def trained(self, trial_id: str, shard: int, epochs: int = 0) -> None:
        self.completions[trial_id] += 1
        self.recorded_epochs[trial_id] = epochs

    def trained_epoch(self, trial_id: str, shard: int, epoch: int) -> None:
        self.epochs_trained[trial_id] += 1
        self.shards_of.setdefault(trial_id, set()).add(shard)

    def resumed(self, trial_id: str, shard: int, epoch: int) -> None:
        """A worker resumed a trial from a checkpoint at ``epoch``: never past what was trained."""
        if epoch > self.epochs_trained[trial_id]:
            self._violate(
                f"trial {trial_id} resumed at epoch {epoch}, past the {self.epochs_trained[trial_id]} trained"
            )

    def stopped_at_rung(self, trial_id: str, epoch: int, value: float) -> None:
        """A worker stopped a trial at an ASHA rung itself (checked at the end: _check_rung_prunes)."""
        self.pruned_at_rung[trial_id] = (epoch, value)

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
        backend.core = backend.batch = backend.rbac = backend.networking = api
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
        self._check_rung_prunes(searches)
        self._check_resumes()
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

    def _check_resumes(self) -> None:
        """HTCondor: an attempt's checkpoints come back whenever it ends (evicted, failed, done, or removed by
        hpscan) and the shard's next job starts on them; so a trial that only one shard's workers trained trains no
        epoch twice, whatever the faults (a trial handed to another worker may). Kubernetes keeps checkpoints in the
        scan's store, which the simulation has not."""
        if self.scenario.backend != "htcondor":
            return
        for trial, epochs in sorted(self.recorded_epochs.items()):
            trained = self.epochs_trained[trial]
            if len(self.shards_of.get(trial, ())) == 1 and trained > epochs:
                self._violate(f"trial {trial} trained {trained} epochs for the {epochs} its record says")

    def _check_rung_prunes(self, searches: dict[str, Any]) -> None:
        """Every trial a worker stopped itself at a rung is one the study's pruner stops there too: with all the
        values the rung holds at the end (the most it judges against), the trial's value is not among the best
        1/reductionFactor. A worker that acted on thresholds stricter than the study's fails this."""
        for search in searches.values():
            early = search.plan.spec.early_stopping
            rungs = {rung_epoch(r, early.min_epochs, early.reduction_factor): r for r in range(8)}
            held = asha_rung_values(search.study)
            for trial, (epoch, value) in sorted(self.pruned_at_rung.items()):
                competing = list(held.get(rungs.get(epoch, -1), []))
                if value not in competing:  # its report never reached the study (a progress line lost)
                    competing.append(value)
                worst_kept = sorted(competing)[promotable_index(len(competing), early.reduction_factor)]
                if value <= worst_kept:
                    self._violate(
                        f"trial {trial} stopped by its worker at epoch {epoch} (val_loss {value}) though the study "
                        f"keeps values up to {worst_kept} there ({len(competing)} values)"
                    )


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
