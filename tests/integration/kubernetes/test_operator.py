"""The operator on a real control plane: CRD validation by the API server, Jobs through the real Job controller,
pods on the test node agent (a stand-in for a kubelet), live status, suspend/resume, retries, GPU failure, deletion.

The payload is the contract-honouring stand-in of tests/support/payloads (no TensorFlow), run through the real
`hpscan shard-run` and its ConfigMap channel inside each pod.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from hpscan.api.spec import GROUP, PLURAL, VERSION
from support.operator_support import (
    REPO,
    Operator,
    create,
    custom,
    get,
    handed_trials,
    scan_manifest,
    wait_phase,
)

PREFIX = f"hpsop-{secrets.token_hex(2)}"
LIGHT_AND_C = [{"metric": "light_rejection_77", "goal": "maximize"}, {"metric": "c_rejection_77", "goal": "maximize"}]


def _exists(read: Callable[[], Any]) -> bool:
    try:
        read()
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


# --- the API server validates what the models say (CEL rules, schema, transition rules) ---


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sharding": {"shards": 2, "combinationsPerShard": 3}}, "exactly one of shards or combinationsPerShard"),
        ({"parameters": [{"name": "lr", "range": {"min": 1.0, "max": 0.1, "count": 3}}]}, "range.min must be less than range.max"),
        ({"parameters": [{"name": "lr", "range": {"min": 0.0, "max": 0.1, "count": 3, "scale": "log"}}]}, "a log range needs min > 0"),
        ({"parameters": [{"name": "a", "values": [1]}, {"name": "a", "values": [2]}]}, "parameter names must be unique"),
        ({"retries": -1}, "spec.retries"),
        ({"sampling": {"strategy": "random"}}, "random, tpe, cmaes, qmc and nsga2 sampling need samples"),
        ({"objective": {"metric": "val_loss", "goal": "maximize"}, "objectives": LIGHT_AND_C}, "give objective or objectives, not both"),
        ({"objectives": [LIGHT_AND_C[0], LIGHT_AND_C[0]]}, "objectives must name different metrics"),
        ({"objectives": LIGHT_AND_C[:1]}, "spec.objectives"),
        ({"objectives": LIGHT_AND_C, "earlyStopping": {"strategy": "asha"}}, "needs earlyStopping.strategy: none"),
        ({"objectives": LIGHT_AND_C, "sampling": {"strategy": "cmaes", "samples": 4}}, "cmaes has no multi-objective form"),
    ],
)  # fmt: skip
def test_api_server_refuses_invalid_scans_with_the_models_message(k8s, crd, ns, change, message):
    with pytest.raises(ApiException) as refused:
        create(k8s, ns, scan_manifest("bad", **change))
    assert refused.value.status == 422
    assert message in json.loads(refused.value.body)["message"]


def test_planned_fields_cannot_change_but_parallelism_can(k8s, crd, ns):
    create(k8s, ns, scan_manifest("frozen", suspend=True))
    with pytest.raises(ApiException) as refused:
        custom(k8s).patch_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, "frozen", {"spec": {"parameters": [{"name": "x", "values": [9]}]}}
        )
    assert "spec.parameters cannot change" in json.loads(refused.value.body)["message"]
    custom(k8s).patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "frozen", {"spec": {"parallelism": 3}})
    sites = get(k8s, ns, "frozen")["spec"]["sites"]
    for edit in ([], [{"name": sites[0]["name"], "htcondor": {}}]):  # removing a site, or moving it to HTCondor
        with pytest.raises(ApiException) as refused:
            custom(k8s).patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "frozen", {"spec": {"sites": edit}})
        assert "a site cannot be removed or given another backend" in json.loads(refused.value.body)["message"]
    drained = [{**sites[0], "maxRunning": 0}, {"name": "more", "kubernetes": {}}]  # future placement may change
    custom(k8s).patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "frozen", {"spec": {"sites": drained}})


def test_kubectl_explain_and_printer_columns(cluster, crd, ns, k8s):
    explained = cluster.kubectl("explain", "hpscan.spec.parameters").stdout
    assert "The axes of the scan" in explained and "range" in explained
    defaults = create(k8s, ns, scan_manifest("defaults", suspend=True))
    assert defaults["spec"]["objective"] == {"metric": "val_loss", "goal": "minimize"}
    header = cluster.kubectl("get", "hps", "-n", ns).stdout.splitlines()[0].split()
    assert header == ["NAME", "PHASE", "DONE", "BEST", "PARETO", "SITES", "AGE"]
    several = create(k8s, ns, scan_manifest("two-objectives", suspend=True, objectives=LIGHT_AND_C))
    assert several["spec"]["objectives"] == LIGHT_AND_C  # the defaulted objective (val_loss) is no conflict
    with pytest.raises(ApiException) as refused:
        custom(k8s).patch_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, "two-objectives", {"spec": {"objectives": LIGHT_AND_C[::-1]}}
        )
    assert "spec.objectives cannot change" in json.loads(refused.value.body)["message"]


# --- the operator ---


def trained(log: Path) -> Counter:
    return Counter(log.read_text().split()) if log.exists() else Counter()


def test_a_scan_runs_to_complete_with_live_status_events_and_records(cluster, k8s, ns, operator, pod_visible_dir):
    log = pod_visible_dir / "trained.log"
    create(k8s, ns, scan_manifest("e2e", {"sleep": 0.3, "trainedLog": str(log)}, parallelism=2))
    running = wait_phase(cluster, k8s, ns, "e2e", {"Running", "Succeeded"}, 90)
    assert running["status"]["combinations"]["total"] == 8
    jobs = (
        client.BatchV1Api(k8s).list_namespaced_job(ns, label_selector="hpscan.io/scan=e2e,hpscan.io/role=shard").items
    )
    assert 1 <= len(jobs) <= 2  # parallelism 2
    pod_spec = jobs[0].spec.template.spec
    assert pod_spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"
    done = wait_phase(cluster, k8s, ns, "e2e", {"Succeeded", "Failed"}, 180)
    status = done["status"]
    assert status["phase"] == "Succeeded", status
    assert status["progress"] == "8/8" and status["best"]["parameters"]["x"] == 3
    assert {s["site"] for s in status["shards"]} == {"gpu-nodes"}
    assert sum(trained(log).values()) == 8
    cluster.kubectl("wait", "--for=condition=Complete", "hpscan/e2e", "-n", ns, "--timeout=10s")
    events = client.CoreV1Api(k8s).list_namespaced_event(ns, field_selector="involvedObject.name=e2e").items
    assert {"Running", "Succeeded"} <= {e.reason for e in events}
    exported = subprocess.run(
        [str(Path(sys.executable).parent / "hpscan"), "results", "e2e", "-n", ns],
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert len(exported.stdout.splitlines()) == 8
    assert len(json.dumps(status)) < 8192


def test_a_multi_objective_scan_holds_its_pareto_set_in_the_status(cluster, k8s, ns, operator):
    """The stand-in payload's loss is smallest at x=3 and its second objective (the sum of the numbers) at x=1: the
    operator's status holds the trade-off x=1, 2, 3 (both activations), and kubectl shows its size."""
    objectives = [{"metric": "val_loss", "goal": "minimize"}, {"metric": "size", "goal": "minimize"}]
    create(k8s, ns, scan_manifest("pareto", {}, objectives=objectives, gpu={"count": 0, "required": False},
                                  sites=[{"name": "cpu", "kubernetes": {}}]))  # fmt: skip
    status = wait_phase(cluster, k8s, ns, "pareto", {"Succeeded", "Failed"}, 180)["status"]
    assert status["phase"] == "Succeeded", status
    assert status["paretoSize"] == 6 and sorted(m["parameters"]["x"] for m in status["pareto"]) == [1, 1, 2, 2, 3, 3]
    assert [m["values"]["val_loss"] for m in status["pareto"]] == sorted(
        m["values"]["val_loss"] for m in status["pareto"]
    )
    row = cluster.kubectl("get", "hps", "pareto", "-n", ns).stdout.splitlines()[1].split()
    assert row[4] == "6"  # NAME PHASE DONE BEST PARETO ...


