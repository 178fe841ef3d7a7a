"""What one simulated schedule is: its seeded scan, fault plan and manifest (hpscan.testing.sim.world runs it)."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

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
