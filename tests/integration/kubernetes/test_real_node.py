"""The real node (the real_node fixture: containerd + runc + a kubelet, cluster/node/up.sh; root): a pod from the
payload image runs there under the restricted Pod Security profile, `kubectl logs` reaches it through the API
server, the pod's network keeps every packet on the machine (no default route, no DNS), a shard Job made by
the operator's own manifest functions trains and publishes its record through the kubernetes Service, and, end
to end, the Helm chart runs the operator image there, which runs examples/quickstart.yaml (applied with kubectl)
as payload-image containers to Succeeded and a GPU-required scan to Failed with GPUUnavailable."""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from support.operator_support import tiny_shard
from support.real_node import NODE, PAYLOAD, REAL_SITE, TOLERATIONS, ctr, finished

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("real_node")]

REPO = Path(__file__).resolve().parents[3]
GPU_CHECK = "localhost/hpscan/dl1-gpu-check:dev"
SCRIPT = r"""
echo "uid=$(id -u) gid=$(id -g)"
hpscan shard-run --help | head -3
python3 -c 'import kubernetes, htchirp, dl1, hpscan; print("imports ok")'
touch /probe 2>/dev/null && echo "root filesystem writable" || echo "root filesystem read-only"
echo "nameservers: $(awk '$1 == "nameserver" && $2 !~ /^127\./' /etc/resolv.conf | wc -l)"
awk 'NR > 1 {print "route", $2, $3}' /proc/net/route
grep CapEff /proc/self/status
"""


def test_a_restricted_pod_runs_from_the_payload_image_and_kubectl_logs_works(cluster, k8s, new_namespace):
    ns = new_namespace(labels={"pod-security.kubernetes.io/enforce": "restricted"})
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "payload"},
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": {"hpscan.io/real-node": "true"},
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                {"key": "hpscan.io/real-node", "operator": "Exists", "effect": "NoSchedule"},
            ],
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 1000,
                "runAsGroup": 1000,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "payload",
                    "image": PAYLOAD,
                    "imagePullPolicy": "Never",
                    "command": ["sh", "-c", SCRIPT],
                    "resources": {"limits": {"nvidia.com/gpu": "1", "memory": "1Gi"}},
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                }
            ],
            "volumes": [{"name": "tmp", "emptyDir": {}}],
        },
    }
    core = client.CoreV1Api(k8s)
    core.create_namespaced_pod(ns, pod)

    def finished():
        status = core.read_namespaced_pod("payload", ns).status
        return status.phase if status.phase in ("Succeeded", "Failed") else None

    phase = cluster.wait(finished, 180, "the pod on the real node to finish")
    placed = core.read_namespaced_pod("payload", ns)
    assert placed.spec.node_name == NODE
    logs = cluster.kubectl("-n", ns, "logs", "payload", check=False)
    assert phase == "Succeeded", f"{phase}: {logs.stdout}{logs.stderr}"
    assert logs.returncode == 0, logs.stderr
    out = logs.stdout
    assert "uid=1000 gid=1000" in out
    assert "Usage" in out and "imports ok" in out
    assert "root filesystem read-only" in out
    assert "nameservers: 0" in out  # no DNS (the kubelet writes 127.0.0.1 when it has none: the pod's own loopback)
    routes = [line.split() for line in out.splitlines() if line.startswith("route ")]
    assert routes, out
    assert all(destination != "00000000" for _, destination, _ in routes), f"a default route: {routes}"
    assert len(routes) == 2, routes  # its own /24 on the bridge, the service range via the bridge's address
    assert "CapEff:\t0000000000000000" in out


TINY_SHARD = tiny_shard("tiny")