def test_one_shard_of_5000_combinations_records_everything_with_every_object_under_512_kib(cluster, k8s, ns, operator):
    """A shard's records go to its record pages: main kept the shard file and every record in one ConfigMap, which
    passes etcd's object limit near 2,400 DL1 records or 4,000 of this payload's (and main refused shards over 1,000
    combinations)."""
    from hpscan.api.spec import HPScanSpec
    from hpscan.job.pages import records_of

    axes = [{"name": "a", "values": list(range(100))}, {"name": "b", "values": list(range(50))}]
    body = scan_manifest(
        "big-shard", {}, parameters=axes, sharding={"shards": 1}, retries=0,
        gpu={"count": 0, "required": False}, sites=[{"name": "cpu", "kubernetes": {}}],
    )  # fmt: skip
    create(k8s, ns, body)
    status = wait_phase(cluster, k8s, ns, "big-shard", {"Succeeded", "Failed"}, 300)["status"]
    assert status["phase"] == "Succeeded", status
    assert status["progress"] == "5000/5000" and status["combinations"]["succeeded"] == 5000

    api = client.ApiClient()
    core, batch, rbac = client.CoreV1Api(k8s), client.BatchV1Api(k8s), client.RbacAuthorizationV1Api(k8s)
    selector = "hpscan.io/scan=big-shard"
    pages = core.list_namespaced_config_map(ns, label_selector=selector).items
    assert sum(len(records_of(page.data)[0]) for page in pages) == 5000  # each record once, in its page
    written = [*pages, *batch.list_namespaced_job(ns, label_selector=selector).items,
               *rbac.list_namespaced_role(ns, label_selector=selector).items, get(k8s, ns, "big-shard")]  # fmt: skip
    sizes = {
        f"{whole.get('kind') or type(obj).__name__}/{whole['metadata']['name']}": len(json.dumps(whole))
        for obj in written
        for whole in [api.sanitize_for_serialization(obj)]
    }
    assert max(sizes.values()) < 512 * 1024, sizes  # managedFields and all, as the API server keeps them

    from hpscan.backends.kubernetes import page_layout

    layout = page_layout(HPScanSpec.model_validate(body["spec"]), 1)
    assert len(pages) == -(-5000 // layout.size) > 1
    exported = subprocess.run(
        [str(Path(sys.executable).parent / "hpscan"), "results", "big-shard", "-n", ns],
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert len(exported.stdout.splitlines()) == 5000


def test_a_crashed_pod_is_retried_and_resumes_from_recorded_results(cluster, k8s, ns, operator, pod_visible_dir):
    log = pod_visible_dir / "trained.log"
    create(k8s, ns, scan_manifest("retry", {"failAttempts": {"0": 1}, "trainedLog": str(log)}))
    status = wait_phase(cluster, k8s, ns, "retry", {"Succeeded", "Failed"}, 180)["status"]
    assert status["phase"] == "Succeeded", status
    assert status["shards"][0]["attempts"] == 2
    assert max(trained(log).values()) == 1  # the second pod skipped what the first recorded


def test_a_gpu_check_failure_fails_the_scan_naming_the_site(cluster, k8s, ns, operator):
    create(k8s, ns, scan_manifest("nogpu", {"exitCode": 3}, retries=3))
    status = wait_phase(cluster, k8s, ns, "nogpu", {"Failed"}, 180)["status"]
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "GPUUnavailable" and "gpu-nodes" in failed["message"]
    assert all(s["attempts"] == 1 for s in status["shards"])


def two_sites(broken_env: dict[str, str]) -> list[dict]:
    gpu = {
        "nodeSelector": {"nvidia.com/gpu.present": "true"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    }
    env = [{"name": k, "value": v} for k, v in broken_env.items()]
    return [{"name": "broken", "env": env, "kubernetes": gpu}, {"name": "good", "kubernetes": gpu}]


def test_a_site_whose_probe_finds_no_gpu_is_excluded_and_the_other_runs_every_shard(cluster, k8s, ns, operator):
    sites = two_sites({"CONTRACT_GPU_CHECK_EXIT": "3"})  # the site's own environment breaks its GPUs
    create(k8s, ns, scan_manifest("probed", {"sleep": 0.1}, sites=sites))
    status = wait_phase(cluster, k8s, ns, "probed", {"Succeeded", "Failed"}, 180)["status"]
    assert status["phase"] == "Succeeded" and status["progress"] == "8/8", status
    broken, good = status["sites"]
    assert (broken["state"], broken["reason"]) == ("Excluded", "GPUUnavailable")
    assert "no usable GPU (stand-in, exit 3)" in broken["message"]
    assert (good["state"], good["reason"], good["succeeded"]) == ("Usable", "ProbePassed", 4)
    assert {s["site"] for s in status["shards"]} == {"good"}
    jobs = client.BatchV1Api(k8s).list_namespaced_job(ns, label_selector="hpscan.io/role=shard").items
    assert {j.metadata.annotations["hpscan.io/site"] for j in jobs} == {"good"}
    events = client.CoreV1Api(k8s).list_namespaced_event(ns, field_selector="involvedObject.name=probed").items
    assert any(e.reason == "GPUUnavailable" and "site broken Excluded" in e.message for e in events)


def test_shards_of_a_site_that_breaks_mid_scan_move_and_nothing_is_lost_or_trained_twice(
    cluster, k8s, ns, operator, pod_visible_dir
):
    log = pod_visible_dir / "trained.log"
    sites = two_sites({"CONTRACT_GPU_LOST_AFTER": "1"})  # its probe passes, its shards lose the GPU after one
    create(k8s, ns, scan_manifest("moved", {"sleep": 0.2, "trainedLog": str(log)}, sites=sites))
    status = wait_phase(cluster, k8s, ns, "moved", {"Succeeded", "Failed"}, 180)["status"]
    assert status["phase"] == "Succeeded" and status["progress"] == "8/8", status
    assert sum(trained(log).values()) == 8 and max(trained(log).values()) == 1  # each combination once
    broken = status["sites"][0]
    assert (broken["state"], broken["reason"]) == ("Excluded", "GPUUnavailable")
    moved = [s for s in status["shards"] if s["moves"] > 0]
    assert moved and all(s["site"] == "good" and s["phase"] == "Succeeded" for s in moved)
    jobs = client.BatchV1Api(k8s).list_namespaced_job(ns, label_selector="hpscan.io/role=shard").items
    assert {j.metadata.name for j in jobs} >= {f"moved-shard-{s['index']:03d}-m1" for s in moved}


def test_suspend_keeps_results_and_resume_finishes_without_retraining(cluster, k8s, ns, operator, pod_visible_dir):
    log = pod_visible_dir / "trained.log"
    create(k8s, ns, scan_manifest("pause", {"sleep": 1.0, "trainedLog": str(log)}, sharding={"shards": 2}))
    cluster.wait(lambda: sum(trained(log).values()) >= 2, 120, "two combinations trained")
    custom(k8s).patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "pause", {"spec": {"suspend": True}})
    wait_phase(cluster, k8s, ns, "pause", {"Suspended"}, 60)
    batch = client.BatchV1Api(k8s)
    cluster.wait(lambda: all(j.spec.suspend for j in batch.list_namespaced_job(ns).items), 30, "jobs suspended")
    custom(k8s).patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "pause", {"spec": {"suspend": False}})
    status = wait_phase(cluster, k8s, ns, "pause", {"Succeeded", "Failed"}, 180)["status"]
    assert status["phase"] == "Succeeded" and status["progress"] == "8/8"
    assert max(trained(log).values()) == 1


def test_deleting_a_scan_removes_everything_it_created(cluster, k8s, ns, operator):
    create(k8s, ns, scan_manifest("gone", {"sleep": 5.0}))
    wait_phase(cluster, k8s, ns, "gone", {"Running"}, 90)
    custom(k8s).delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "gone")
    core, batch = client.CoreV1Api(k8s), client.BatchV1Api(k8s)
    selector = "hpscan.io/scan=gone"

    def nothing_left() -> bool:
        return not (
            batch.list_namespaced_job(ns, label_selector=selector).items
            or core.list_namespaced_config_map(ns, label_selector=selector).items
            or core.list_namespaced_pod(ns, label_selector=selector).items
            or _exists(lambda: get(k8s, ns, "gone"))
        )

    cluster.wait(nothing_left, 90, "garbage collection of the scan's objects")


