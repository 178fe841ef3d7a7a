"""HTCondorBackend against a schedd STAND-IN (hpscan.testing.condor), only where a test needs what the personal
pool cannot show on demand: a schedd that does not answer, two schedds, counted or slowed calls, job states held
still at a chosen moment. Each test says which in its docstring. Everything else runs against the real daemons:
tests/integration/htcondor/test_htcondor_realpool.py and the htcondor case of test_backend_contract.py.

The stand-in keeps htcondor2.Schedd's signatures (checked below) and returns real ClassAds."""

from __future__ import annotations

import inspect
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import htcondor2
import pytest

from hpscan.api.sites import HTCondorSite
from hpscan.api.spec import HPScanSpec
from hpscan.api.status import ShardPhase
from hpscan.backends.base import ScanRef, ShardLaunch
from hpscan.backends.htcondor import PROJECTION, HTCondorBackend
from hpscan.core.planning import Plan, plan
from hpscan.errors import BackendError, SchedulerUnavailable
from hpscan.testing.condor import COMPLETED, ScheddStandIn

LOCAL = {}
REMOTE = {"schedd": "ce01.example.org", "pool": "cm.example.org:9618"}


def make_spec(*sites: tuple[str, dict], shards: int = 4) -> HPScanSpec:
    return HPScanSpec.model_validate(
        {
            "parameters": [{"name": "layer1", "values": [32, 64, 96, 128]}, {"name": "lr", "values": [0.1, 0.01]}],
            "sharding": {"shards": shards},
            "gpu": {"count": 1, "minComputeCapability": "7.0"},
            "payload": {"image": "img:1"},
            "sites": [{"name": name, "htcondor": block} for name, block in (sites or [("grid", LOCAL)])],
        }
    )


class Pool:
    """One stand-in schedd per (pool, schedd), as locate_schedd would find them."""

    def __init__(self) -> None:
        self.schedds: dict[tuple[str | None, str | None], ScheddStandIn] = {}
        self.located = 0

    def __call__(self, site: HTCondorSite) -> ScheddStandIn:
        self.located += 1
        return self.schedds.setdefault((site.pool, site.schedd), ScheddStandIn(site.schedd or "local"))

    def of(self, block: dict) -> ScheddStandIn:
        return self.schedds[(block.get("pool"), block.get("schedd"))]


@pytest.fixture
def pool() -> Pool:
    return Pool()


@pytest.fixture
def backend(tmp_path: Path, pool: Pool) -> HTCondorBackend:
    return HTCondorBackend(tmp_path / "work", schedd_factory=pool, max_age_seconds=0)


def launches(planned: Plan, spec: HPScanSpec, shards=None, site_index: int = 0) -> list[ShardLaunch]:
    wanted = range(planned.shard_count) if shards is None else shards
    return [ShardLaunch(planned.shard_file(s), spec.sites[site_index]) for s in wanted]


SCAN = ScanRef(name="dl1", namespace="atlas", uid="uid-1")


def test_the_stand_in_keeps_the_real_schedd_signatures():
    """The stand-in itself: the methods the backend calls take the real schedd's arguments."""
    for method in ("query", "submit", "act", "spool", "retrieve", "edit"):
        real = list(inspect.signature(getattr(htcondor2.Schedd, method)).parameters)
        ours = list(inspect.signature(getattr(ScheddStandIn, method)).parameters)
        assert ours == real, method


def test_a_removed_shard_is_submitted_again(backend, pool):
    """STAND-IN: a removed job still in the queue (JobStatus 3), a moment a real schedd does not hold still."""
    spec = make_spec()
    planned = plan(SCAN.name, spec)
    backend.submit(SCAN, spec, launches(planned, spec, [0]))
    schedd = pool.of(LOCAL)
    job = schedd.job_of("uid-1", 0)
    schedd.set(job, JobStatus=3, RemoveReason="hpscan: scan suspended or deleted")  # on its way out
    backend.submit(SCAN, spec, launches(planned, spec, [0]))
    assert schedd.count("submit") == 2


