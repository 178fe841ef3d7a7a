"""An operator upgrade mid-scan on the real node (issue 26 item 4; docs/upgrades.md).

The release named in charts/upgrade-from.yaml is installed with its own Helm chart, CRD and images (built from its
commit by cluster/images/build-release.sh, cached by commit); it starts a scan of the payload image of the same
release; once its shard Jobs run and have recorded part of their work, today's CRD is applied and `helm upgrade`
moves the release to today's chart and operator image. Then one unfinished shard's Job is deleted (as a user or a
cleanup might): today's operator starts a new one for it in the older layout (one mounted ConfigMap per shard), the
only one the scan's payload image, the release's, speaks. The scan must then finish Succeeded with every planned
record, once each: the other release Job runs to its end under today's operator, which adopts it, and the new Job
trains only what the deleted one left. Only the real node runs the images (the test node agent runs the
repository's code whatever the image), so only there does old code meet new."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from support.operator_support import get
from support.real_node import TOLERATIONS, ctr, finished

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("real_node")]

REPO = Path(__file__).resolve().parents[3]
RELEASE = yaml.safe_load((REPO / "charts" / "upgrade-from.yaml").read_text())
SCAN = "upgrade"
SHARDS = 2
# Long enough that the upgrade lands while both shards still train, one combination at a time (fuse 1: a fused
# group records all its combinations at its end, so a shard of 4 fused ones recorded all or nothing); `helm upgrade
# --wait` took 20-30 s on the 2-core test machine, where 30 epochs of 40,000 jets took 1-2 s.
COMBINATIONS_PER_SHARD = 4
SETTINGS = {
    "epochs": 60, "patience": 60, "batch_size": 500, "fuse": 1, "data": {"synthetic": {"jets": 300000, "seed": 1}},
}  # fmt: skip


def _release_images() -> tuple[str, str]:
    """The release's operator and payload images (built once per commit), loaded into the real node's containerd."""
    began = time.monotonic()
    built = subprocess.run([str(REPO / "cluster" / "images" / "build-release.sh"), RELEASE["commit"]],
                           capture_output=True, text=True, check=False)  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    operator_image, payload_image = built.stdout.split()
    for image in (operator_image, payload_image):
        if ctr("images", "ls", "-q", f"name=={image}").stdout.strip():
            continue
        archive = REPO / ".cluster" / "node" / "containerd" / "release-import.tar"
        archive.unlink(missing_ok=True)
        subprocess.run(["buildah", "push", "--quiet", image, f"docker-archive:{archive}:{image}"], check=True,
                       capture_output=True)  # fmt: skip
        ctr("images", "import", str(archive))
        archive.unlink()
    print(f"release images built and loaded in {time.monotonic() - began:.0f} s")
    return operator_image, payload_image


def _release_tree(tmp_path: Path) -> Path:
    """The release's chart and CRD, from its commit (git archive)."""
    tree = tmp_path / "release"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", RELEASE["commit"], "charts", "crds"],
                             capture_output=True, check=True).stdout  # fmt: skip
    subprocess.run(["tar", "-C", str(tree), "-xf", "-"], input=archive, check=True)
    return tree


def _helm_values(image: str, scans: str) -> list[str]:
    repository, tag = image.rsplit(":", 1)
    return [
        "--set", f"image.repository={repository}", "--set", f"image.tag={tag}", "--set", "image.pullPolicy=Never",
        "--set-json", f'watchNamespaces=["{scans}"]',
        "--set-json", 'nodeSelector={"hpscan.io/real-node": "true"}',
        "--set-json", f"tolerations={json.dumps(TOLERATIONS)}",
        "--set-json", 'defaults.nodeSelector={"hpscan.io/real-node": "true"}',
        "--set-json", f"defaults.tolerations={json.dumps(TOLERATIONS)}",
    ]  # fmt: skip


def _apply_crd(cluster, path: Path) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    cluster.kubectl("wait", "--for=condition=Established", "crd/hpscans.hpscan.io", "--timeout=60s")


@pytest.fixture
def upgrade_namespaces(cluster, k8s) -> Iterator[tuple[str, str]]:
    """The operator's namespace and the scans' (restricted Pod Security); removed with today's CRD put back."""
    core: Any = client.CoreV1Api(k8s)
    suffix = secrets.token_hex(3)
    names = (f"upgrade-operator-{suffix}", f"upgrade-scans-{suffix}")
    for name in names:
        labels = {"hpscan.io/test": "true", "pod-security.kubernetes.io/enforce": "restricted"}
        core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
    try:
        yield names
    finally:
        for name in names:
            core.delete_namespace(name)
        _apply_crd(cluster, REPO / "crds" / "hpscan.io_hpscans.yaml")  # the tests after this one run today's