def test_a_shard_job_runs_on_the_real_node_and_publishes_its_record_through_the_api(cluster, k8s, new_namespace):
    """The operator's own manifests (payload RBAC, record page, Job) with the payload image: the pod reads its
    shard file from the page, trains one combination and its `--channel kubernetes` writes the record into the
    page through the kubernetes Service (kube-proxy)."""
    from kubernetes import utils

    from hpscan.api.contract import ShardFile
    from hpscan.backends.base import ScanRef
    from hpscan.backends.kubernetes import job_manifest, job_name, payload_rbac, shard_pages, shard_pages_name
    from hpscan.core.manifest import load_scan
    from hpscan.job.pages import records_of

    ns = new_namespace(labels={"pod-security.kubernetes.io/enforce": "restricted"})
    spec = load_scan(REPO / "examples" / "dl1-seed-scan.yaml").spec
    ref = ScanRef(name="tiny", namespace=ns, uid="0")
    job = job_manifest(ref, spec, 0, spec.sites[0], image=PAYLOAD)
    manifests = [*payload_rbac(ref, 1), *shard_pages(ref, ShardFile.model_validate(TINY_SHARD), 1), job]
    for manifest in manifests:
        manifest["metadata"].pop("ownerReferences")  # no HPScan here: the garbage collector would take them
    pod = job["spec"]["template"]["spec"]
    pod["nodeSelector"]["hpscan.io/real-node"] = "true"
    pod["tolerations"].append({"key": "hpscan.io/real-node", "operator": "Exists", "effect": "NoSchedule"})
    container = pod["containers"][0]
    container["imagePullPolicy"] = "Never"
    container["resources"] = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"nvidia.com/gpu": "1"}}
    assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"])  # TensorFlow needs a writable /tmp
    for manifest in manifests:
        utils.create_from_dict(k8s, manifest, namespace=ns)

    batch = client.BatchV1Api(k8s)

    def finished():
        status = batch.read_namespaced_job(job_name("tiny", 0), ns).status
        return "Complete" if status.succeeded else "Failed" if status.failed else None

    outcome = cluster.wait(finished, 300, "the shard Job on the real node")
    logs = cluster.kubectl("-n", ns, "logs", f"job/{job_name('tiny', 0)}", check=False)
    assert outcome == "Complete", f"{outcome}: {logs.stdout[-3000:]}{logs.stderr[-2000:]}"
    configmap = client.CoreV1Api(k8s).read_namespaced_config_map(f"{shard_pages_name('tiny', 0)}-p0", ns)
    (record,), _ = records_of(configmap.data)
    assert (record.id, record.status, record.shard) == ("c-tiny", "succeeded", 0)
    assert "c-tiny" in logs.stdout


QUICKSTART = "quickstart"
SHARD_OBJECTS = ("jobs", "pods", "configmaps", "serviceaccounts", "roles", "rolebindings", "networkpolicies")


@pytest.fixture(scope="module")
def operator_release(cluster, k8s, real_node):
    """The Helm chart installs the operator image on the real node, watching one namespace under the restricted
    Pod Security profile; the chart's site defaults send scans without spec.sites to the real node. Yields the
    scans' namespace."""
    core: Any = client.CoreV1Api(k8s)
    suffix = secrets.token_hex(3)
    operator_ns, scans = f"real-operator-{suffix}", f"real-scans-{suffix}"
    for name in (operator_ns, scans):
        labels = {"hpscan.io/test": "true", "pod-security.kubernetes.io/enforce": "restricted"}
        core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
    # Helm installs a chart's CRD only where there is none: in a cluster kept from an older tree, this one's.
    cluster.kubectl("apply", "-f", str(REPO / "crds" / "hpscan.io_hpscans.yaml"))
    cluster.kubectl("wait", "--for=condition=Established", "crd/hpscans.hpscan.io", "--timeout=60s")
    release = f"hpo-{suffix}"
    helm = [str(cluster.tools_bin / "helm"), "-n", operator_ns]
    installed = subprocess.run(
        [*helm, "install", release, str(REPO / "charts" / "hpscan-operator"), "--wait", "--timeout", "180s",
         "--set", "image.repository=localhost/hpscan/operator", "--set", "image.tag=dev",
         "--set", "image.pullPolicy=Never", "--set-json", f'watchNamespaces=["{scans}"]',
         "--set-json", 'nodeSelector={"hpscan.io/real-node": "true"}',
         "--set-json", f"tolerations={json.dumps(TOLERATIONS)}",
         "--set-json", 'defaults.nodeSelector={"hpscan.io/real-node": "true"}',
         "--set-json", f"defaults.tolerations={json.dumps(TOLERATIONS)}"],
        env=cluster.env(), capture_output=True, text=True, check=False,
    )  # fmt: skip
    try:
        assert installed.returncode == 0, installed.stderr
        (pod,) = core.list_namespaced_pod(operator_ns).items
        assert pod.spec.node_name == NODE
        assert pod.status.container_statuses[0].container_id.startswith("containerd://")
        yield scans
    finally:
        logs = cluster.kubectl("-n", operator_ns, "logs", "--tail=60", "-l", "app.kubernetes.io/name=hpscan-operator",
                               check=False)  # fmt: skip
        subprocess.run([*helm, "uninstall", release, "--wait", "--timeout", "60s"], env=cluster.env(), check=False)
        for name in (operator_ns, scans):
            core.delete_namespace(name)
        print(logs.stdout[-4000:])


