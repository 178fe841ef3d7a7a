"""The backend contract (tests/support/backend_contract.py) against the batch systems that need more than this
process: the fast lane (tests/unit/backends/test_backend_contract_fast.py) runs it for local processes and the in-memory fake.

- kubernetes: Jobs on the local control plane, pods on its node agent (a kubelet stand-in), records through
  the shard ConfigMaps;
- htcondor: the backend against the personal pool's real daemons (the condor_pool fixture): a remote-style site
  (input spooled, output retrieved), vanilla-universe jobs matched to the simulated GPUs, records live through
  chirp and back in the output sandbox, retries by the schedd's max_retries and retry_until;
- slurm: the backend against the Slurm test cluster's real daemons (the slurm_cluster fixture): jobs through
  slurmrestd on the GPU partition (gres/gpu), records live through the shared file system, retries by resubmission;
- sim-kubernetes, sim-htcondor: the same real backends against the simulation's neighbours
  (hpscan.testing.sim: a simulated API server and Job controller, the schedd stand-in and a simulated startd, with
  workers that honour the same payload knobs), with no faults: the simulated world must agree with the real one
  on every scenario here, or the simulation's verdicts mean nothing (docs/simulation.md).

Harnesses are chosen by registry name (HARNESSES); every registered backend must have one.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from hpscan.api import registry
from hpscan.api.sites import Site
from hpscan.api.spec import HPScanSpec
from hpscan.backends.base import Backend, ScanRef
from hpscan.backends.htcondor import HTCondorBackend
from hpscan.backends.kubernetes import KubernetesBackend
from hpscan.backends.slurm.backend import SlurmBackend
from support.backend_contract import (  # noqa: F401 (the contract's tests, collected here)
    BaseHarness,
    contract_spec,
    harness_fixture,
    test_a_crashed_attempt_is_retried_and_counted,
    test_a_final_exit_fails_the_shard_at_once_and_is_never_retried,
    test_after_a_restart_records_fold_once_and_nothing_is_trained_twice,
    test_cancel_suspends_and_keeps_the_records,
    test_submit_is_idempotent,
    test_what_a_job_records_while_it_stops_is_kept_and_never_trained_again,
    test_workers_that_pull_get_trials_and_stops_and_a_restart_repeats_nothing,
)
from support.operator_support import REPO, create, scan_manifest

pytestmark = pytest.mark.integration


class KubernetesHarness(BaseHarness):
    """Pods see their own /tmp (an emptyDir), not pytest's: the payload logs under the repository."""

    keeps_exit_message = False  # the node agent stand-in keeps no termination message

    def __init__(self, request: pytest.FixtureRequest, tmp_path: Path, knobs: dict[str, Any], retries: int) -> None:
        self.trained_log = request.getfixturevalue("pod_visible_dir") / "trained.log"
        spec = contract_spec(knobs, self.trained_log, retries)
        self.spec = HPScanSpec.model_validate(spec)
        self.k8s: client.ApiClient = request.getfixturevalue("k8s")
        request.getfixturevalue("crd_applied")
        body = scan_manifest("contract")
        body["spec"] = {**spec, "suspend": True}  # belt and braces: nothing else acts on it
        namespace = request.getfixturevalue("namespace")
        created = create(self.k8s, namespace, body)  # the owner of the Jobs (no operator runs: the test drives)
        self.ref = ScanRef("contract", namespace, created["metadata"]["uid"])
        self.site = self.spec.sites[0]

    def new_backend(self) -> Backend:
        return KubernetesBackend(self.k8s)

    def drive(self) -> None:
        time.sleep(0.5)


class HTCondorHarness(BaseHarness):
    """A site that names the pool's collector and schedd (spooled input, retrieved output, as at a grid site);
    the jobs run the payload in the vanilla universe with the pool's job Python (condor_pool.job_bin), as the
    pool's submitting user, who cannot write to tmp_path."""

    pace = 5.0  # a negotiation cycle, a shadow, a starter, chirp

    def __init__(self, request: pytest.FixtureRequest, tmp_path: Path, knobs: dict[str, Any], retries: int) -> None:
        self.pool = request.getfixturevalue("condor_pool")
        self.work_dir = self.pool.job_dir("contract")
        self.ref = ScanRef("contract", "physics", "u-condor-" + secrets.token_hex(3))
        block = {"universe": "vanilla", "executable": "/usr/bin/env", "requestMemory": "256MB", "requestDisk": "64MB"}
        self.site = Site.model_validate({"name": "grid", "htcondor": {**self.pool.site(), **block}})
        self.trained_log = self.pool.job_dir("trained") / "trained.log"
        spec = contract_spec(knobs, self.trained_log, retries)
        spec["sites"] = [self.site.to_wire()]
        self.job_payload(spec)
        self.spec = HPScanSpec.model_validate(spec)

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

    def close(self) -> None:  # as a deleted scan: its jobs leave the pool's queue
        backend = self.new_backend()
        backend.track(self.ref, self.spec)
        backend.forget(self.ref)


