"""The backend contract, one suite for every backend (as pyhf's `backend` fixture and dask-jobqueue's `all_envs`):
idempotent submit, cancel -> Suspended with records kept, exits 2 and 3 fail at once and are never retried,
attempts counted, records handed over again after a restart folded once with nothing trained twice, and workers
that pull get their trials and stops.

The tests here are imported by the modules that run them, each with a ``make_harness`` fixture made by
``harness_fixture`` from its own dict of registry name -> harness: test_backend_contract_fast.py (the unit lane:
local processes and the in-memory fake) and tests/integration/backends/test_backend_contract.py (kubernetes, htcondor and
the simulation's neighbours). Each backend runs the contract-honouring stand-in payload (tests/support/payloads).

A harness knows how to build a fresh backend (what a restarted runner or operator does), where the shards go,
and how to let the batch system make progress.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, Protocol

import pytest

from hpscan.api.sites import Site
from hpscan.api.spec import HPScanSpec
from hpscan.api.status import ShardPhase, ShardStatus
from hpscan.backends.base import Backend, ScanRef, ShardLaunch, pull_refusal
from hpscan.backends.local import LocalBackend
from hpscan.core.brokering import Target
from hpscan.core.planning import Plan, plan
from hpscan.core.results import Aggregate, aggregate
from hpscan.core.search import Search
from hpscan.core.shardfiles import write_shard_files
from hpscan.core.summary import build_status
from hpscan.engine import StepInput, step
from hpscan.testing.fake_backend import FakeBackend, FakeBatch, registered
from support import CONTRACT_PAYLOAD

PAYLOAD = CONTRACT_PAYLOAD


class Harness(Protocol):
    ref: ScanRef
    site: Site | None
    spec: HPScanSpec
    trained_log: Path
    pace: ClassVar[float]
    """How much slower than a local process the backend starts and reports (HTCondor: a negotiation cycle, a
    shadow, a starter, chirp), so a test can cancel a shard between its first and last record."""
    keeps_exit_message: ClassVar[bool]
    """Whether a shard's message carries the payload's last words (the Kubernetes node agent stand-in keeps none)."""
    jobs_die_with_the_shell: ClassVar[bool]
    """Local processes die with the shell that started them, which rebuilds its search from its run folder."""

    def new_backend(self) -> Backend: ...

    def drive(self) -> None: ...

    def replanned(self, planned: Plan) -> None:
        """The test changed the plan: a shell that writes the shard files writes them again."""

    def close(self) -> None:
        """After the test: release what the batch system holds."""


HarnessFactory = Callable[[pytest.FixtureRequest, Path, dict[str, Any], int], Harness]
"""(request, tmp_path, knobs, retries) -> a harness whose spec runs the stand-in payload with these knobs."""


def contract_spec(knobs: dict[str, Any], trained_log: Path, retries: int = 1) -> dict[str, Any]:
    """Two shards of four combinations, run by the stand-in payload with these knobs, at one Kubernetes site."""
    return {
        "parameters": [{"name": "x", "values": [1, 2, 3, 4]}],
        "sharding": {"shards": 2},
        "retries": retries,
        "gpu": {"count": 1, "required": True},
        "payload": {
            "image": "registry.example.org/contract-payload:1",
            "command": [sys.executable, str(PAYLOAD)],
            "gpuCheck": [sys.executable, str(PAYLOAD), "gpu-check"],
            "settings": {"contractPayload": {**knobs, "trainedLog": str(trained_log)}},
        },
        "sites": [
            {
                "name": "gpu-nodes",
                "kubernetes": {
                    "nodeSelector": {"nvidia.com/gpu.present": "true"},
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                },
            }
        ],
    }


class BaseHarness:
    """Defaults for the Harness protocol."""

    pace: ClassVar[float] = 1.0
    keeps_exit_message: ClassVar[bool] = True
    jobs_die_with_the_shell: ClassVar[bool] = False
    spec: HPScanSpec
    trained_log: Path

    def replanned(self, planned: Plan) -> None:
        pass

    def close(self) -> None:
        pass


class LocalHarness(BaseHarness):
    """Child processes in a run folder."""

    jobs_die_with_the_shell = True

    def __init__(self, request: pytest.FixtureRequest, tmp_path: Path, knobs: dict[str, Any], retries: int) -> None:
        self.trained_log = tmp_path / "trained.log"
        self.spec = HPScanSpec.model_validate(contract_spec(knobs, self.trained_log, retries))
        self.run_dir = tmp_path / "run"
        self.replanned(plan("contract", self.spec))
        self.ref, self.site = ScanRef("contract", "local", "u-local"), None

    def replanned(self, planned: Plan) -> None:
        write_shard_files(planned, self.run_dir / "shards")

    def new_backend(self) -> Backend:
        return LocalBackend(self.run_dir, retries=self.spec.retries)

    def drive(self) -> None:
        time.sleep(0.2)


class FakeHarness(BaseHarness):
    """The in-memory fake (hpscan.testing.fake_backend), registered as ``fake`` for the test: each poll is one
    virtual second, so drive() has nothing to do."""

    def __init__(self, request: pytest.FixtureRequest, tmp_path: Path, knobs: dict[str, Any], retries: int) -> None:
        self.registration = contextlib.ExitStack()
        self.batch = self.registration.enter_context(registered(FakeBatch()))
        self.trained_log = tmp_path / "trained.log"
        spec = contract_spec(knobs, self.trained_log, retries)
        spec["sites"] = [{"name": "fake-queue", "fake": {}}]
        self.spec = HPScanSpec.model_validate(spec)
        self.ref, self.site = ScanRef("contract", "physics", "u-fake"), self.spec.sites[0]

    def new_backend(self) -> Backend:
        return FakeBackend(self.batch)

    def drive(self) -> None:
        pass

    def close(self) -> None:
        self.registration.close()


def harness_fixture(harnesses: dict[str, HarnessFactory]) -> Any:
    """A ``make_harness`` fixture parametrised by these registry names: make_harness(knobs, retries) ->
    (harness, plan) for the backend the test runs with; each harness is closed after the test."""

    @pytest.fixture(params=list(harnesses))
    def make_harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., tuple[Harness, Plan]]]:
        made: list[Harness] = []
        build = harnesses[request.param]

        def make(knobs: dict[str, Any], retries: int = 1) -> tuple[Harness, Plan]:
            made.append(build(request, tmp_path, knobs, retries))
            return made[-1], plan("contract", made[-1].spec)

        make.backend = request.param  # type: ignore[attr-defined]
        make.pace = getattr(build, "pace", 1.0)  # type: ignore[attr-defined]
        yield make
        for harness in made:
            harness.close()

    return make_harness


def launches(harness: Harness, planned: Plan) -> list[ShardLaunch]:
    return [ShardLaunch(shard_file, harness.site) for shard_file in planned.shard_files()]


def start(harness: Harness, backend: Backend, planned: Plan) -> None:
    backend.track(harness.ref, harness.spec)
    backend.prepare(harness.ref, harness.spec, planned.shard_count)
    backend.submit(harness.ref, harness.spec, launches(harness, planned))


def run_until(
    harness: Harness,
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


def trained(harness: Harness) -> Counter[str]:
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
    harness, planned = make_harness({"sleep": 0.6 * make_harness.pace})
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
    if harness.keeps_exit_message:
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
    harness, planned = make_harness({"sleep": 0.3 * make_harness.pace})
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


def test_what_a_job_records_while_it_stops_is_kept_and_never_trained_again(make_harness):
    """A cancel stops a job gracefully (SIGTERM): a payload that finishes the combination in training first (as dl1
    ends its epoch) records it after the cancel began. That record comes back, and the shard, started again by a
    restarted runner or operator, never trains it again. (HTCondor lost it once: its cancel read the chirped records
    before removing the job, and a removed job's ad left the queue with the record chirped while it stopped.)"""
    harness, planned = make_harness({"sleep": 0.6 * make_harness.pace, "finishOnTerm": True})
    first = harness.new_backend()
    start(harness, first, planned)
    records: list = []
    run_until(harness, first, lambda _s, got: len(got) >= 1, records)  # the next combinations are in training
    first.cancel(harness.ref)

    second = harness.new_backend()
    start(harness, second, planned)
    run_until(harness, second, ended, records)
    assert aggregate(planned, records).succeeded == planned.total
    assert set(trained(harness).values()) == {1}, trained(harness)


def test_workers_that_pull_get_trials_and_stops_and_a_restart_repeats_nothing(make_harness):
    """Workers that pull (TPE + ASHA through hpscan.engine.step): trials reach running workers through the
    backend's channel (stops too, when they come in time), a restarted shell (new backend, new search) rebuilds
    from the channels, and the budget is spent exactly, each trial once. A backend without such a channel
    refuses the plan up front."""
    harness, _static = make_harness({"sleep": 0.6 * make_harness.pace, "epochs": 4})
    spec_dict = harness.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    spec_dict["parameters"] = [{"name": "x", "values": [1, 2, 3, 4, 5, 6, 7, 8]}]
    spec_dict["sampling"] = {"strategy": "tpe", "samples": 6, "seed": 2, "trialsPerWorker": 1}
    spec_dict["earlyStopping"] = {"strategy": "asha", "minEpochs": 1, "reductionFactor": 2}
    spec = HPScanSpec.model_validate(spec_dict)
    harness.spec = spec
    pulled = plan("contract", spec)
    harness.replanned(pulled)  # these workers pull
    backend = harness.new_backend()
    if not backend.pulls:
        assert "has no channel to hand them trials" in pull_refusal(backend, pulled)[0]
        return
    targets = [Target.of(harness.site)] if harness.site else [Target(name="local", backend="local")]
    agg, search, status = Aggregate(pulled), Search(pulled), None
    if harness.jobs_die_with_the_shell:
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
            if harness.jobs_die_with_the_shell:  # its payloads die with it (PR_SET_PDEATHSIG); other jobs go on
                backend.cancel(harness.ref)
            backend, agg, search, status = harness.new_backend(), Aggregate(pulled), Search(pulled), None
            if harness.jobs_die_with_the_shell:
                search.rebuild(backend.assignments(harness.ref), [], [])
        harness.drive()
    assert status.phase == "Succeeded", status.message
    assert restarted
    counts = status.combinations
    assert counts.suggested == counts.total == 6 and counts.succeeded + counts.pruned == 6
    assert set(trained(harness).values()) == {1} and len(trained(harness)) == 6, trained(harness)