def _apply(cluster, namespace: str, scan: dict) -> None:
    applied = cluster.kubectl("-n", namespace, "apply", "-f", "-", check=False, input=json.dumps(scan))
    assert applied.returncode == 0, applied.stderr


def quickstart_for_the_real_node() -> dict:
    """examples/quickstart.yaml as it is (24 combinations, 4 shards, its training settings, no spec.sites), with
    the payload image built here and CPU and memory requests that let its four shards share the 2-core node."""
    scan = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    assert "sites" not in scan["spec"]  # the chart's site defaults place it on the real node
    scan["spec"]["payload"] |= {"image": PAYLOAD, "cpu": "250m", "memory": "2Gi"}
    return scan


def test_the_quickstart_scan_runs_as_real_containers_through_the_helm_installed_operator_image(
    cluster, k8s, operator_release
):
    """Real containers end to end: the quickstart scan, applied with kubectl, is handled by the operator image;
    its shard Jobs run the payload image on the real node as runc enforces the restricted profile; `kubectl
    logs` reaches a shard pod through the kubelet; every record reaches the cluster; deleting the scan removes
    all it made."""
    from hpscan.api.spec import HPScan
    from hpscan.core.planning import plan

    ns, scan = operator_release, quickstart_for_the_real_node()
    _apply(cluster, ns, scan)
    status = finished(cluster, k8s, ns, QUICKSTART, 900)
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)[-4000:]
    assert status["progress"] == "24/24", status

    # Every planned combination has its record, read from the cluster the way a user exports them.
    exported = subprocess.run(
        [str(REPO / ".venv" / "bin" / "hpscan"), "results", QUICKSTART, "-n", ns],
        env=cluster.env(), capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    records = [json.loads(line) for line in exported.stdout.splitlines()]
    planned = plan(QUICKSTART, HPScan.model_validate(scan).spec)
    assert sorted(r["id"] for r in records) == sorted(c.id for c in planned.combinations())
    assert {r["status"] for r in records} == {"succeeded"}
    assert all(r["metrics"]["val_loss"] > 0 for r in records)

    core = client.CoreV1Api(k8s)
    pods = core.list_namespaced_pod(ns, label_selector=f"hpscan.io/scan={QUICKSTART}").items
    assert len(pods) == 4 and {p.spec.node_name for p in pods} == {NODE}, [p.metadata.name for p in pods]
    assert {p.spec.containers[0].image for p in pods} == {PAYLOAD}
    for pod in pods:
        # What runc was given for the shard container: the restricted profile, enforced, not only admitted.
        (container,) = pod.status.container_statuses
        assert container.container_id.startswith("containerd://")
        oci = json.loads(ctr("containers", "info", container.container_id.removeprefix("containerd://")).stdout)
        process, root = oci["Spec"]["process"], oci["Spec"]["root"]
        assert (process["user"]["uid"], process["user"]["gid"]) == (10001, 10001)
        assert root.get("readonly") is True
        assert process.get("noNewPrivileges") is True
        assert not any(process.get("capabilities", {}).get(kind) for kind in ("bounding", "effective", "permitted"))
        assert oci["Spec"]["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"

    # `kubectl logs` of a shard pod: through the API server to the kubelet, which reads containerd's log.
    shard0 = next(p for p in pods if p.metadata.labels["hpscan.io/shard"] == "0")
    logs = cluster.kubectl("-n", ns, "logs", shard0.metadata.name)
    assert all(c.id in logs.stdout for c in planned.shard_combinations(0)), logs.stdout[-3000:]

    # Deleting the scan removes everything it made: Jobs, pods, ConfigMaps, RBAC, and the containers on the node.
    deleted = cluster.kubectl("-n", ns, "delete", "hpscan", QUICKSTART, "--wait=true", "--timeout=120s", check=False)
    assert deleted.returncode == 0, deleted.stderr

    def leftovers() -> list[str]:
        found = cluster.kubectl("-n", ns, "get", ",".join(SHARD_OBJECTS), "-l", f"hpscan.io/scan={QUICKSTART}",
                                "-o", "name")  # fmt: skip
        containers = ctr("containers", "ls", "-q", f'labels."io.kubernetes.pod.namespace"=={ns}').stdout.split()
        return found.stdout.split() + [f"container/{c}" for c in containers]

    remaining: list[str] = []

    def gone() -> bool:
        remaining[:] = leftovers()
        return not remaining

    try:
        cluster.wait(gone, 120, "everything of the deleted scan to go")
    except TimeoutError:
        pytest.fail(f"left behind after the scan was deleted: {remaining}")


def _one_shard_scan(name: str, payload: dict, retries: int = 0, gpu_required: bool = False,
                    sites: list[dict] | None = None) -> dict:  # fmt: skip
    """A one-shard scan of two one-epoch dl1 combinations on the payload image; on the real node as a site of its
    own unless ``sites`` says otherwise ([]: the chart's site defaults)."""
    spec: dict[str, Any] = {
        "objective": {"metric": "val_loss", "goal": "minimize"},
        "parameters": [{"name": "layer1", "values": [8, 16]}],
        "sharding": {"shards": 1},
        "retries": retries,
        "gpu": {"count": 1, "required": gpu_required},
        "payload": {
            "image": PAYLOAD, "cpu": "250m", "memory": "1Gi",
            "settings": {"epochs": 1, "patience": 1, "data": {"synthetic": {"jets": 2000, "seed": 1}}},
        } | payload,
    }  # fmt: skip
    if sites is None or sites:
        spec["sites"] = sites or [REAL_SITE]
    return {"apiVersion": "hpscan.io/v1alpha1", "kind": "HPScan", "metadata": {"name": name}, "spec": spec}


@pytest.mark.parametrize("probe", [True, False], ids=["site-probe", "shard-check"])
def test_a_gpu_required_scan_fails_with_gpu_unavailable_from_the_real_gpu_check(cluster, k8s, operator_release, probe):
    """The node advertises nvidia.com/gpu but has none: dl1's gpu-check in a real container given one finds no
    device node and exits 3, and the scan fails with GPUUnavailable. With the site probe (spec.payload.gpuCheck,
    the default) it runs in the probe Job and the site is excluded before any shard starts; without it, in the
    shard's own `dl1 train-shard`, whose Job fails at once (never retried)."""
    ns, name = operator_release, f"needs-gpu-{'probe' if probe else 'shard'}"
    scan = _one_shard_scan(name, {} if probe else {"gpuCheck": []}, retries=2, gpu_required=True, sites=[])
    _apply(cluster, ns, scan)
    status = finished(cluster, k8s, ns, name, 300)
    assert status["phase"] == "Failed", status
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "GPUUnavailable", failed
    (site,) = status["sites"]
    assert (site["state"], site["reason"]) == ("Excluded", "GPUUnavailable"), site
    # The real check's words, from the termination message file the payload wrote (HPSCAN_LAST_WORDS_FILE): the
    # log's last line, the kubelet's fallback, was the JSON report's "}" as often as not in a real container.
    words = "no NVIDIA device nodes" if probe else "shard 0: GPU required but unusable: no NVIDIA device nodes"
    assert site["message"].startswith(words), site
    role = "probe" if probe else "shard"
    (pod,) = client.CoreV1Api(k8s).list_namespaced_pod(ns, label_selector=f"hpscan.io/scan={name}").items
    assert pod.metadata.labels["hpscan.io/role"] == role
    assert pod.spec.node_name == NODE
    assert pod.spec.containers[0].image == PAYLOAD
    assert pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"
    assert pod.status.container_statuses[0].state.terminated.exit_code == 3
    if not probe:
        (shard,) = status["shards"]
        assert shard["reason"] == "GPUUnavailable" and shard["attempts"] == 1, shard


def test_the_gpu_check_image_exits_3_on_the_node_that_advertises_gpus_it_lacks(cluster, k8s, new_namespace):
    """The site's GPU test container (payload/Dockerfile, target gpu-check) as a pod given one nvidia.com/gpu:
    with no device in the container, it exits 3 and says why."""
    ns = new_namespace(labels={"pod-security.kubernetes.io/enforce": "restricted"})
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "gpu-check"},
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": {"hpscan.io/real-node": "true"},
            "tolerations": TOLERATIONS,
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "gpu-check",
                    "image": GPU_CHECK,
                    "imagePullPolicy": "Never",
                    "resources": {"limits": {"nvidia.com/gpu": "1", "memory": "1Gi"}},
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                }
            ],
            "volumes": [{"name": "tmp", "emptyDir": {}}],
        },
    }
    core = client.CoreV1Api(k8s)
    core.create_namespaced_pod(ns, pod)

    def terminated():
        statuses = core.read_namespaced_pod("gpu-check", ns).status.container_statuses or []
        return statuses and statuses[0].state.terminated

    state = cluster.wait(terminated, 180, "the gpu-check pod to finish")
    logs = cluster.kubectl("-n", ns, "logs", "gpu-check", check=False)
    assert state.exit_code == 3, f"{state}: {logs.stdout}{logs.stderr}"
    assert "no NVIDIA device nodes" in logs.stdout + logs.stderr, logs.stdout + logs.stderr


