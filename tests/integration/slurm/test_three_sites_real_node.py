"""Issue 28: one dl1 scan over the three batch systems on real parts, with the Kubernetes site on the real node
(containerd + runc + a kubelet, the payload image), the personal HTCondor pool and the Slurm test cluster, driven by
the engine's step as the operator drives it. The grid group runs it last (tests/groups.py): the machine has one
real node, which the kubernetes group's real-node tests hold first and then free (tests/integration/conftest.py).
test_slurm.py's scan over the same three with slurmctld stopped uses the control plane's node agent."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from kubernetes import client

from hpscan.api.spec import API_VERSION, GROUP, PLURAL, VERSION, HPScanSpec
from hpscan.api.status import HPScanStatus
from hpscan.backends.base import ScanRef
from support.real_node import NODE, PAYLOAD, REAL_SITE

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("real_node")]
pytest.importorskip("tensorflow")

REPO = Path(__file__).resolve().parents[3]
ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")}


def _env(**variables: str) -> list[dict[str, str]]:
    return [
        {"name": name, "value": value} for name, value in {"MPLCONFIGDIR": "/tmp", **ONE_THREAD, **variables}.items()
    ]


def three_site_spec(condor_pool, slurm_cluster, spool: Path) -> HPScanSpec:
    """Three one-combination shards of one-epoch dl1, one at a time at each site: the real node runs the payload
    image, the pool and the Slurm site the repository's dl1 from their job Pythons."""
    grid = {"universe": "vanilla", "executable": "/usr/bin/env", "requestMemory": "1536MB", "requestDisk": "1GB"}
    return HPScanSpec.model_validate(
        {
            "objective": {"metric": "val_loss", "goal": "minimize"},
            "parameters": [{"name": "layer1", "values": [8, 16, 24]}],
            "sharding": {"shards": 3},
            "retries": 0,
            "gpu": {"count": 1, "required": False},
            "payload": {
                "image": PAYLOAD, "cpu": "250m", "memory": "1Gi",
                "settings": {"epochs": 1, "patience": 1, "data": {"synthetic": {"jets": 2000, "seed": 1}}},
            },
            "sites": [
                {**REAL_SITE, "maxRunning": 1},
                {"name": "grid", "maxRunning": 1, "env": _env(PATH=f"{condor_pool.job_bin()}:/usr/bin:/bin"),
                 "htcondor": {**condor_pool.site(), **grid}},
                {"name": "hpc", "maxRunning": 1, "env": _env(),
                 "slurm": slurm_cluster.site(spool, partition="gpu", memory="1536M")},
            ],
        }
    )  # fmt: skip


def test_a_scan_over_the_real_node_the_pool_and_the_slurm_site_succeeds_with_shards_on_all_three(
    slurm_cluster, condor_pool, cluster, k8s, new_namespace
):
    from hpscan.backends.htcondor import HTCondorBackend
    from hpscan.backends.kubernetes import KubernetesBackend
    from hpscan.backends.slurm.backend import SlurmBackend
    from hpscan.core.brokering import Target
    from hpscan.core.planning import plan
    from hpscan.core.results import Aggregate
    from hpscan.engine import StepInput, step

    spec = three_site_spec(condor_pool, slurm_cluster, slurm_cluster.spool("three"))
    # The HPScan object exists (its Jobs are owned by it, as the operator makes them); no operator watches it here.
    namespace = new_namespace()
    cluster.kubectl("apply", "-f", str(REPO / "crds" / "hpscan.io_hpscans.yaml"))
    cluster.kubectl("wait", "--for=condition=Established", "crd/hpscans.hpscan.io", "--timeout=60s")
    body = {"apiVersion": API_VERSION, "kind": "HPScan", "metadata": {"name": "three"}, "spec": spec.to_wire()}
    created = client.CustomObjectsApi(k8s).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    ref = ScanRef(name="three", namespace=namespace, uid=created["metadata"]["uid"])
    backends = {
        "kubernetes": KubernetesBackend(k8s),
        "htcondor": HTCondorBackend(condor_pool.job_dir("three"), max_age_seconds=0),
        "slurm": SlurmBackend(environ={"SLURM_JWT": slurm_cluster.token}, max_age_seconds=0),
    }
    planned = plan("three", spec)
    agg = Aggregate(planned)
    targets = [Target.of(site) for site in spec.sites]
    status: HPScanStatus | None = None
    recorded: list[tuple[str, int]] = []  # what the local shell would append to results.jsonl: (id, shard)
    try:
        deadline = time.monotonic() + 600
        while status is None or status.phase not in {"Succeeded", "Failed"}:
            assert time.monotonic() < deadline, f"the scan did not end in 600 s; last status: {status}"
            result = step(StepInput(ref, spec, agg, targets, previous=status), backends)
            status = result.status
            recorded += [(record.id, record.shard) for record in result.new_records]
            time.sleep(1)
    finally:
        backends["htcondor"].forget(ref, delete_sandboxes=True)
        backends["slurm"].forget(ref)
    assert status.phase == "Succeeded" and status.progress == "3/3", status.message
    assert {shard.site for shard in status.shards} == {"real", "grid", "hpc"}, status.shards
    assert sorted(i for i, _ in recorded) == sorted(c.id for c in planned.combinations())  # every record, once
    site_of = {shard.index: shard.site for shard in status.shards}
    assert sorted(site_of[shard] for _, shard in recorded) == ["grid", "hpc", "real"]  # one record from each
    (pod,) = client.CoreV1Api(k8s).list_namespaced_pod(namespace, label_selector="hpscan.io/scan=three").items
    assert pod.spec.node_name == NODE and pod.spec.containers[0].image == PAYLOAD
    assert pod.status.container_statuses[0].container_id.startswith("containerd://")  # a real container