def test_one_query_per_schedd_per_cycle_for_many_scans(backend, pool):
    """STAND-IN: two schedds, and every call counted (the personal pool has one schedd)."""
    scans = [ScanRef(name=f"scan{i}", uid=f"uid-{i}") for i in range(6)]
    for i, scan in enumerate(scans):
        if i % 2:  # half the scans spread over both schedds
            spec = make_spec(("a", LOCAL), ("b", REMOTE))
            planned = plan(scan.name, spec)
            backend.submit(scan, spec, launches(planned, spec, [0, 1]) + launches(planned, spec, [2, 3], 1))
        else:
            spec = make_spec(("a", LOCAL))
            planned = plan(scan.name, spec)
            backend.submit(scan, spec, launches(planned, spec))
    local, remote = pool.of(LOCAL), pool.of(REMOTE)
    now = [0.0]
    backend.clock = lambda: now[0]
    backend.max_age_seconds = 30
    before = local.count("query"), remote.count("query")
    backend.refresh()  # the shared poller's cycle
    polled = {scan.uid: backend.poll(scan) for scan in scans}
    assert (local.count("query"), remote.count("query")) == (before[0] + 1, before[1] + 1)
    now[0] = 31.0  # the cycle is stale: the first poll refreshes for every scan, the others reuse it
    polled = {scan.uid: backend.poll(scan) for scan in scans}
    assert (local.count("query"), remote.count("query")) == (before[0] + 2, before[1] + 2)
    constraint, projection = local.calls[-1][1]
    assert all(f'"uid-{i}"' in constraint for i in range(6))
    remote_constraint = remote.calls[-1][1][0]
    assert '"uid-1"' in remote_constraint and '"uid-0"' not in remote_constraint  # only scans using it
    assert projection == PROJECTION
    assert all(len(states) == 4 for states in polled.values())
    assert pool.located == 2  # schedds are located once and reused


def test_states_holds_and_exit_codes_map_to_shard_phases(backend, pool):
    """STAND-IN: six job states at once, incl. a job suspended by the site and one removed by an admin with a
    reason (the real pool shows hold, exits and retries: test_htcondor_realpool.py)."""
    spec = make_spec(shards=6)
    planned = plan(SCAN.name, spec)
    backend.submit(SCAN, spec, launches(planned, spec))
    schedd = pool.of(LOCAL)
    jobs = [schedd.job_of("uid-1", s) for s in range(6)]
    schedd.start(jobs[1])
    schedd.hold(jobs[2], "Error from slot1@wn42: Failed to start the container: no such image")
    schedd.start(jobs[3])
    schedd.complete(jobs[3], 0)
    schedd.start(jobs[4])
    schedd.complete(jobs[4], 3)
    schedd.set(jobs[5], NumJobStarts=2)  # failed twice, waits for its third attempt
    states = backend.poll(SCAN)
    assert states[0].phase == ShardPhase.PENDING and states[0].reason is None
    assert states[1].phase == ShardPhase.RUNNING and states[1].attempts == 1
    assert states[1].job == jobs[1] and states[1].site == "grid"
    assert (states[2].phase, states[2].reason) == (ShardPhase.PENDING, "Held")
    assert states[2].message == "Error from slot1@wn42: Failed to start the container: no such image"
    assert states[3].phase == ShardPhase.SUCCEEDED
    assert (states[4].phase, states[4].reason) == (ShardPhase.FAILED, "GPUUnavailable")
    assert "exit code 3" in (states[4].message or "")
    assert (states[5].phase, states[5].reason) == (ShardPhase.PENDING, "Retrying")
    schedd.set(jobs[5], JobStatus=COMPLETED, ExitCode=1, NumJobStarts=3)
    schedd.set(jobs[0], JobStatus=3, RemoveReason="removed by the site admin")
    states = backend.poll(SCAN)
    assert (states[5].phase, states[5].reason, states[5].attempts) == (ShardPhase.FAILED, "PayloadFailed", 3)
    assert (states[0].phase, states[0].reason) == (ShardPhase.FAILED, "Removed")
    assert "site admin" in (states[0].message or "")


