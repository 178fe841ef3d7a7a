"""Brokering on the personal pool's real daemons (the condor_pool fixture), through hpscan.engine.step as the
operator and `hpscan run` drive it: a site probe job excluding a site whose GPUs do not work (its own env breaks
them), a job held past its site's holdTimeoutSeconds removed and its shard moved to the other site, and a mixed
Kubernetes + HTCondor scan going on while the schedd is stopped.

Both sites are remote-style views of the one pool's schedd (spooled input, retrieved output); the probe is the
contract payload's `gpu-check` stand-in (no physical GPU here), matched to the pool's simulated GPU slots.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from kubernetes import client

from hpscan.api.spec import API_VERSION, GROUP, PLURAL, VERSION, HPScanSpec
from hpscan.api.status import TERMINAL_SCAN_PHASES, HPScanStatus
from hpscan.backends.base import ScanRef
from hpscan.backends.htcondor import HTCondorBackend
from hpscan.core.brokering import targets_of
from hpscan.core.planning import plan
from hpscan.core.results import Aggregate
from hpscan.engine import StepInput, step
from support import CONTRACT_PAYLOAD
from support.operator_support import GPU_NODES, REPO

pytestmark = [pytest.mark.integration]
PAYLOAD = str(CONTRACT_PAYLOAD)


def two_site_spec(pool: Any, first: dict[str, Any], gpu_required: bool, shards: int) -> HPScanSpec:
    bin_dir = pool.job_bin()
    block = {"universe": "vanilla", "executable": "/usr/bin/env", "requestMemory": "256MB", "requestDisk": "64MB"}
    python = [str(bin_dir / "python"), PAYLOAD]
    return HPScanSpec.model_validate(
        {
            "parameters": [{"name": "x", "values": list(range(2 * shards))}],
            "sharding": {"shards": shards},
            "retries": 0,
            "gpu": {"count": 1, "required": gpu_required},
            "payload": {
                "image": "unused-in-the-vanilla-universe",
                "command": python,
                "gpuCheck": [*python, "gpu-check"],
                "env": [{"name": "PATH", "value": f"{bin_dir}:/usr/bin:/bin"}],
            },
            "sites": [
                {"name": "first", **first, "htcondor": {**pool.site(), **block, **first.pop("htcondor", {})}},
                {"name": "second", "htcondor": {**pool.site(), **block}},
            ],
        }
    )


def run_to_the_end(pool: Any, spec: HPScanSpec, timeout: float = 150) -> HPScanStatus:
    """engine.step every second, with the status carried over as the operator does, until the scan ends."""
    ref = ScanRef(name="broker", namespace="physics", uid=f"broker-{uuid.uuid4().hex[:12]}")
    backend = HTCondorBackend(pool.job_dir("broker"), max_age_seconds=0)
    agg = Aggregate(plan("broker", spec))
    targets = targets_of(spec.sites, "htcondor")
    status: HPScanStatus | None = None
    deadline = time.monotonic() + timeout
    try:
        while status is None or status.phase not in TERMINAL_SCAN_PHASES:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the scan did not end in {timeout:g} s; last status: {status}")
            status = step(StepInput(ref, spec, agg, targets, previous=status), {"htcondor": backend}).status
            time.sleep(1)
        return status
    finally:
        backend.forget(ref, delete_sandboxes=True)


def test_a_probe_job_excludes_the_site_whose_gpus_fail_and_the_other_runs_the_scan(condor_pool):
    broken = {"env": [{"name": "CONTRACT_GPU_CHECK_EXIT", "value": "3"}]}
    status = run_to_the_end(condor_pool, two_site_spec(condor_pool, broken, gpu_required=True, shards=2))
    assert status.phase == "Succeeded" and status.progress == "4/4", status.message
    first, second = status.sites
    assert (first.state, first.reason) == ("Excluded", "GPUUnavailable")
    assert "no usable GPU (stand-in, exit 3)" in first.message  # the probe's own words, from its returned stdout
    assert (second.state, second.reason, second.succeeded) == ("Usable", "ProbePassed", 2)
    assert {s.site for s in status.shards} == {"second"}


def test_a_job_held_past_the_hold_timeout_is_removed_and_its_shard_finishes_elsewhere(condor_pool):
    wrong_path = {"holdTimeoutSeconds": 10, "htcondor": {"executable": "/cvmfs/atlas.example.org/missing.sh"}}
    status = run_to_the_end(condor_pool, two_site_spec(condor_pool, wrong_path, gpu_required=False, shards=2))
    assert status.phase == "Succeeded" and status.progress == "4/4", status.message
    moved = [s for s in status.shards if s.moves]
    assert moved and all(s.site == "second" for s in moved), status.shards
    assert status.sites[0].state == "Usable"  # a hold blames the job's placement, not the site's GPUs


def test_with_the_schedd_down_kubernetes_runs_shards_and_the_grid_site_takes_them_once_back(
    condor_pool, cluster, k8s, new_namespace
):
    """Fault isolation on real parts: the local control plane's Jobs (node agent) and the pool's schedd, stopped
    with condor_off and started again with condor_on while the scan runs."""
    from hpscan.backends.kubernetes import KubernetesBackend

    bin_dir = condor_pool.job_bin()
    grid = {"universe": "vanilla", "executable": "/usr/bin/env", "requestMemory": "256MB", "requestDisk": "64MB"}
    spec = HPScanSpec.model_validate(
        {
            "parameters": [{"name": "x", "values": list(range(12))}],
            "sharding": {"shards": 6},
            "retries": 0,
            "gpu": {"count": 1, "required": False},
            "payload": {
                "image": "registry.example.org/contract-payload:1",
                "command": ["python", PAYLOAD],  # each site's own Python, from its PATH
                "settings": {"contractPayload": {"sleep": 2}},
                "cpu": "100m",
                "memory": "256Mi",
            },
            "sites": [
                {"name": "cluster", "maxRunning": 1, "kubernetes": GPU_NODES},
                {
                    "name": "grid",
                    "env": [{"name": "PATH", "value": f"{bin_dir}:/usr/bin:/bin"}],
                    "htcondor": {**condor_pool.site(), **grid},
                },
            ],
        }
    )
    # The HPScan object exists (its Jobs are owned by it, as the operator makes them); no operator watches it here.
    namespace = new_namespace()
    cluster.kubectl("apply", "-f", str(REPO / "crds" / "hpscan.io_hpscans.yaml"))
    cluster.kubectl("wait", "--for=condition=Established", "crd/hpscans.hpscan.io", "--timeout=60s")
    body = {"apiVersion": API_VERSION, "kind": "HPScan", "metadata": {"name": "outage"}, "spec": spec.to_wire()}
    created = client.CustomObjectsApi(k8s).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    ref = ScanRef(name="outage", namespace=namespace, uid=created["metadata"]["uid"])
    backends = {
        "kubernetes": KubernetesBackend(k8s),
        "htcondor": HTCondorBackend(condor_pool.job_dir("outage"), max_age_seconds=0),
    }
    agg = Aggregate(plan("outage", spec))
    targets = targets_of(spec.sites, "kubernetes")
    # condor_off/condor_on need the pool's ADMINISTRATOR (root@*): a token for that identity, for these two tools.
    admin = condor_pool.token_dir(
        condor_pool.token(f"root@{condor_pool.identity.split('@')[1]}", ["ADMINISTRATOR"]), condor_pool.job_dir("admin")
    )
    as_admin = {"_condor_SEC_TOKEN_DIRECTORY": str(admin)}
    condor_pool.tool("condor_off", "-schedd", **as_admin)
    status: HPScanStatus | None = None
    seen_down: HPScanStatus | None = None
    try:
        deadline = time.monotonic() + 240
        while status is None or status.phase not in TERMINAL_SCAN_PHASES:
            assert time.monotonic() < deadline, f"the scan did not end in 240 s; last status: {status}"
            status = step(StepInput(ref, spec, agg, targets, previous=status), backends).status
            if seen_down is None and agg.recorded >= 1:  # the cluster reported while the schedd was off
                seen_down = status
                condor_pool.tool("condor_on", "-schedd", **as_admin)
            time.sleep(1)
    finally:
        condor_pool.tool("condor_on", "-schedd", check=False, **as_admin)
        condor_pool.wait(lambda: condor_pool.tool("condor_q", "-totals", check=False).returncode == 0, 60, "schedd")
        backends["htcondor"].forget(ref, delete_sandboxes=True)
    assert seen_down is not None
    cluster_site, grid_site = seen_down.sites
    assert (cluster_site.state, grid_site.state, grid_site.reason) == ("Usable", "Unreachable", "SiteUnreachable")
    assert grid_site.message  # the bindings' own words about the schedd
    assert status.phase == "Succeeded" and status.progress == "12/12", status.message
    assert status.sites[1].state == "Usable" and status.sites[1].succeeded >= 1  # back, and given shards
    assert {s.site for s in status.shards} == {"cluster", "grid"}
