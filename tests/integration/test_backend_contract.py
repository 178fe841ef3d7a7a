"""The backend contract, one suite for every backend (as pyhf's `backend` fixture and dask-jobqueue's `all_envs`):
idempotent submit, cancel -> Suspended with records kept, exit 3 -> GPUUnavailable and never retried, attempts
counted, and records handed over again after a restart folded once with nothing trained twice.

Each backend runs the contract-honouring stand-in payload (tests/unit/payloads) for real:
- local: child processes;
- kubernetes: Jobs on the local control plane, pods on its node agent (a kubelet stand-in), records through
  the shard ConfigMaps;
- htcondor: the backend against the personal pool's real daemons (the condor_pool fixture): a remote-style site
  (input spooled, output retrieved), vanilla-universe jobs matched to the simulated GPUs, records live through
  chirp and back in the output sandbox, retries by the schedd's max_retries and retry_until.

- sim-kubernetes, sim-htcondor: the same real backends against the simulation's neighbours
  (hpscan.testing.sim: a simulated API server and Job controller, the schedd stand-in and a simulated startd, with
  workers that honour the same payload knobs), with no faults: the simulated world must agree with the real one
  on every scenario here, or the simulation's verdicts mean nothing (docs/simulation.md).

A harness knows how to build a fresh backend (what a restarted runner or operator does), where the shards go,
and how to let the batch system make progress.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
from kubernetes import client
from operator_support import REPO, create, scan_manifest

from hpscan.api.sites import Site
from hpscan.api.spec import HPScanSpec
from hpscan.api.status import ShardPhase, ShardStatus
from hpscan.backends.base import Backend, ScanRef, ShardLaunch, pull_refusal
from hpscan.backends.htcondor import HTCondorBackend
from hpscan.backends.kubernetes import KubernetesBackend
from hpscan.backends.local import LocalBackend
from hpscan.core.brokering import Target
from hpscan.core.planning import Plan, plan
from hpscan.core.results import Aggregate, aggregate
from hpscan.core.search import Search
from hpscan.core.shardfiles import write_shard_files
from hpscan.core.summary import build_status
from hpscan.engine import StepInput, step

pytestmark = pytest.mark.integration

BACKENDS = ["local", "kubernetes", "htcondor", "sim-kubernetes", "sim-htcondor"]


class Harness(Protocol):
    ref: ScanRef
    site: Site | None
    trained_log: Path

    def new_backend(self) -> Backend: ...

    def drive(self) -> None: ...


def contract_spec(knobs: dict[str, Any], trained_log: Path, retries: int = 1) -> dict[str, Any]:
    """Two shards of four combinations, run by the stand-in payload with these knobs."""
    spec = scan_manifest("contract", {**knobs, "trainedLog": str(trained_log)})["spec"]
    spec.update({"parameters": [{"name": "x", "values": [1, 2, 3, 4]}], "sharding": {"shards": 2}, "retries": retries})
    return spec


class LocalHarness:
    def __init__(self, tmp_path: Path, spec: HPScanSpec, planned: Plan) -> None:
        self.run_dir, self.spec = tmp_path / "run", spec
        write_shard_files(planned, self.run_dir / "shards")
        self.ref, self.site = ScanRef("contract", "local", "u-local"), None

    def new_backend(self) -> Backend:
        return LocalBackend(self.run_dir, retries=self.spec.retries)

    def drive(self) -> None:
        time.sleep(0.2)


class KubernetesHarness:
    def __init__(self, k8s: client.ApiClient, namespace: str, body: dict[str, Any]) -> None:
        created = create(k8s, namespace, body)  # the owner of the Jobs (no operator runs: the test drives)
        self.k8s = k8s
        self.ref = ScanRef("contract", namespace, created["metadata"]["uid"])
        self.site = Site.model_validate(body["spec"]["sites"][0])

    def new_backend(self) -> Backend:
        return KubernetesBackend(self.k8s)

    def drive(self) -> None:
        time.sleep(0.5)


class HTCondorHarness:
    """A site that names the pool's collector and schedd (spooled input, retrieved output, as at a grid site);
    the jobs run the payload in the vanilla universe with the pool's job Python (condor_pool.job_bin)."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.work_dir = pool.job_dir("contract")
        self.ref = ScanRef("contract", "physics", "u-condor-" + secrets.token_hex(3))
        block = {"universe": "vanilla", "executable": "/usr/bin/env", "requestMemory": "256MB", "requestDisk": "64MB"}
        self.site = Site.model_validate({"name": "grid", "htcondor": {**pool.site(), **block}})

    def job_payload(self, spec: dict[str, Any]) -> None:
        """The payload as the submitting user runs it: the job Python on PATH (hpscan's shard runner too)."""
        bin_dir = self.pool.job_bin()
        spec["payload"]["command"] = [str(bin_dir / "python"), spec["payload"]["command"][-1]]
        spec["payload"]["gpuCheck"] = [str(bin_dir / "python"), *spec["payload"]["gpuCheck"][1:]]  # the site probe
        spec["payload"]["env"] = [{"name": "PATH", "value": f"{bin_dir}:/usr/bin:/bin"}]

    def new_backend(self) -> Backend:
        return HTCondorBackend(self.work_dir, max_age_seconds=0)

    def drive(self) -> None:
        time.sleep(0.5)