class SlurmHarness(BaseHarness):
    """A site of the Slurm test cluster (the slurm_cluster fixture): jobs on the GPU partition with gres/gpu,
    submitted through slurmrestd with the job user's JWT, run as that user with the cluster's job Python; their
    folders (and the trained log) in a spool the job user owns, which is also the live channel."""

    pace = 3.0  # a scheduling pass, slurmd starting the batch step

    def __init__(self, request: pytest.FixtureRequest, tmp_path: Path, knobs: dict[str, Any], retries: int) -> None:
        self.cluster = request.getfixturevalue("slurm_cluster")
        spool = self.cluster.spool("contract")
        self.ref = ScanRef("contract", "physics", "u-slurm-" + secrets.token_hex(3))
        block = self.cluster.site(spool, partition="gpu")
        self.site = Site.model_validate({"name": "hpc", "slurm": block})
        self.trained_log = spool / "trained.log"
        spec = contract_spec(knobs, self.trained_log, retries)
        spec["sites"] = [self.site.to_wire()]
        python = str(Path(str(block["runner"])).parent / "python")
        spec["payload"]["command"] = [python, spec["payload"]["command"][-1]]
        spec["payload"]["gpuCheck"] = [python, *spec["payload"]["gpuCheck"][1:]]
        self.spec = HPScanSpec.model_validate(spec)

    def new_backend(self) -> Backend:
        return SlurmBackend(environ={"SLURM_JWT": self.cluster.token}, max_age_seconds=0)

    def drive(self) -> None:
        time.sleep(0.5)

    def close(self) -> None:  # as a deleted scan: its jobs are cancelled
        backend = self.new_backend()
        backend.track(self.ref, self.spec)
        backend.forget(self.ref)


class SimHarness(BaseHarness):
    """A backend against the simulated neighbours of hpscan.testing.sim, on its virtual clock: each drive() is
    one virtual second of the Job controller or startd."""

    backend: str

    def __init__(self, request: pytest.FixtureRequest, tmp_path: Path, knobs: dict[str, Any], retries: int) -> None:
        from hpscan.testing.sim.scenario import NAMESPACE, Scenario
        from hpscan.testing.sim.world import World

        self.trained_log = tmp_path / "trained.log"
        spec = contract_spec(knobs, self.trained_log, retries)
        spec["sites"] = [{"name": "cluster", self.backend: {}}]
        self.spec = HPScanSpec.model_validate(spec)
        self.world = World(Scenario(seed=1, backend=self.backend))
        self.ref = ScanRef("contract", NAMESPACE, f"u-sim-{self.backend}")
        self.site = self.spec.sites[0]

    def new_backend(self) -> Backend:
        return self.world.operator()[0]

    def drive(self) -> None:
        self.world.server.now += 1
        self.world.nodes.tick(self.world.server.now)


class SimKubernetesHarness(SimHarness):
    backend = "kubernetes"


class SimHTCondorHarness(SimHarness):
    backend = "htcondor"


HARNESSES = {
    "kubernetes": KubernetesHarness,
    "htcondor": HTCondorHarness,
    "slurm": SlurmHarness,
    "sim-kubernetes": SimKubernetesHarness,
    "sim-htcondor": SimHTCondorHarness,
}
"""Registry name -> harness (sim-NAME: backend NAME in the simulation). Local processes and the in-memory fake
run the contract in the fast lane (tests/unit/backends/test_backend_contract_fast.py)."""

make_harness = harness_fixture(HARNESSES)


def test_every_registered_backend_has_a_harness():
    assert set(registry.entries()) <= set(HARNESSES), "a registered backend must pass the contract: add its harness"


@pytest.fixture(scope="module")
def crd_applied(cluster: Any) -> None:
    cluster.kubectl("apply", "-f", str(REPO / "crds" / "hpscan.io_hpscans.yaml"))
    cluster.kubectl("wait", "--for=condition=Established", "crd/hpscans.hpscan.io", "--timeout=60s")
