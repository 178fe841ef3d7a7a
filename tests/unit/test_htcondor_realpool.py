"""The backend's submit / poll / cancel round trip against a REAL access point, opt-in.

Skipped unless HPSCAN_CONDOR_SITE holds an htcondor site block as YAML or JSON (e.g.
'{"schedd": "ap1.example.org", "pool": "cm.example.org:9618"}', or '{}' for the local schedd) and the
environment holds credentials the schedd accepts (an IDTOKEN in ~/.condor/tokens.d, or
_CONDOR_SEC_TOKEN_DIRECTORY). The jobs need not run: they are removed at the end. See docs/htcondor.md.
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
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(SITE is None, reason="set HPSCAN_CONDOR_SITE to run against a real access point"),
]


def test_submit_poll_resubmit_cancel_on_a_real_schedd(tmp_path):
    block = yaml.safe_load(SITE or "{}") or {}
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

    backend = HTCondorBackend(tmp_path, schedd_factory=counting, max_age_seconds=0)
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