def test_a_killed_operator_restarts_without_duplicate_jobs_or_lost_results(cluster, k8s, ns, operator, pod_visible_dir):
    log = pod_visible_dir / "trained.log"
    create(k8s, ns, scan_manifest("crash", {"sleep": 1.0, "trainedLog": str(log)}, parallelism=2))
    cluster.wait(lambda: sum(trained(log).values()) >= 2, 120, "two combinations trained")
    operator.kill()
    time.sleep(3)  # shards go on without the operator: their records wait in the ConfigMaps
    operator.start()
    status = wait_phase(cluster, k8s, ns, "crash", {"Succeeded", "Failed"}, 180)["status"]
    assert status["phase"] == "Succeeded" and status["progress"] == "8/8"
    jobs = (
        client.BatchV1Api(k8s).list_namespaced_job(ns, label_selector="hpscan.io/scan=crash,hpscan.io/role=shard").items
    )
    assert sorted(j.metadata.name for j in jobs) == [f"crash-shard-{i:03d}" for i in range(4)]
    assert max(trained(log).values()) == 1


def test_tpe_with_asha_through_the_operator_survives_a_kill_9_with_no_trial_lost_or_repeated(
    cluster, k8s, ns, operator, pod_visible_dir
):
    """Workers that pull on Kubernetes: each pod's inbox ConfigMap carries its trials and stops in, its per-epoch
    reports out; records go to the record pages its trials fill. The operator is killed mid-scan; the restarted one
    rebuilds its Optuna study from the inboxes and spends the budget exactly."""
    log = pod_visible_dir / "trained.log"
    body = scan_manifest(
        "adaptive",
        {"sleep": 1.2, "epochs": 4, "trainedLog": str(log)},
        parameters=[{"name": "x", "values": list(range(1, 13))}, {"name": "act", "values": ["relu", "elu"]}],
        sampling={"strategy": "tpe", "samples": 12, "seed": 1, "trialsPerWorker": 1},
        earlyStopping={"strategy": "asha", "minEpochs": 1, "reductionFactor": 2},
        sharding={"shards": 3},
    )
    create(k8s, ns, body)
    cluster.wait(lambda: sum(trained(log).values()) >= 3, 180, "three trials trained")
    operator.kill()
    time.sleep(3)  # the workers go on with what they hold; their reports and records wait in ConfigMaps
    operator.start()
    status = wait_phase(cluster, k8s, ns, "adaptive", {"Succeeded", "Failed"}, 300)["status"]
    assert status["phase"] == "Succeeded", status["message"]
    counts = status["combinations"]
    assert counts["suggested"] == counts["total"] == 12 and counts["succeeded"] + counts["pruned"] == 12
    assert len(trained(log)) == 12 and max(trained(log).values()) == 1  # the budget exactly, each trial once
    handed = handed_trials(k8s, ns, "adaptive")
    assert len(handed) == 12 and max(handed.values()) == 1
    inboxes = client.CoreV1Api(k8s).list_namespaced_config_map(ns, label_selector="hpscan.io/scan=adaptive").items
    assert all(len(json.dumps(k8s.sanitize_for_serialization(cm))) < 512 * 1024 for cm in inboxes)