def test_an_attempt_past_its_timeout_is_retried_then_fails_the_shard(backend, pool):
    """STAND-IN: the schedd's periodic pass held still between attempts (the real pool runs the same in
    test_htcondor_realpool.py). A job past allowed_execute_duration is held (JobExecuteExceeded, 47); before, it sat
    held until its site's hold timeout. spec.retries 1: released once, removed after the second timeout, and the
    shard fails saying why; the job stays queued (a shard without one would be submitted again) until forgotten."""
    spec = HPScanSpec.model_validate(
        make_spec().model_dump(by_alias=True) | {"retries": 1, "payload": {"image": "img:1", "timeoutSeconds": 60}}
    )
    planned = plan(SCAN.name, spec)
    backend.submit(SCAN, spec, launches(planned, spec, [0]))
    schedd = pool.of(LOCAL)
    job = schedd.job_of("uid-1", 0)
    for attempt in (1, 2):
        schedd.start(job)
        schedd.hold(job, "The job exceeded allowed execute duration of 00:01:00", code=47)
        assert (backend.poll(SCAN)[0].phase, backend.poll(SCAN)[0].reason) == (ShardPhase.PENDING, "Held")
        schedd.periodic()
        state = backend.poll(SCAN)[0]
        if attempt == 1:
            assert (state.phase, state.reason, state.message) == ("Pending", "Retrying", "attempt 2 waits for a slot")
    assert (state.phase, state.reason, state.attempts) == (ShardPhase.FAILED, "PayloadFailed", 2)
    assert state.message == (
        "the attempt ran past spec.payload.timeoutSeconds (60 s) and was stopped; no retry left after 2 attempt(s)"
    )
    schedd.periodic()
    assert backend.poll(SCAN)[0].phase == ShardPhase.FAILED  # still queued: the poller keeps seeing it fail
    backend.forget(SCAN)
    schedd.periodic()
    assert shards_of(schedd, "uid-1") == [] and job in schedd.history  # released with the completed jobs


def shards_of(schedd: ScheddStandIn, uid: str) -> list[int]:
    return sorted(ad.eval("HPScanShard") for ad in schedd.jobs.values() if ad.eval("HPScanUid") == uid)


def test_cancel_removes_the_scans_unfinished_jobs_with_one_constraint(backend, pool):
    """STAND-IN: the remove calls counted, beside a completed job of the same scan held in place (the real pool
    cancels whole scans in test_backend_contract.py)."""
    spec = make_spec(shards=5)
    planned = plan(SCAN.name, spec)
    backend.submit(SCAN, spec, launches(planned, spec))
    other = ScanRef(name="other", uid="uid-2")
    backend.submit(other, spec, launches(plan("other", spec), spec))
    schedd = pool.of(LOCAL)
    schedd.complete(schedd.job_of("uid-1", 4), 0)
    backend.cancel(SCAN, [1, 3])
    removes = [args for name, args in schedd.calls if name == "act"]
    assert len(removes) == 1  # one constraint for both shards
    action, _constraint, reason = removes[0]
    assert action == htcondor2.JobAction.Remove
    assert reason.startswith("hpscan:")
    assert shards_of(schedd, "uid-1") == [0, 2, 4]
    states = backend.poll(SCAN)
    assert states[1].phase == ShardPhase.SUSPENDED and states[3].phase == ShardPhase.SUSPENDED
    backend.cancel(SCAN)  # suspend everything: the completed shard keeps its job and its state
    assert shards_of(schedd, "uid-1") == [4]
    states = backend.poll(SCAN)
    assert {i: s.phase for i, s in states.items()} == {
        0: ShardPhase.SUSPENDED,
        1: ShardPhase.SUSPENDED,
        2: ShardPhase.SUSPENDED,
        3: ShardPhase.SUSPENDED,
        4: ShardPhase.SUCCEEDED,
    }
    assert shards_of(schedd, "uid-2") == [0, 1, 2, 3, 4]
    # Suspended shards start again when asked (decide() restarts SUSPENDED shards).
    backend.submit(SCAN, spec, launches(planned, spec, [1]))
    assert backend.poll(SCAN)[1].phase == ShardPhase.PENDING


def test_forget_a_deleted_scan_lets_its_completed_jobs_leave(backend, pool):
    """STAND-IN: ends with a schedd that does not answer (the operator test on the real pool forgets a scan)."""
    spec = make_spec()
    planned = plan(SCAN.name, spec)
    backend.submit(SCAN, spec, launches(planned, spec))
    other = ScanRef(name="other", uid="uid-2")
    backend.submit(other, spec, launches(plan("other", spec), spec))
    schedd = pool.of(LOCAL)
    schedd.complete(schedd.job_of("uid-1", 0), 0)
    schedd.complete(schedd.job_of("uid-2", 0), 0)
    assert shards_of(schedd, "uid-1") == [0, 1, 2, 3]  # completed jobs stay (leave_in_queue)
    backend.forget(SCAN, delete_sandboxes=True)
    assert shards_of(schedd, "uid-1") == []
    assert shards_of(schedd, "uid-2") == [0, 1, 2, 3]
    assert not backend.scan_dir(SCAN).exists()
    assert backend.poll(SCAN) == {}
    backend.track(SCAN, spec)
    backend.forget(SCAN)  # nothing left to remove or release: still fine
    pool.of(LOCAL).down = "Connection refused"
    backend.track(SCAN, spec)
    with pytest.raises(SchedulerUnavailable):
        backend.forget(SCAN)  # the finalizer is retried


