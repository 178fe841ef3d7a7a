"""The HTCondor backend against the personal pool's real daemons (the condor_pool fixture: built from source,
cluster/condor/): the submit / poll / resubmit / cancel round trip, then what only a real pool shows: records
chirped by a running job reaching the scan's status, a held job's HoldReason, max_retries, a GPU request no slot
can meet, and the IDTOKEN of a site's Secret. The backend contract (test_backend_contract.py) runs here too.

Set HPSCAN_CONDOR_SITE to an htcondor site block (YAML or JSON) to aim the round trip at another access point
instead, with credentials the schedd accepts in the environment. Its jobs need not run: they are removed at the end.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
import uuid
from base64 import urlsafe_b64decode, urlsafe_b64encode
from typing import Any

import htcondor2
import pytest
import yaml

from hpscan.api.spec import HPScanSpec
from hpscan.api.status import ShardPhase, ShardStatus
from hpscan.backends.base import ScanRef, ShardLaunch
from hpscan.backends.htcondor import HTCondorBackend, locate_schedd
from hpscan.backends.htcondor.submit import write_sandboxes
from hpscan.core.planning import plan
from hpscan.core.results import aggregate
from hpscan.core.summary import build_status
from hpscan.errors import HPScanError
from support import CONTRACT_PAYLOAD

SITE = os.environ.get("HPSCAN_CONDOR_SITE")
pytestmark = [pytest.mark.integration]


@pytest.mark.parametrize("style", ["local schedd", "remote schedd"])
def test_submit_poll_resubmit_cancel_on_a_real_schedd(condor_pool, style):
    """{}: the local schedd of CONDOR_CONFIG. {pool, schedd}: located through the collector, inputs spooled, as at a
    grid site; right after spool() the real schedd keeps the jobs held a moment (StageInStart set), and a resubmit
    then must find them, not submit them again."""
    block = yaml.safe_load(SITE) if SITE else ({} if style == "local schedd" else condor_pool.site())
    work_dir = condor_pool.job_dir(f"backend-round-trip-{style}")  # the submitting user owns the sandboxes
    spec = HPScanSpec.model_validate(
        {
            "parameters": [{"name": "x", "values": [1, 2, 3, 4]}],
            "sharding": {"shards": 2},
            "gpu": {"count": int(os.environ.get("HPSCAN_CONDOR_GPUS", "0")), "required": False},
            "payload": {"image": os.environ.get("HPSCAN_CONDOR_IMAGE", "docker://python:3.12-slim")},
            "sites": [{"name": "real", "htcondor": block}],
        }
    )
    scan = ScanRef(name="hpscan-selftest", uid=f"selftest-{uuid.uuid4().hex[:12]}")
    planned = plan(scan.name, spec)
    launches = [ShardLaunch(f, spec.sites[0]) for f in planned.shard_files()]
    queries = []

    def counting(site):
        schedd = locate_schedd(site)
        query = schedd.query

        def counted(*args, **kwargs):
            queries.append(args)
            return query(*args, **kwargs)

        schedd.query = counted  # type: ignore[method-assign]
        return schedd

    backend = HTCondorBackend(work_dir, schedd_factory=counting, max_age_seconds=0)
    try:
        backend.submit(scan, spec, launches)
        states = backend.poll(scan)
        assert sorted(states) == [0, 1]
        assert all(s.phase in {ShardPhase.PENDING, ShardPhase.RUNNING} for s in states.values())
        assert len({str(s.job).split(".")[0] for s in states.values()}) == 1  # one cluster, one job per shard
        backend.submit(scan, spec, launches)  # idempotent: finds both jobs
        # ... and so does a restarted operator (a new backend) that crashed before it wrote the status
        restarted = HTCondorBackend(work_dir, schedd_factory=counting, max_age_seconds=0)
        restarted.submit(scan, spec, launches)
        assert [s.job for s in backend.poll(scan).values()] == [s.job for s in states.values()]
        assert [s.job for s in restarted.poll(scan).values()] == [s.job for s in states.values()]
    finally:
        backend.cancel(scan)
    after = backend.poll(scan)
    assert sorted(after) == [0, 1]
    assert all(s.phase == ShardPhase.SUSPENDED for s in after.values())
    backend.forget(scan, delete_sandboxes=True)


# --- the backend on jobs that run: the contract-honouring stand-in payload, run by the pool's job Python -------

PAYLOAD = str(CONTRACT_PAYLOAD)


def pool_scan(pool: Any, knobs: dict[str, Any], site: dict[str, Any] | None = None, **spec: Any) -> HPScanSpec:
    """One shard of two combinations on a remote-style site of the pool (spooled input, retrieved output), run in
    the vanilla universe as the submitting user."""
    bin_dir = pool.job_bin()
    block = {"universe": "vanilla", "executable": "/usr/bin/env", "requestMemory": "256MB", "requestDisk": "64MB"}
    return HPScanSpec.model_validate(
        {
            "parameters": [{"name": "x", "values": [1, 2]}],
            "sharding": {"shards": 1},
            "retries": 0,
            "gpu": {"count": 1, "required": False},
            "payload": {
                "image": "unused-in-the-vanilla-universe",
                "command": [str(bin_dir / "python"), os.path.abspath(PAYLOAD)],
                "settings": {"contractPayload": knobs},
                "env": [{"name": "PATH", "value": f"{bin_dir}:/usr/bin:/bin"}],
            },
            "sites": [{"name": "pool", "htcondor": {**pool.site(), **block, **(site or {})}}],
            **spec,
        }
    )


class Scan:
    """A scan submitted to the pool through a fresh backend; ``until`` polls like the engine does."""

    def __init__(self, pool: Any, spec: HPScanSpec, **backend: Any) -> None:
        self.ref = ScanRef(name="realpool", namespace="physics", uid=f"realpool-{uuid.uuid4().hex[:12]}")
        self.spec, self.planned = spec, plan("realpool", spec)
        self.backend = HTCondorBackend(pool.job_dir("realpool"), max_age_seconds=0, **backend)
        self.records: list = []
        self.pool = pool

    def submit(self) -> None:
        self.backend.prepare(self.ref, self.spec, self.planned.shard_count)
        launches = [ShardLaunch(f, self.spec.sites[0]) for f in self.planned.shard_files()]
        self.backend.submit(self.ref, self.spec, launches)

    def until(self, done: Any, what: str, timeout: float = 90) -> dict[int, ShardStatus]:
        seen: list[dict[int, ShardStatus]] = [{}]

        def check() -> dict[int, ShardStatus] | None:
            seen[0] = states = self.backend.poll(self.ref)
            self.records += self.backend.fetch_records(self.ref)
            return states if states and done(states[0]) else None

        try:
            return self.pool.wait(check, timeout, what, interval=0.5)
        except TimeoutError as error:
            raise TimeoutError(f"{error}; last states: {seen[0]}") from None

    def status(self, states: dict[int, ShardStatus]) -> Any:
        return build_status(self.planned, aggregate(self.planned, self.records), states)

    def close(self) -> None:
        self.backend.forget(self.ref, delete_sandboxes=True)


def test_chirped_records_reach_the_scan_status_while_the_job_runs(condor_pool):
    scan = Scan(condor_pool, pool_scan(condor_pool, {"sleep": 4}))  # a record after 4 s, the next 4 s later
    try:
        scan.submit()
        states = scan.until(lambda s: s.done >= 1, "the first chirped record")
        assert states[0].phase == ShardPhase.RUNNING, states  # live: the job still runs
        assert [r.id for r in scan.records] == [scan.planned.shard_combinations(0)[0].id]
        status = scan.status(states)
        assert (status.phase, status.combinations.succeeded, status.combinations.running) == ("Running", 1, 1)
        assert status.best is not None and status.best.value == scan.records[0].metrics["val_loss"]
        states = scan.until(lambda s: s.phase == ShardPhase.SUCCEEDED, "the job's end")
        assert aggregate(scan.planned, scan.records).succeeded == 2  # the rest came back in the output sandbox
        assert scan.status(states).phase == "Succeeded"
    finally:
        scan.close()


def test_a_crash_between_submit_and_spool_is_repaired(condor_pool):
    """Jobs submitted with spool=True whose input never came (the operator died between submit and spool) stay held
    (SpoolingInput). The schedd marks them StageInStart all the same; once they waited longer than any spool takes
    (spool_grace_seconds), the next submit removes them and submits again, and the shard runs."""
    scan = Scan(condor_pool, pool_scan(condor_pool, {}), spool_grace_seconds=4)
    try:
        shard_file = scan.planned.shard_file(0)
        orphan = scan.backend.plans(scan.ref, scan.spec, [ShardLaunch(shard_file, scan.spec.sites[0])])
        write_sandboxes(scan.backend.scan_dir(scan.ref), [shard_file])
        cluster = condor_pool.schedd().submit(orphan[0].description, spool=True, itemdata=iter(orphan[0].itemdata))
        orphan_job = f"{cluster.cluster()}.0"
        scan.backend.track(scan.ref, scan.spec)
        assert scan.backend.poll(scan.ref)[0].reason == "SpoolingInput"
        scan.submit()  # within the grace: its input may still be on its way, so it is present
        assert scan.backend.poll(scan.ref)[0].job == orphan_job
        time.sleep(5)
        scan.submit()
        states = scan.until(lambda s: s.phase == ShardPhase.SUCCEEDED, "the shard submitted again")
        assert states[0].job != orphan_job
        assert aggregate(scan.planned, scan.records).succeeded == 2
        left = condor_pool.schedd().query(f"ClusterId == {cluster.cluster()}", ["JobStatus"])
        assert all(ad["JobStatus"] == 3 for ad in left)  # removed (or already gone)
    finally:
        scan.close()


def test_a_held_job_surfaces_its_hold_reason(condor_pool):
    """A site whose executable does not exist on the execute node (a wrong CVMFS path): the job goes on hold."""
    missing = "/cvmfs/atlas.example.org/hpscan/run-hpscan.sh"
    scan = Scan(condor_pool, pool_scan(condor_pool, {}, {"executable": missing}))
    try:
        scan.submit()
        states = scan.until(lambda s: s.reason == "Held", "the hold")
        assert states[0].phase == ShardPhase.PENDING
        assert missing in (states[0].message or ""), states[0]
        (degraded,) = [c for c in scan.status(states).conditions if c.type == "Degraded"]
        assert (degraded.status, degraded.reason) == ("True", "Held")
        assert missing in degraded.message
    finally:
        scan.close()


def test_max_retries_reruns_a_failing_payload_then_fails_the_shard(condor_pool):
    scan = Scan(condor_pool, pool_scan(condor_pool, {"exitCode": 1}, retries=1))
    try:
        scan.submit()
        states = scan.until(lambda s: s.phase == ShardPhase.FAILED, "the last attempt", timeout=120)
        assert (states[0].reason, states[0].attempts) == ("PayloadFailed", 2)
        assert "exiting with 1 as asked" in (states[0].message or ""), states[0]  # the payload's stderr came back
    finally:
        scan.close()


def test_an_attempt_past_its_timeout_is_retried_then_fails_the_shard(condor_pool):
    """Past allowed_execute_duration HTCondor holds the job (HoldReasonCode 47) instead of ending it, and
    max_retries acts only on exits: hpscan's periodic_release gives it its retry, periodic_remove ends it after, and
    the shard fails saying why (before, it sat held until the site's hold timeout). The site shortens the limit to
    3 s through extraSubmit (timeoutSeconds is at least 60); the payload would take 30 s."""
    fields = pool_scan(condor_pool, {"sleep": 30}, {"extraSubmit": {"allowed_execute_duration": "3"}}, retries=1)
    fields = fields.model_dump(by_alias=True, exclude_none=True)
    fields["payload"]["timeoutSeconds"] = 60
    scan = Scan(condor_pool, HPScanSpec.model_validate(fields))
    started = time.monotonic()
    try:
        scan.submit()
        states = scan.until(lambda s: s.phase == ShardPhase.FAILED, "the second timeout", timeout=120)
        print(f"two timed-out attempts to a failed shard in {time.monotonic() - started:.0f} s")
        assert (states[0].reason, states[0].attempts) == ("PayloadFailed", 2), states[0]
        why = "the attempt ran past spec.payload.timeoutSeconds (3 s) and was stopped; no retry left after 2 attempt(s)"
        assert why in (states[0].message or ""), states[0]  # after the payload's last words, when they came back
        cluster = str(states[0].job).split(".")[0]
        ads = condor_pool.schedd().query(f"ClusterId == {cluster}", ["JobStatus", "LastHoldReasonCode"])
        assert [(ad["JobStatus"], ad["LastHoldReasonCode"]) for ad in ads] == [(3, 47)]  # kept for the poller
    finally:
        scan.close()
    condor_pool.wait(  # forgetting the scan lets it leave, as a completed job does
        lambda: not condor_pool.schedd().query(f"ClusterId == {cluster}", ["JobStatus"]), 30, "the job to leave"
    )


def test_a_gpu_capability_no_slot_has_stays_pending_with_a_reason(condor_pool):
    """The pool's GPUs have compute capability 8.0: a scan asking for 9.0 never starts and says why; 8.0 runs."""
    scan = Scan(
        condor_pool, pool_scan(condor_pool, {}, gpu={"count": 1, "required": False, "minComputeCapability": "9.0"})
    )
    fits = Scan(
        condor_pool, pool_scan(condor_pool, {}, gpu={"count": 1, "required": False, "minComputeCapability": "8.0"})
    )
    try:
        scan.submit()
        fits.submit()
        states = scan.until(lambda s: s.reason == "Unschedulable", "the negotiator's verdict")
        assert states[0].phase == ShardPhase.PENDING and "compute capability" in (states[0].message or "")
        fits.until(lambda s: s.phase == ShardPhase.SUCCEEDED, "the 8.0 scan")
        assert scan.backend.poll(scan.ref)[0].attempts == 0
    finally:
        scan.close()
        fits.close()


# The backend in a process whose environment holds no token at all (the operator's own identity is absent), so a
# job can only have been submitted with the Secret's token (through its credential's worker process).
SUBMIT_WITH_SECRET = """
import json, sys, uuid
from pathlib import Path
from hpscan.api.spec import HPScanSpec
from hpscan.backends.base import ScanRef, ShardLaunch
from hpscan.backends.htcondor import HTCondorBackend
from hpscan.core.planning import plan
from hpscan.errors import HPScanError

spec = HPScanSpec.model_validate_json(sys.argv[1])
secret = {("physics", "grid-token", "token"): sys.argv[3]}
backend = HTCondorBackend(Path(sys.argv[2]), read_secret=lambda *key: secret[key], max_age_seconds=0)
scan = ScanRef(name="token", namespace="physics", uid=f"token-{uuid.uuid4().hex[:12]}")
planned = plan(scan.name, spec)
backend.prepare(scan, spec, planned.shard_count)
try:
    backend.submit(scan, spec, [ShardLaunch(f, spec.sites[0]) for f in planned.shard_files()])
    print(json.dumps({"uid": scan.uid, "jobs": [s.job for s in backend.poll(scan).values()]}))
except HPScanError as error:
    print(json.dumps({"error": str(error)}))
"""


def submit_with_secret(pool: Any, token: str, tmp_path: Any) -> dict[str, Any]:
    spec = pool_scan(pool, {}, {"tokenSecret": {"name": "grid-token"}})
    empty = tmp_path / "no-tokens"
    empty.mkdir()
    env = pool.env(_CONDOR_SEC_TOKEN_DIRECTORY=str(empty))  # the environment has no token: only the Secret's
    command = [
        sys.executable,
        "-c",
        SUBMIT_WITH_SECRET,
        spec.model_dump_json(by_alias=True),
        str(pool.job_dir("token")),
        token,
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_sites_secret_idtoken_authenticates_the_backend(condor_pool, tmp_path):
    token = condor_pool.token(authz=["READ", "WRITE"], lifetime_s=600)  # what a pool admin hands over
    submitted = submit_with_secret(condor_pool, token, tmp_path)
    assert "jobs" in submitted, submitted
    token_id = json.loads(urlsafe_b64decode(token.split(".")[1] + "==="))["jti"]
    constraint = f'HPScanUid == "{submitted["uid"]}"'
    try:
        (ad,) = condor_pool.schedd().query(constraint, ["Owner", "AuthTokenSubject", "AuthTokenId"])
        assert (ad["Owner"], ad["AuthTokenSubject"]) == (condor_pool.submit_user, condor_pool.identity)
        assert ad.get("AuthTokenId") == token_id  # this token, not another one
    finally:
        condor_pool.schedd().act(htcondor2.JobAction.Remove, constraint)


def test_a_secret_token_the_pool_did_not_sign_is_refused_naming_site_schedd_and_secret(condor_pool, tmp_path):
    header, claims, _ = condor_pool.token().split(".")
    forged = f"{header}.{claims}.{urlsafe_b64encode(b'x' * 32).decode().rstrip('=')}"
    submitted = submit_with_secret(condor_pool, forged, tmp_path)
    error = submitted.get("error", "")
    assert error.startswith("site 'pool': "), submitted
    assert condor_pool.collector in error and "refused the IDTOKEN in key 'token' of Secret physics/grid-token" in error


# --- credentials per namespace: one backend (as in the operator) serving two namespaces at one access point -----


def token_id(token: str) -> str:
    return str(json.loads(urlsafe_b64decode(token.split(".")[1] + "==="))["jti"])


@pytest.mark.parametrize("refusal", ["a token the pool did not sign", "a token without WRITE"])
def test_a_namespace_cannot_submit_with_another_namespaces_token(condor_pool, refusal):
    """Namespaces team-a and team-b each have a Secret grid-token for the same site of the same pool. team-a's holds
    a token the pool issued; team-b's one the schedd refuses (forged, or for the same identity but READ only). Once
    team-a's scan submitted, team-b's must be refused, naming its site and its Secret, and must not ride on team-a's
    token or session (all namespaces' tokens shared one process-wide token directory and session cache before
    each credential got a worker process of its own); team-a's scan goes on and ends."""
    good = condor_pool.token(authz=["READ", "WRITE"], lifetime_s=600)
    if refusal == "a token the pool did not sign":
        header, claims, _ = condor_pool.token().split(".")
        bad = f"{header}.{claims}.{urlsafe_b64encode(b'x' * 32).decode().rstrip('=')}"
    else:
        bad = condor_pool.token(authz=["READ"], lifetime_s=600)
    secrets = {("team-a", "grid-token", "token"): good, ("team-b", "grid-token", "token"): bad}
    spec = pool_scan(condor_pool, {}, {"tokenSecret": {"name": "grid-token"}})
    backend = HTCondorBackend(
        condor_pool.job_dir("namespaces"), read_secret=lambda *key: secrets[key], max_age_seconds=0
    )
    a = ScanRef(name="tokens", namespace="team-a", uid=f"team-a-{uuid.uuid4().hex[:12]}")
    b = ScanRef(name="tokens", namespace="team-b", uid=f"team-b-{uuid.uuid4().hex[:12]}")
    planned = plan("tokens", spec)
    launches = [ShardLaunch(f, spec.sites[0]) for f in planned.shard_files()]
    try:
        backend.prepare(a, spec, planned.shard_count)
        backend.submit(a, spec, launches)
        backend.prepare(b, spec, planned.shard_count)
        with pytest.raises(HPScanError) as refused:
            backend.submit(b, spec, launches)
        message = str(refused.value)
        assert message.startswith("site 'pool': "), message
        assert "refused the IDTOKEN in key 'token' of Secret team-b/grid-token" in message, message
        assert ("AUTHENTICATE" if "sign" in refusal else "DENIED") in message, message
        assert not condor_pool.schedd().query(f'HPScanUid == "{b.uid}"', ["ClusterId"])  # nothing of team-b queued
        # team-a's job is team-a's token's, and team-a's scan goes on: polled, its records back, Succeeded.
        (ad,) = condor_pool.schedd().query(f'HPScanUid == "{a.uid}"', ["AuthTokenId"])
        assert ad.get("AuthTokenId") == token_id(good)
        records: list = []

        def succeeded() -> dict[int, ShardStatus] | None:
            states = backend.poll(a)
            records.extend(backend.fetch_records(a))
            return states if states and states[0].phase == ShardPhase.SUCCEEDED else None

        condor_pool.wait(succeeded, 90, "team-a's shard")
        assert aggregate(planned, records).succeeded == 2
        assert backend.outages(a) == {}
        assert len(workers()) == 2  # one per credential
    finally:
        for scan in (a, b):
            backend.forget(scan, delete_sandboxes=True)
    assert workers() == []  # forgotten scans leave no worker and no token behind
    assert not any((backend.work_dir / "tokens").iterdir())


def workers() -> list[multiprocessing.process.BaseProcess]:
    return [p for p in multiprocessing.active_children() if p.name == "hpscan-condor-worker"]


def test_a_credentials_worker_starts_again_when_it_died_or_its_token_changed(condor_pool):
    """The worker of a credential is killed: the next poll starts a new one and answers. The Secret's token is
    rotated: the next prepare restarts the worker (its cached session was the old token's), and the next scan's job
    carries the new token."""
    first = condor_pool.token(authz=["READ", "WRITE"], lifetime_s=600)
    secret = {"token": first}
    spec = pool_scan(condor_pool, {}, {"tokenSecret": {"name": "grid-token"}})
    backend = HTCondorBackend(
        condor_pool.job_dir("rotate"), read_secret=lambda *key: secret["token"], max_age_seconds=0
    )
    scans = [ScanRef(name="rotate", namespace="team-a", uid=f"rotate-{uuid.uuid4().hex[:12]}") for _ in range(2)]
    planned = plan("rotate", spec)
    launches = [ShardLaunch(f, spec.sites[0]) for f in planned.shard_files()]

    def token_of(scan: ScanRef) -> str:
        (ad,) = condor_pool.schedd().query(f'HPScanUid == "{scan.uid}"', ["AuthTokenId"])
        return str(ad.get("AuthTokenId"))

    try:
        backend.prepare(scans[0], spec, 1)
        backend.submit(scans[0], spec, launches)
        (worker,) = workers()
        worker.kill()
        worker.join(5)
        assert sorted(backend.poll(scans[0])) == [0]  # answered by a new worker
        (again,) = workers()
        assert again.pid != worker.pid and backend.outages(scans[0]) == {}
        secret["token"] = condor_pool.token(authz=["READ", "WRITE"], lifetime_s=600)
        backend.prepare(scans[1], spec, 1)
        backend.submit(scans[1], spec, launches)
        (rotated,) = workers()
        assert rotated.pid != again.pid
        assert (token_of(scans[0]), token_of(scans[1])) == (token_id(first), token_id(secret["token"]))
    finally:
        for scan in scans:
            backend.forget(scan, delete_sandboxes=True)
    assert workers() == []