class SimHarness:
    """A backend against the simulated neighbours of hpscan.testing.sim, on its virtual clock: each drive() is
    one virtual second of the Job controller or startd."""

    def __init__(self, backend: str, spec: dict[str, Any]) -> None:
        from hpscan.testing.sim.scenario import NAMESPACE, Scenario
        from hpscan.testing.sim.world import World

        self.world = World(Scenario(seed=1, backend=backend))
        self.ref = ScanRef("contract", NAMESPACE, f"u-sim-{backend}")
        self.site = Site.model_validate(spec["sites"][0])

    def new_backend(self) -> Backend:
        return self.world.operator()[0]

    def drive(self) -> None:
        self.world.server.now += 1
        self.world.nodes.tick(self.world.server.now)


@pytest.fixture(params=BACKENDS)
def make_harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., tuple[Harness, Plan]]]:
    """make_harness(knobs, retries) -> (harness, plan), for the backend this test is parametrized with."""

    made: list[Any] = []

    def make(knobs: dict[str, Any], retries: int = 1) -> tuple[Harness, Plan]:
        # Pods see their own /tmp (an emptyDir), not pytest's: the Kubernetes payload logs under the repository.
        log_dir = request.getfixturevalue("pod_visible_dir") if request.param == "kubernetes" else tmp_path
        if request.param == "htcondor":  # jobs run as the pool's submitting user, who cannot write to tmp_path
            harness: Any = HTCondorHarness(request.getfixturevalue("condor_pool"))
            log_dir = harness.pool.job_dir("trained")
        trained_log = log_dir / "trained.log"
        spec_dict = contract_spec(knobs, trained_log, retries)
        if request.param == "htcondor":
            spec_dict["sites"] = [harness.site.to_wire()]
            harness.job_payload(spec_dict)
        if request.param.startswith("sim-"):
            kind = request.param.removeprefix("sim-")
            spec_dict["sites"] = [{"name": "cluster", kind: {}}]
            harness = SimHarness(kind, spec_dict)
        spec = HPScanSpec.model_validate(spec_dict)
        planned = plan("contract", spec)
        if request.param == "local":
            harness = LocalHarness(tmp_path, spec, planned)
        elif request.param == "kubernetes":
            k8s = request.getfixturevalue("k8s")
            request.getfixturevalue("crd_applied")
            body = scan_manifest("contract")
            body["spec"] = spec_dict
            body["spec"]["suspend"] = True  # belt and braces: nothing else acts on it
            harness = KubernetesHarness(k8s, request.getfixturevalue("namespace"), body)
        harness.trained_log = trained_log
        harness.spec = spec
        made.append(harness)
        return harness, planned

    make.backend = request.param  # type: ignore[attr-defined]
    yield make
    for harness in made:
        if isinstance(harness, HTCondorHarness):  # as a deleted scan: its jobs leave the pool's queue
            backend = harness.new_backend()
            backend.track(harness.ref, harness.spec)
            backend.forget(harness.ref)