def test_deleting_a_workers_pod_mid_trial_runs_that_trial_again_once(cluster, k8s, ns, operator, pod_visible_dir):
    """A pulling worker's pod deleted while it trains: the Job's next pod reads the worker's inbox and pages, and
    trains the interrupted trial (recorded once); nothing else is trained twice."""
    log = pod_visible_dir / "trained.log"
    body = scan_manifest(
        "deleted",
        {"sleep": 3.0, "epochs": 3, "trainedLog": str(log)},
        sampling={"strategy": "qmc", "samples": 6, "seed": 1, "trialsPerWorker": 1},
        sharding={"shards": 2},
        retries=2,
    )
    create(k8s, ns, body)
    core = client.CoreV1Api(k8s)

    def inbox(shard: int) -> dict:
        try:
            return core.read_namespaced_config_map(f"deleted-shard-{shard:03d}-in", ns).data or {}
        except ApiException as error:
            if error.status == 404:  # not created yet
                return {}
            raise

    def reporting_not_recorded() -> str | None:
        """A trial of worker 0 with an epoch reported and no record yet."""
        data = inbox(0)
        reported = {json.loads(line)["id"] for line in data.get("progress.jsonl", "").splitlines() if line}
        done = set(trained(log))
        return next(iter(sorted(reported - done)), None)

    cluster.wait(lambda: reporting_not_recorded() is not None, 180, "worker 0 in the middle of a trial")
    interrupted = reporting_not_recorded()
    (pod,) = core.list_namespaced_pod(ns, label_selector="hpscan.io/scan=deleted,hpscan.io/shard=0").items
    core.delete_namespaced_pod(pod.metadata.name, ns, grace_period_seconds=0)
    status = wait_phase(cluster, k8s, ns, "deleted", {"Succeeded", "Failed"}, 300)["status"]
    assert status["phase"] == "Succeeded", status["message"]
    assert status["combinations"]["succeeded"] == 6
    assert trained(log)[interrupted] == 1 and max(trained(log).values()) == 1 and len(trained(log)) == 6