def test_the_poller_survives_a_schedd_that_does_not_answer(backend, pool):
    """STAND-IN: a schedd that stops answering and comes back."""
    spec = make_spec(("a", LOCAL), ("b", REMOTE))
    planned = plan(SCAN.name, spec)
    backend.submit(SCAN, spec, launches(planned, spec, [0, 1], site_index=0) + launches(planned, spec, [2, 3], 1))
    backend.poll(SCAN)
    pool.of(REMOTE).down = "Failed communication with schedd"
    backend.refresh()  # never raises
    states = backend.poll(SCAN)
    assert states[0].reason is None
    assert (states[2].reason, states[2].phase) == ("SchedulerUnavailable", ShardPhase.PENDING)
    assert "ce01.example.org" in (states[2].message or "")
    assert "Failed communication" in (states[2].message or "")
    located = pool.located
    pool.of(REMOTE).down = None
    assert backend.poll(SCAN)[2].reason is None
    assert pool.located == located + 1  # a schedd that failed is located afresh


def test_a_schedd_that_never_answered_is_an_outage_of_its_site_not_an_empty_scan(backend, pool):
    """STAND-IN: a schedd that never answers."""
    spec = make_spec(("grid", REMOTE))
    backend.track(SCAN, spec)
    pool(HTCondorSite(**REMOTE)).down = "Connection refused"
    assert backend.poll(SCAN) == {}
    assert re.search(r"ce01.example.org .*Connection refused", backend.outages(SCAN)["grid"])
    with pytest.raises(SchedulerUnavailable, match=r"ce01\.example\.org"):
        backend.submit(SCAN, spec, launches(plan(SCAN.name, spec), spec))


def test_a_schedd_that_cannot_be_located(tmp_path):
    def nowhere(site):
        raise htcondor2.HTCondorException("Failed communication with collector.")

    backend = HTCondorBackend(tmp_path, schedd_factory=nowhere)
    spec = make_spec(("grid", REMOTE))
    with pytest.raises(SchedulerUnavailable, match=r"locating it.*collector"):
        backend.submit(SCAN, spec, launches(plan(SCAN.name, spec), spec))


def test_scans_need_a_uid_and_sites_an_htcondor_block(backend):
    spec = make_spec()
    with pytest.raises(BackendError, match="no uid"):
        backend.poll(ScanRef(name="x"))
    k8s = HPScanSpec.model_validate(
        {**spec.model_dump(by_alias=True, exclude_none=True), "sites": [{"name": "k", "kubernetes": {}}]}
    )
    with pytest.raises(BackendError, match="not an htcondor site"):
        backend.submit(SCAN, k8s, launches(plan(SCAN.name, k8s), k8s))


def test_concurrent_polls_share_one_cycle(tmp_path):
    """kopf runs sync handlers on several threads: polls that arrive together must share one query. STAND-IN: a
    schedd slowed down and its queries counted."""

    class SlowSchedd(ScheddStandIn):
        def query(self, constraint="True", projection=[], callback=None, limit=-1, opts=None):  # noqa: B006
            time.sleep(0.05)  # a schedd answers in tens of milliseconds at best
            return super().query(constraint, projection, callback, limit, opts)

    schedd = SlowSchedd()
    backend = HTCondorBackend(tmp_path, schedd_factory=lambda site: schedd, max_age_seconds=60)
    spec = make_spec()
    scans = [ScanRef(name=f"s{i}", uid=f"uid-{i}") for i in range(8)]
    for scan in scans:
        backend.track(scan, spec)
    with ThreadPoolExecutor(max_workers=8) as pool_:
        results = list(pool_.map(backend.poll, scans))
    assert results == [{}] * 8
    assert schedd.count("query") == 1