@pytest.fixture(scope="module")
def crd_applied(cluster: Any) -> None:
    cluster.kubectl("apply", "-f", str(REPO / "crds" / "hpscan.io_hpscans.yaml"))
    cluster.kubectl("wait", "--for=condition=Established", "crd/hpscans.hpscan.io", "--timeout=60s")


def harness_pace(make_harness: Any) -> float:
    """How much slower than a local process a backend starts and reports (HTCondor: a negotiation cycle, a
    shadow, a starter, chirp), so a test can cancel a shard between its first and last record."""
    return 5.0 if make_harness.backend == "htcondor" else 1.0


def launches(harness: Any, planned: Plan) -> list[ShardLaunch]:
    return [ShardLaunch(shard_file, harness.site) for shard_file in planned.shard_files()]


def start(harness: Any, backend: Backend, planned: Plan) -> None:
    backend.track(harness.ref, harness.spec)
    backend.prepare(harness.ref, harness.spec, planned.shard_count)
    backend.submit(harness.ref, harness.spec, launches(harness, planned))


def run_until(
    harness: Any,
    backend: Backend,
    done: Callable[[dict[int, ShardStatus], list], bool],
    records: list,
    timeout: float = 120,
) -> dict[int, ShardStatus]:
    """Let the batch system work, collecting records, until done(states, records) holds."""
    deadline = time.monotonic() + timeout
    while True:
        harness.drive()
        states = backend.poll(harness.ref)
        records += backend.fetch_records(harness.ref)
        if done(states, records):
            return states
        if time.monotonic() > deadline:
            raise TimeoutError(f"backend states: {states}; {len(records)} records")


def ended(states: dict[int, ShardStatus], _records: list, shards: int = 2) -> bool:
    return len(states) == shards and all(s.phase in {ShardPhase.SUCCEEDED, ShardPhase.FAILED} for s in states.values())


def trained(harness: Any) -> Counter[str]:
    log = harness.trained_log
    return Counter(log.read_text().split()) if log.exists() else Counter()


def test_submit_is_idempotent(make_harness):
    harness, planned = make_harness({})
    backend = harness.new_backend()
    start(harness, backend, planned)
    start(harness, backend, planned)  # a retried reconcile submits the same shards again
    records: list = []
    states = run_until(harness, backend, ended, records)
    assert {s.phase for s in states.values()} == {ShardPhase.SUCCEEDED}
    assert all(s.attempts == 1 for s in states.values()), states
    assert set(trained(harness).values()) == {1} and len(trained(harness)) == planned.total


def test_cancel_suspends_and_keeps_the_records(make_harness):
    harness, planned = make_harness({"sleep": 0.6 * harness_pace(make_harness)})
    backend = harness.new_backend()
    start(harness, backend, planned)
    records: list = []
    run_until(harness, backend, lambda _states, got: len(got) >= 1, records)  # HTCondor: chirped while it runs
    backend.cancel(harness.ref)
    states = run_until(
        harness, backend, lambda s, _r: bool(s) and all(x.phase == ShardPhase.SUSPENDED for x in s.values()), records
    )
    assert set(states) == {0, 1}
    kept = {r.id for r in records}
    summary = aggregate(planned, records)
    assert summary.recorded == len(kept) < planned.total  # what ran before the cancel stays, nothing more ran


@pytest.mark.parametrize(("code", "reason"), [(2, "InvalidInput"), (3, "GPUUnavailable")])
def test_a_final_exit_fails_the_shard_at_once_and_is_never_retried(make_harness, code, reason):
    """Exit 2 (the payload refused its input) and 3 (no usable GPU) would fail the same way again."""
    harness, planned = make_harness({"exitCode": code}, retries=2)
    backend = harness.new_backend()
    start(harness, backend, planned)
    states = run_until(harness, backend, ended, [])
    assert {s.phase for s in states.values()} == {ShardPhase.FAILED}
    assert {s.reason for s in states.values()} == {reason}
    assert {s.attempts for s in states.values()} == {1}
    if not isinstance(harness, KubernetesHarness):  # the node agent stand-in keeps no termination message
        assert all(f"exiting with {code} as asked" in (s.message or "") for s in states.values()), states
    summary = build_status(planned, aggregate(planned, []), states)
    assert (summary.phase, summary.combinations.failed, summary.combinations.pending) == ("Failed", planned.total, 0)