def test_gpu_pods_tolerate_the_gpu_taint_through_admission_like_a_common_gpu_cluster(cluster, k8s, ns, operator):
    """A site without tolerations: ExtendedResourceToleration (on in the local control plane, as on GKE and AKS)
    adds the toleration of the nvidia.com/gpu taint to pods that request nvidia.com/gpu."""
    bare = [{"name": "plain", "kubernetes": {}}]
    create(k8s, ns, scan_manifest("admitted", {}, sharding={"shards": 1}, sites=bare))
    status = wait_phase(cluster, k8s, ns, "admitted", {"Succeeded", "Failed"}, 120)["status"]
    assert status["phase"] == "Succeeded", status
    pods = (
        client.CoreV1Api(k8s)
        .list_namespaced_pod(ns, label_selector="hpscan.io/scan=admitted,hpscan.io/role=shard")
        .items
    )
    assert {p.spec.node_name for p in pods} == {"hpscan-gpu-0"}
    assert any(t.key == "nvidia.com/gpu" for p in pods for t in p.spec.tolerations or [])


def test_a_shard_the_scheduler_cannot_place_is_pending_with_the_schedulers_message(cluster, k8s, ns, operator):
    too_big = scan_manifest("toobig", {}, sharding={"shards": 2}, gpu={"count": 5, "required": True})
    create(k8s, ns, scan_manifest("probed-big", {}, sharding={"shards": 2}, gpu={"count": 5, "required": True}))
    too_big["spec"]["payload"]["gpuCheck"] = []  # no probe: the shards themselves meet the scheduler
    create(k8s, ns, too_big)

    def unschedulable() -> dict | None:
        status = get(k8s, ns, "toobig").get("status") or {}
        shards = status.get("shards") or []
        return status if shards and all(s.get("reason") == "Unschedulable" for s in shards) else None

    status = cluster.wait(unschedulable, 60, "shards reported Unschedulable")
    assert status["phase"] == "Pending" and status["combinations"]["running"] == 0
    assert all(s["phase"] == "Pending" and "Insufficient nvidia.com/gpu" in s["message"] for s in status["shards"])
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "Unschedulable")
    assert "Insufficient nvidia.com/gpu" in degraded["message"]
    # With a probe, the site's probe meets the scheduler first: the site is not usable yet, and says why.
    probed = get(k8s, ns, "probed-big")["status"]
    assert (probed["sites"][0]["state"], probed["phase"]) == ("Probing", "Pending")
    assert "Insufficient nvidia.com/gpu" in probed["sites"][0]["message"]
    degraded = next(c for c in probed["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "NoUsableSite" and "Insufficient nvidia.com/gpu" in degraded["message"]


def test_a_scan_author_gets_no_service_account_through_a_scan(cluster, k8s, ns, operator):
    """The operator may create pods under any account; a scan naming one the site admin did not allow is refused
    before any Job exists (docs/security.md)."""
    site = {
        "name": "borrowed",
        "kubernetes": {"serviceAccountName": "default", "priorityClassName": "system-node-critical"},
    }
    create(k8s, ns, scan_manifest("borrow", {}, sites=[site]))
    status = wait_phase(cluster, k8s, ns, "borrow", {"Failed"}, 60)["status"]
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "NotAllowed" and "serviceAccountName 'default'" in failed["message"]
    assert client.BatchV1Api(k8s).list_namespaced_job(ns, label_selector="hpscan.io/scan=borrow").items == []


def test_metrics_count_scans_shards_and_api_requests(operator, k8s, ns, cluster):
    create(k8s, ns, scan_manifest("counted", {}, sharding={"shards": 2}))
    wait_phase(cluster, k8s, ns, "counted", {"Succeeded", "Failed"}, 120)
    text = operator.metrics()
    assert 'hpscan_scans{phase="Succeeded"}' in text
    assert 'hpscan_api_requests_total{method="POST"}' in text
    assert "hpscan_reconcile_seconds_count" in text


def api_requests(operator: Operator) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in operator.metrics().splitlines()
        if line.startswith("hpscan_api_requests_total{")
    )


def test_an_idle_scan_costs_no_api_request(operator, k8s, ns, cluster):
    """Reconciles read the watch-fed indexes of the shard Jobs and ConfigMaps and patch the status only when it
    changes: a scan that waits (suspended) sends nothing, where it used to LIST twice and PATCH every 2 s."""
    create(k8s, ns, scan_manifest("idle", {}, suspend=True))
    wait_phase(cluster, k8s, ns, "idle", {"Suspended"}, 60)
    time.sleep(3)  # the first reconciles settle the status
    before = api_requests(operator)
    time.sleep(8)  # four reconciles of this scan
    assert api_requests(operator) - before == 0


@pytest.mark.slow

# --- kept models in a real S3 server (the s3 fixture): uploaded by the shard pods, pruned by the operator ---


def _store(k8s: client.ApiClient, ns: str, s3: Any, secret_key: str | None = None) -> dict:
    """A fresh bucket, the Secret with its key pair in ``ns``, and the spec.artifacts.store naming both."""
    bucket = s3.create_bucket(f"models-{secrets.token_hex(3)}")
    keys = {"accessKeyId": s3.access_key, "secretAccessKey": secret_key or s3.secret_key}
    client.CoreV1Api(k8s).create_namespaced_secret(ns, {"metadata": {"name": "models-s3"}, "stringData": keys})
    return {"s3": {"endpoint": s3.endpoint, "bucket": bucket, "prefix": "scans", "secretRef": {"name": "models-s3"}}}


def _hpscan(cluster: Any, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).parent / "hpscan"), *args],
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}, capture_output=True, text=True, check=False,
    )  # fmt: skip