def _scan(payload_image: str) -> dict:
    count = SHARDS * COMBINATIONS_PER_SHARD
    spec = {
        "objective": {"metric": "val_loss", "goal": "minimize"},
        "parameters": [{"name": "layer1", "values": [8 * (i + 1) for i in range(count)]}],
        "sharding": {"shards": SHARDS},
        "gpu": {"count": 0, "required": False},
        "payload": {"image": payload_image, "cpu": "250m", "memory": "2Gi", "settings": SETTINGS},
    }
    return {"apiVersion": "hpscan.io/v1alpha1", "kind": "HPScan", "metadata": {"name": SCAN}, "spec": spec}


def _legacy_configmaps(k8s, ns: str) -> dict[str, dict[str, str]]:
    """The scan's ConfigMaps of the older layout (one per shard, no page label), by name: their data."""
    listed = client.CoreV1Api(k8s).list_namespaced_config_map(ns, label_selector=f"hpscan.io/scan={SCAN}").items
    return {cm.metadata.name: cm.data or {} for cm in listed if "hpscan.io/page" not in (cm.metadata.labels or {})}


def _recorded(configmaps: dict[str, dict[str, str]]) -> int:
    return sum(len([key for key in data if key != "shard.json"]) for data in configmaps.values())


def test_a_scan_started_by_the_last_release_finishes_after_helm_upgrade_with_every_record_once(
    cluster, k8s, upgrade_namespaces, tmp_path
):
    from hpscan.api.spec import HPScan
    from hpscan.core.planning import plan

    operator_image, payload_image = _release_images()
    release_tree = _release_tree(tmp_path)
    operator_ns, ns = upgrade_namespaces
    helm = [str(cluster.tools_bin / "helm"), "-n", operator_ns]
    release = f"hpo-{secrets.token_hex(3)}"

    # The release as its users installed it: its CRD (Helm installs a chart's CRD only where there is none), its chart.
    _apply_crd(cluster, release_tree / "crds" / "hpscan.io_hpscans.yaml")
    installed = subprocess.run(
        [*helm, "install", release, str(release_tree / "charts" / "hpscan-operator"), "--wait", "--timeout", "180s",
         *_helm_values(operator_image, ns)],
        env=cluster.env(), capture_output=True, text=True, check=False,
    )  # fmt: skip
    try:
        assert installed.returncode == 0, installed.stderr
        before = _upgrade_mid_scan(cluster, k8s, helm, release, ns, payload_image)
        restarted = _restart_an_unfinished_shard(cluster, k8s, ns, before)
        scan = _scan(payload_image)
        status = finished(cluster, k8s, ns, SCAN, 600)
        assert status["phase"] == "Succeeded", json.dumps(status, indent=1)[-4000:]
        _assert_every_record_once(cluster, k8s, ns, plan(SCAN, HPScan.model_validate(scan).spec), before, restarted)
    finally:
        logs = cluster.kubectl("-n", operator_ns, "logs", "--tail=80", "-l", "app.kubernetes.io/name=hpscan-operator",
                               check=False)  # fmt: skip
        print(logs.stdout[-6000:])
        # The scan before the operator: only a running operator removes its finalizer (charts/hpscan-operator/README.md).
        cluster.kubectl("-n", ns, "delete", "hpscan", "--all", "--wait=true", "--timeout=120s", check=False)
        subprocess.run([*helm, "uninstall", release, "--wait", "--timeout", "60s"], env=cluster.env(), check=False)