def test_the_helm_installed_operator_image_refuses_a_scan_with_settings_its_payload_refuses(
    cluster, k8s, operator_release
):
    """The operator image loads dl1's settings checker (it needs no h5py): a scan with `epochs: -3` is refused
    before anything is submitted, in the checker's words, with an Event; not admitted unchecked."""
    ns, name = operator_release, "bad-epochs"
    scan = quickstart_for_the_real_node()
    scan["metadata"]["name"] = name
    scan["spec"]["payload"]["settings"]["epochs"] = -3
    _apply(cluster, ns, scan)
    status = finished(cluster, k8s, ns, name, 120)
    assert status["phase"] == "Failed", status
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    words = "spec.payload: settings.epochs: Input should be greater than or equal to 1"
    assert failed["reason"] == "InvalidSpec" and words in failed["message"], failed
    events = client.CoreV1Api(k8s).list_namespaced_event(ns, field_selector=f"involvedObject.name={name}").items
    said = [(e.reason, e.message) for e in events]
    assert any(reason == "InvalidSpec" and words in message for reason, message in said), said
    assert not client.BatchV1Api(k8s).list_namespaced_job(ns, label_selector=f"hpscan.io/scan={name}").items


def test_a_shard_killed_for_memory_and_one_whose_image_is_missing_fail_saying_so_everywhere_a_user_looks(
    cluster, k8s, operator_release
):
    """Through the Helm-installed operator (issue 30): a payload over its memory limit is OOMKilled by the kernel,
    and a payload image that no registry can give fails its shard once the site's imagePullTimeoutSeconds passed
    (0 here). Each shard's message, the scan's message, a Warning Event, `hpscan status` and `kubectl describe`
    carry the kubelet's words, not only "Job has reached the specified backoff limit"."""
    ns = operator_release
    missing = "localhost/hpscan/no-such-payload:dev"  # localhost: the pull is refused on the machine, nothing leaves
    no_image_site = {**REAL_SITE, "kubernetes": {**REAL_SITE["kubernetes"], "imagePullTimeoutSeconds": 0}}
    scans = {
        "oom": (_one_shard_scan("oom", {"memory": "120Mi"}), "OOMKilled (exit code 137)", "BackoffLimitExceeded"),
        "no-image": (_one_shard_scan("no-image", {"image": missing}, sites=[no_image_site]), "no-such-payload", "ImageUnavailable"),
    }  # fmt: skip
    for scan, _, _ in scans.values():
        _apply(cluster, ns, scan)
    for name, (_, words, reason) in scans.items():
        status = finished(cluster, k8s, ns, name, 300)
        assert status["phase"] == "Failed", status
        (shard,) = status["shards"]
        assert shard["reason"] == reason and words in shard["message"], shard
        if name == "no-image":
            assert shard["message"].startswith(("ErrImagePull: ", "ImagePullBackOff: ")), shard
        assert words in status["message"], status["message"]
        events = cluster.kubectl("-n", ns, "get", "events", "--field-selector", f"involvedObject.name={name}",
                                 "-o", "json").stdout  # fmt: skip
        assert any(words in e["message"] and e["type"] == "Warning" for e in json.loads(events)["items"]), events
        described = cluster.kubectl("-n", ns, "describe", "hpscan", name).stdout
        assert words in described, described[-3000:]
        shown = subprocess.run(
            [str(REPO / ".venv" / "bin" / "hpscan"), "status", name, "-n", ns, "--json"],
            env=cluster.env(), capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert shown.returncode == 1 and words in shown.stdout, shown.stdout[-2000:] + shown.stderr
    # The Job whose image never came is suspended: its pod went, and with it the GPU it held.
    jobs = client.BatchV1Api(k8s).list_namespaced_job(ns, label_selector="hpscan.io/scan=no-image").items
    assert [j.spec.suspend for j in jobs] == [True]
    cluster.wait(lambda: not client.CoreV1Api(k8s).list_namespaced_pod(ns, label_selector="hpscan.io/scan=no-image").items,
                 60, "the pod of the Job failed for its image to go")  # fmt: skip


def test_a_shard_whose_account_cannot_read_its_pages_fails_naming_who_may_not_do_what(cluster, k8s, new_namespace):
    """The pages' RoleBinding gone (an admin's cleanup, a policy controller): the real KubernetesBackend sends the
    shard, the payload image's shard runner is refused its page with 403, and the shard's message is the one line
    `hpscan shard-run` said, naming the account, the verb and the ConfigMap (issue 30), never "internal error" and
    a response dump."""
    from hpscan.api.spec import GROUP, VERSION, HPScan
    from hpscan.backends.base import ScanRef, ShardLaunch
    from hpscan.backends.kubernetes import KubernetesBackend
    from hpscan.backends.kubernetes.names import payload_account_name
    from hpscan.core.planning import plan

    ns = new_namespace(labels={"pod-security.kubernetes.io/enforce": "restricted"})
    cluster.kubectl("apply", "-f", str(REPO / "crds" / "hpscan.io_hpscans.yaml"))
    cluster.kubectl("wait", "--for=condition=Established", "crd/hpscans.hpscan.io", "--timeout=60s")
    # A real HPScan owns what the backend makes (no operator watches this namespace): the garbage collector keeps it.
    body = _one_shard_scan("no-rights", {})
    created = client.CustomObjectsApi(k8s).create_namespaced_custom_object(GROUP, VERSION, ns, "hpscans", body)
    scan = ScanRef(name="no-rights", namespace=ns, uid=created["metadata"]["uid"])
    spec = HPScan.model_validate(body).spec
    planned = plan(scan.name, spec)
    backend = KubernetesBackend(k8s)
    backend.prepare(scan, spec, planned.shard_count)
    account = payload_account_name(scan.name)
    client.RbacAuthorizationV1Api(k8s).delete_namespaced_role_binding(account, ns)
    backend.submit(scan, spec, [ShardLaunch(shard_file=planned.shard_file(0), site=spec.sites[0])])

    def failed():
        state = backend.poll(scan).get(0)
        return state if state is not None and state.phase == "Failed" else None

    state = cluster.wait(failed, 180, "the shard refused its pages to fail")
    words = f"system:serviceaccount:{ns}:{account} may not get ConfigMap {ns}/no-rights-shard-000-p0 (403 Forbidden)"
    assert words in state.message, state
    assert state.message.startswith("exit code 1: error: ") and "internal error" not in state.message, state
    assert (state.reason, state.attempts) == ("BackoffLimitExceeded", 1), state