def test_shard_pods_upload_their_models_and_the_operator_keeps_the_top_k(cluster, k8s, ns, operator, s3, tmp_path):
    explained = cluster.kubectl("explain", "hpscan.spec.artifacts.store.s3").stdout
    assert "<prefix>/<namespace>/<scan>/<combination id>/" in explained and "secretRef" in explained
    store = _store(k8s, ns, s3)
    create(k8s, ns, scan_manifest("kept", {}, artifacts={"keep": "top", "top": 1, "store": store}))
    status = wait_phase(cluster, k8s, ns, "kept", {"Succeeded", "Failed"}, 180)["status"]
    assert status["phase"] == "Succeeded", status

    def kept_event() -> str | None:
        events = client.CoreV1Api(k8s).list_namespaced_event(ns, field_selector="involvedObject.name=kept").items
        return next((e.message for e in events if e.reason == "ModelsKept"), None)

    message = cluster.wait(kept_event, 30, "the ModelsKept event")
    assert message.startswith("kept 3 of 8 trained models")  # the best, the median and the worst of 8
    records = [json.loads(line) for line in _hpscan(cluster, "results", "kept", "-n", ns).stdout.splitlines()]
    ranked = sorted(records, key=lambda r: (r["metrics"]["val_loss"], r["id"]))
    expected = {ranked[0]["id"], ranked[3]["id"], ranked[7]["id"]}
    bucket = store["s3"]["bucket"]
    keys = s3.keys(bucket)
    assert {key.split("/")[3] for key in keys} == expected
    assert all(key.startswith(f"scans/{ns}/kept/") for key in keys)

    listing = _hpscan(cluster, "models", "kept", "-n", ns, "--json")
    assert listing.returncode == 0, listing.stderr
    rows = json.loads(listing.stdout)
    assert [(row["rank"], row["id"]) for row in rows] == [
        (1, ranked[0]["id"]), (4, ranked[3]["id"]), (8, ranked[7]["id"]),
    ]  # fmt: skip
    fetched = _hpscan(cluster, "fetch-model", "kept", "-n", ns, "--rank", "8", "--out", str(tmp_path / "worst"))
    assert fetched.returncode == 0, fetched.stderr
    assert json.loads((tmp_path / "worst" / "record.json").read_text())["id"] == ranked[7]["id"]
    assert (tmp_path / "worst" / "weights.txt").read_text() == f"{ranked[7]['metrics']['val_loss']}\n"
    missing = _hpscan(cluster, "fetch-model", "kept", "-n", ns, "--rank", "2", "--out", str(tmp_path / "second"))
    assert missing.returncode == 2 and "no kept model of rank 2" in missing.stderr