def _upgrade_mid_scan(cluster, k8s, helm: list[str], release: str, ns: str, payload_image: str) -> dict[str, str]:
    """Start the scan under the release's operator; once every shard's Job runs in the older layout and part of
    the work is recorded, apply today's CRD and `helm upgrade` to today's chart and operator image. Returns the
    release's Jobs (name: uid)."""
    applied = cluster.kubectl("-n", ns, "apply", "-f", "-", check=False, input=json.dumps(_scan(payload_image)))
    assert applied.returncode == 0, applied.stderr
    total = SHARDS * COMBINATIONS_PER_SHARD

    def some_recorded() -> dict[str, dict[str, str]] | None:
        legacy = _legacy_configmaps(k8s, ns)
        return legacy if len(legacy) == SHARDS and _recorded(legacy) >= 1 else None

    legacy = cluster.wait(some_recorded, 420, "a record of the release's operator's shards", interval=2)
    jobs = client.BatchV1Api(k8s).list_namespaced_job(ns, label_selector=f"hpscan.io/scan={SCAN}").items
    assert len(jobs) == SHARDS, [j.metadata.name for j in jobs]
    for job in jobs:  # the older layout: the shard ConfigMap mounted into the pod
        volumes = {v.name: v for v in job.spec.template.spec.volumes}
        assert volumes["shard"].config_map.name == job.metadata.name, volumes
    before = {job.metadata.name: job.metadata.uid for job in jobs}
    recorded_before = _recorded(legacy)

    began = time.monotonic()
    _apply_crd(cluster, REPO / "crds" / "hpscan.io_hpscans.yaml")
    upgraded = subprocess.run(
        [*helm, "upgrade", release, str(REPO / "charts" / "hpscan-operator"), "--wait", "--timeout", "180s",
         *_helm_values("localhost/hpscan/operator:dev", ns)],
        env=cluster.env(), capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert upgraded.returncode == 0, upgraded.stderr
    at_upgrade = _legacy_configmaps(k8s, ns)
    recorded_at_upgrade = _recorded(at_upgrade)
    print(f"upgrade: {recorded_before}/{total} recorded when it began, {recorded_at_upgrade}/{total} when "
          f"helm upgrade --wait returned, {time.monotonic() - began:.0f} s later")  # fmt: skip
    assert recorded_at_upgrade < total, (
        f"the shards recorded all {total} before the upgrade ended ({recorded_before} when it began): lengthen them"
    )
    # Today's operator, once its pod has replaced the release's, speaks for the scan while the same Jobs run on.
    listed = client.BatchV1Api(k8s).list_namespaced_job(ns, label_selector=f"hpscan.io/scan={SCAN}").items
    assert {job.metadata.name: job.metadata.uid for job in listed} == before
    return before


def _restart_an_unfinished_shard(cluster, k8s, ns: str, before: dict[str, str]) -> str:
    """Delete the Job of a shard with work left; today's operator starts a new Job for it (the shard is missing
    from what the backend reports), which must be written in the release's layout. Returns its name."""
    legacy = _legacy_configmaps(k8s, ns)
    unfinished = [name for name, data in sorted(legacy.items()) if _recorded({name: data}) < COMBINATIONS_PER_SHARD]
    assert unfinished, f"every shard recorded everything before its Job could be deleted: {legacy.keys()}"
    name = unfinished[0]
    client.BatchV1Api(k8s).delete_namespaced_job(name, ns, propagation_policy="Background")

    def started_again() -> Any:
        try:
            job = client.BatchV1Api(k8s).read_namespaced_job(name, ns)
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise
        return job if job.metadata.uid != before[name] else None

    job = cluster.wait(started_again, 120, f"today's operator's new Job for {name}", interval=1)
    volumes = {v.name: v for v in job.spec.template.spec.volumes}
    assert volumes["shard"].config_map is not None and volumes["shard"].config_map.name == name, volumes
    assert job.metadata.annotations.get("hpscan.io/layout") == "single-configmap", job.metadata.annotations
    print(
        f"restarted {name} ({_recorded({name: legacy[name]})}/{COMBINATIONS_PER_SHARD} recorded) in the release's layout"
    )
    return name


def _assert_every_record_once(cluster, k8s, ns: str, planned, before: dict[str, str], restarted: str) -> None:
    """Every planned combination recorded once (ids unique, count equal to the plan), by the release's Jobs and
    the one today's operator started in their layout for the shard whose Job was deleted; today's operator made no
    record page."""
    exported = subprocess.run(
        [str(REPO / ".venv" / "bin" / "hpscan"), "results", SCAN, "-n", ns],
        env=cluster.env(), capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    records = [json.loads(line) for line in exported.stdout.splitlines()]
    ids, planned_ids = [r["id"] for r in records], [c.id for c in planned.combinations()]
    assert len(ids) == len(set(ids)) == len(planned_ids), ids
    assert sorted(ids) == sorted(planned_ids)
    assert {r["status"] for r in records} == {"succeeded"}
    status = get(k8s, ns, SCAN)["status"]
    assert status["progress"] == f"{len(ids)}/{len(ids)}", status
    assert "epochsResumed" in status["training"], status  # a field the release does not know: today's status
    jobs = client.BatchV1Api(k8s).list_namespaced_job(ns, label_selector=f"hpscan.io/scan={SCAN}").items
    assert sorted(j.metadata.name for j in jobs) == [f"{SCAN}-shard-{i:03d}" for i in range(SHARDS)]
    assert all((j.status.succeeded, j.status.failed or 0) == (1, 0) for j in jobs), [j.status for j in jobs]
    new = {j.metadata.name for j in jobs if j.metadata.uid != before[j.metadata.name]}
    assert new == {restarted}, (new, restarted)  # the other release Job ran to its end
    assert not [n for n in _configmap_names(k8s, ns) if n.endswith("-p0")], "today's operator made record pages"


def _configmap_names(k8s, ns: str) -> list[str]:
    listed = client.CoreV1Api(k8s).list_namespaced_config_map(ns, label_selector=f"hpscan.io/scan={SCAN}").items
    return [cm.metadata.name for cm in listed]
