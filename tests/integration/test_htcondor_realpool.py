"""The backend's submit / poll / resubmit / cancel round trip against the personal HTCondor pool's real schedd
(the condor_pool fixture: daemons built from source, cluster/condor/). No longer opt-in.

Set HPSCAN_CONDOR_SITE to an htcondor site block (YAML or JSON) to aim it at another access point instead, with
credentials the schedd accepts in the environment. The jobs need not run: they are removed at the end.
"""

from __future__ import annotations

import os
import uuid

import pytest
import yaml

from hpscan.api.spec import HPScanSpec
from hpscan.api.status import ShardPhase
from hpscan.backends.base import ScanRef, ShardLaunch
from hpscan.backends.htcondor import HTCondorBackend, locate_schedd
from hpscan.core.planning import plan

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
        backend.submit(scan, spec, launches)  # idempotent: finds both jobs
        assert [s.job for s in backend.poll(scan).values()] == [s.job for s in states.values()]
    finally:
        backend.cancel(scan)
    after = backend.poll(scan)
    assert sorted(after) == [0, 1]
    assert all(s.phase == ShardPhase.SUSPENDED for s in after.values())
    backend.forget(scan, delete_sandboxes=True)