def test_a_wrong_store_key_fails_the_scan_naming_the_cause_before_training(
    cluster, k8s, ns, operator, s3, pod_visible_dir
):
    log = pod_visible_dir / "trained.log"
    store = _store(k8s, ns, s3, secret_key="not-the-secret")
    manifest = scan_manifest("badkey", {"trainedLog": str(log)}, sharding={"shards": 1}, retries=2)
    manifest["spec"]["artifacts"] = {"store": store}
    create(k8s, ns, manifest)
    status = wait_phase(cluster, k8s, ns, "badkey", {"Succeeded", "Failed"}, 120)["status"]
    assert status["phase"] == "Failed", status
    shard = status["shards"][0]
    assert shard["reason"] == "InvalidInput" and shard["attempts"] == 1  # a credential: never retried
    assert "SignatureDoesNotMatch" in shard["message"] and store["s3"]["bucket"] in shard["message"]
    assert not log.exists()  # nothing trained: no GPU time for models nobody could keep
    assert s3.keys(store["s3"]["bucket"]) == []


def test_the_quickstart_scan_runs_through_the_real_payload(cluster, k8s, ns, operator, s3, tmp_path):
    body = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    body["spec"]["parallelism"] = 2  # two TensorFlow pods at once on a 2-core machine
    body["spec"]["artifacts"] = {"keep": "top", "top": 1, "store": _store(k8s, ns, s3)}
    create(k8s, ns, body)
    status = wait_phase(cluster, k8s, ns, "quickstart", {"Succeeded", "Failed"}, 600)["status"]
    assert status["phase"] == "Succeeded", status
    assert status["progress"] == "24/24"
    assert status["best"]["value"] < 0.7 and set(status["best"]["parameters"]) == {
        "layer1", "layer2", "learning_rate", "activation",
    }  # fmt: skip
    # The dl1 models the pods saved, in the store: the best, the median and the worst are kept, in Keras format.
    fetched = _hpscan(cluster, "fetch-model", "quickstart", "-n", ns, "--rank", "1", "--out", str(tmp_path / "best"))
    assert fetched.returncode == 0, fetched.stderr
    info = json.loads((tmp_path / "best" / "model.json").read_text())
    assert info["id"] == status["best"]["id"] and info["metrics"]["val_loss"] == status["best"]["value"]
    assert (tmp_path / "best" / "model.keras").is_file() and (tmp_path / "best" / "scale_dict.json").is_file()
    listing = json.loads(_hpscan(cluster, "models", "quickstart", "-n", ns, "--json").stdout)
    assert [row["rank"] for row in listing] == [1, 12, 24]