def test_a_crashed_attempt_is_retried_and_counted(make_harness):
    harness, planned = make_harness({"failAttempts": {"0": 1}}, retries=1)
    backend = harness.new_backend()
    start(harness, backend, planned)
    records: list = []
    states = run_until(harness, backend, ended, records)
    assert {s.phase for s in states.values()} == {ShardPhase.SUCCEEDED}
    assert (states[0].attempts, states[1].attempts) == (2, 1)
    assert aggregate(planned, records).succeeded == planned.total
    assert set(trained(harness).values()) == {1}, "the retry resumed from what the first attempt recorded"


def test_after_a_restart_records_fold_once_and_nothing_is_trained_twice(make_harness):
    harness, planned = make_harness({"sleep": 0.3 * harness_pace(make_harness)})
    first = harness.new_backend()
    start(harness, first, planned)
    records: list = []
    run_until(harness, first, lambda _s, got: len(got) >= 1, records)
    first.cancel(harness.ref)  # suspended, then the runner or operator dies

    second = harness.new_backend()  # a restarted runner or operator
    start(harness, second, planned)
    run_until(harness, second, ended, records)
    summary = aggregate(planned, records)
    assert summary.succeeded == planned.total and summary.failed == 0
    assert set(trained(harness).values()) == {1}, trained(harness)


def test_workers_that_pull_get_trials_and_stops_and_a_restart_repeats_nothing(make_harness):
    """Workers that pull (TPE + ASHA through hpscan.engine.step): trials reach running workers through the
    backend's channel (stops too, when they come in time), a restarted shell (new backend, new search) rebuilds
    from the channels, and the budget is spent exactly, each trial once. A backend without such a channel
    refuses the plan up front."""
    harness, _static = make_harness({"sleep": 0.6 * harness_pace(make_harness), "epochs": 4})
    spec_dict = harness.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    spec_dict["parameters"] = [{"name": "x", "values": [1, 2, 3, 4, 5, 6, 7, 8]}]
    spec_dict["sampling"] = {"strategy": "tpe", "samples": 6, "seed": 2, "trialsPerWorker": 1}
    spec_dict["earlyStopping"] = {"strategy": "asha", "minEpochs": 1, "reductionFactor": 2}
    spec = HPScanSpec.model_validate(spec_dict)
    harness.spec = spec
    pulled = plan("contract", spec)
    if isinstance(harness, LocalHarness):  # the shell writes the shard files: these workers pull
        write_shard_files(pulled, harness.run_dir / "shards")
    backend = harness.new_backend()
    if not backend.pulls:
        assert "has no channel to hand them trials" in pull_refusal(backend, pulled)[0]
        return
    targets = [Target.of(harness.site)] if harness.site else [Target(name="local", backend="local")]
    agg, search, status = Aggregate(pulled), Search(pulled), None
    if isinstance(backend, LocalBackend):
        search.rebuild({}, [], [])  # the local shell rebuilds from its run folder (local_scan.resume_search)
    deadline = time.monotonic() + 300
    restarted = False
    while status is None or status.phase not in {"Succeeded", "Failed"}:
        assert time.monotonic() < deadline, status
        result = step(
            StepInput(harness.ref, spec, agg, targets, previous=status, search=search), {backend.name: backend}
        )
        status = result.status
        if not restarted and agg.recorded >= 2:  # kill -9 of the shell: a new backend and search, same channels
            restarted = True
            if isinstance(backend, LocalBackend):  # its payloads die with it (PR_SET_PDEATHSIG); other jobs go on
                backend.cancel(harness.ref)
            backend, agg, search, status = harness.new_backend(), Aggregate(pulled), Search(pulled), None
            if isinstance(backend, LocalBackend):
                search.rebuild(backend.assignments(harness.ref), [], [])
        harness.drive()
    assert status.phase == "Succeeded", status.message
    assert restarted
    counts = status.combinations
    assert counts.suggested == counts.total == 6 and counts.succeeded + counts.pruned == 6
    assert set(trained(harness).values()) == {1} and len(trained(harness)) == 6, trained(harness)
