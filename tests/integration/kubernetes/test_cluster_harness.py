"""Tests of the local Kubernetes harness itself: the real control plane plus the test node agent (a stand-in
for a kubelet with a container runtime, cluster/nodeagent.py). Jobs, garbage collection and RBAC here are the
real kube-controller-manager and kube-apiserver; only running the containers is simulated."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from cluster.nodeagent import exit_code, expand, field_value, files_from_items
from cluster.testing import LocalCluster

REPO = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.timeout(240)


# --- pure parts of the node agent (no cluster) -----------------------------------------------------------


def test_expand_follows_kubernetes_rules() -> None:
    env = {"A": "1", "B": "two"}
    assert expand("$(A)-$(B)", env) == "1-two"
    assert expand("$(MISSING) $$(A) $$", env) == "$(MISSING) $(A) $"


def test_items_select_and_rename_keys() -> None:
    data = {"a": b"1", "b": b"2"}
    assert files_from_items(data, None, 0o644) == {"a": (b"1", 0o644), "b": (b"2", 0o644)}
    assert files_from_items(data, [{"key": "b", "path": "sub/b.txt", "mode": 0o400}], 0o644) == {
        "sub/b.txt": (b"2", 0o400)
    }


def test_signals_read_as_shell_exit_codes() -> None:
    assert exit_code(-9) == 137
    assert exit_code(3) == 3


def test_downward_api_fields() -> None:
    pod = {"metadata": {"name": "p", "namespace": "n", "labels": {"x": "1"}}, "spec": {"nodeName": "node"}}
    assert field_value(pod, "metadata.labels['x']") == "1"
    assert field_value(pod, "metadata.labels") == 'x="1"\n'
    assert field_value(pod, "spec.nodeName") == "node"


# --- against the control plane ----------------------------------------------------------------------------


def job_manifest(name: str, command: list[str], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "ignored.example/none:0", "command": command}],
                }
            },
            **spec,
        },
    }


def job_condition(batch: client.BatchV1Api, namespace: str, name: str, kind: str) -> bool:
    job = batch.read_namespaced_job(name, namespace)
    return any(c.type == kind and c.status == "True" for c in (job.status.conditions or []))


def pods_of(core: client.CoreV1Api, namespace: str, job: str) -> list[Any]:
    return core.list_namespaced_pod(namespace, label_selector=f"job-name={job}").items


def test_nodes_are_ready_and_advertise_gpus(cluster: LocalCluster, k8s: client.ApiClient) -> None:
    nodes = {node.metadata.name: node for node in client.CoreV1Api(k8s).list_node().items}
    gpu = nodes["hpscan-gpu-0"]
    assert gpu.status.capacity["nvidia.com/gpu"] == "4"
    assert gpu.metadata.labels["nvidia.com/gpu.present"] == "true"
    assert any(t.key == "nvidia.com/gpu" and t.effect == "NoSchedule" for t in gpu.spec.taints)
    for node in nodes.values():
        assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"].startswith("v1.")
    assert "hpscan-gpu-0" in cluster.kubectl("get", "nodes").stdout


def test_job_with_two_completions_completes(cluster: LocalCluster, k8s: client.ApiClient, namespace: str) -> None:
    batch, core = client.BatchV1Api(k8s), client.CoreV1Api(k8s)
    command = ["python", "-c", "import os; print('shard', os.environ['JOB_COMPLETION_INDEX'])"]
    job = job_manifest("two", command, completions=2, parallelism=2, completionMode="Indexed", backoffLimit=0)
    batch.create_namespaced_job(namespace, job)
    cluster.wait(lambda: job_condition(batch, namespace, "two", "Complete"), 90, "Job two to complete")
    assert batch.read_namespaced_job("two", namespace).status.succeeded == 2
    pods = pods_of(core, namespace, "two")
    assert {p.status.phase for p in pods} == {"Succeeded"}
    assert {p.spec.node_name for p in pods} == {"hpscan-cpu-0"}  # untolerated pods stay off the GPU node
    outputs = {cluster.pod_log(namespace, p.metadata.name, "main").strip() for p in pods}
    assert outputs == {"shard 0", "shard 1"}
    # the same through the API server, which asks the node agent's log endpoint
    assert cluster.kubectl("logs", "-n", namespace, pods[0].metadata.name).stdout.strip() in outputs


def test_failing_pod_is_retried_per_backoff_limit(cluster: LocalCluster, k8s: client.ApiClient, namespace: str) -> None:
    batch, core = client.BatchV1Api(k8s), client.CoreV1Api(k8s)
    command = ["sh", "-c", "echo 'shard failed' > /dev/termination-log; exit 1"]
    batch.create_namespaced_job(namespace, job_manifest("fails", command, backoffLimit=1))
    cluster.wait(lambda: job_condition(batch, namespace, "fails", "Failed"), 120, "Job fails to fail")
    job = batch.read_namespaced_job("fails", namespace)
    assert job.status.failed == 2  # the first try and one retry
    assert next(c for c in job.status.conditions if c.type == "Failed").reason == "BackoffLimitExceeded"
    pods = pods_of(core, namespace, "fails")
    assert pods and all(p.status.phase == "Failed" for p in pods)
    terminated = pods[0].status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason, terminated.message) == (1, "Error", "shard failed\n")


def test_on_failure_restarts_the_container_in_place(
    cluster: LocalCluster, k8s: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(k8s)
    script = "test -e /scratch/tried && exit 0; touch /scratch/tried; exit 3"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "flaky"},
        "spec": {
            "restartPolicy": "OnFailure",
            "volumes": [{"name": "scratch", "emptyDir": {}}],
            "containers": [
                {
                    "name": "main",
                    "image": "none",
                    "command": ["sh", "-c", script],
                    "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
                }
            ],
        },
    }
    core.create_namespaced_pod(namespace, pod)
    done = cluster.wait(
        lambda: (p := core.read_namespaced_pod("flaky", namespace)).status.phase == "Succeeded" and p,
        60,
        "pod flaky to succeed",
    )
    status = done.status.container_statuses[0]
    assert status.restart_count == 1
    assert status.last_state.terminated.exit_code == 3
    assert not os.path.exists("/scratch/tried")  # the emptyDir was mounted privately, not on the host


def test_deleting_a_jobs_owner_cascades(cluster: LocalCluster, k8s: client.ApiClient, namespace: str) -> None:
    batch, core = client.BatchV1Api(k8s), client.CoreV1Api(k8s)
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}, "data": {}})
    job = job_manifest("owned", ["sleep", "600"])
    job["metadata"]["ownerReferences"] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    ]
    batch.create_namespaced_job(namespace, job)
    running = cluster.wait(
        lambda: [p for p in pods_of(core, namespace, "owned") if p.status.phase == "Running"],
        60,
        "the owned Job's pod to run",
    )
    pid = int(running[0].status.container_statuses[0].container_id.rsplit("/", 1)[1])
    core.delete_namespaced_config_map("owner", namespace, propagation_policy="Background")

    def job_gone() -> bool:
        try:
            batch.read_namespaced_job("owned", namespace)
        except ApiException as error:
            return error.status == 404
        return False

    cluster.wait(job_gone, 60, "the garbage collector to delete the Job")
    cluster.wait(lambda: not pods_of(core, namespace, "owned"), 60, "the Job's pods to be deleted")
    cluster.wait(lambda: not os.path.exists(f"/proc/{pid}"), 10, f"process {pid} to be stopped")


def test_graceful_deletion_stops_the_process(cluster: LocalCluster, k8s: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(k8s)
    trap = "trap 'echo got TERM; exit 0' TERM; while true; do sleep 0.1; done"
    pod = {
        "metadata": {"name": "sleeper"},
        "spec": {
            "terminationGracePeriodSeconds": 20,
            "containers": [{"name": "main", "image": "none", "command": ["sh", "-c", trap]}],
        },
    }
    core.create_namespaced_pod(namespace, pod)
    running = cluster.wait(
        lambda: (p := core.read_namespaced_pod("sleeper", namespace)).status.phase == "Running" and p,
        60,
        "pod sleeper to run",
    )
    pid = int(running.status.container_statuses[0].container_id.rsplit("/", 1)[1])
    core.delete_namespaced_pod("sleeper", namespace)

    def gone() -> bool:
        try:
            core.read_namespaced_pod("sleeper", namespace)
        except ApiException as error:
            return error.status == 404
        return False

    cluster.wait(gone, 30, "pod sleeper to be removed")
    assert not os.path.exists(f"/proc/{pid}")
    assert "got TERM" in cluster.pod_log(namespace, "sleeper", "main")


def service_account_client(cluster: LocalCluster, k8s: client.ApiClient, namespace: str, name: str) -> Any:
    core = client.CoreV1Api(k8s)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
    token = core.create_namespaced_service_account_token(name, namespace, {"spec": {"expirationSeconds": 600}})
    configuration = client.Configuration()
    configuration.host = k8s.configuration.host
    configuration.ssl_ca_cert = k8s.configuration.ssl_ca_cert
    configuration.api_key = {"authorization": f"Bearer {token.status.token}"}
    return client.ApiClient(configuration)


def test_rbac_refuses_a_service_account_without_rights(
    cluster: LocalCluster, k8s: client.ApiClient, namespace: str
) -> None:
    with service_account_client(cluster, k8s, namespace, "nobody") as nobody:
        with pytest.raises(ApiException) as refused:
            client.CoreV1Api(nobody).list_namespaced_pod(namespace)
        assert refused.value.status == 403
        rbac = client.RbacAuthorizationV1Api(k8s)
        rule = {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}
        rbac.create_namespaced_role(namespace, {"metadata": {"name": "list-pods"}, "rules": [rule]})
        binding = {
            "metadata": {"name": "list-pods"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "list-pods"},
            "subjects": [{"kind": "ServiceAccount", "name": "nobody", "namespace": namespace}],
        }
        rbac.create_namespaced_role_binding(namespace, binding)

        def allowed() -> bool:  # the authorizer sees the binding through an informer: allow it a moment
            try:
                client.CoreV1Api(nobody).list_namespaced_pod(namespace)
            except ApiException as error:
                if error.status != 403:
                    raise
                return False
            return True

        cluster.wait(allowed, 10, "the RoleBinding to grant access")


IN_POD = textwrap.dedent(
    """
    import json, os, pathlib
    from kubernetes import client, config
    config.load_incluster_config()
    namespace = pathlib.Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read_text()
    settings = client.CoreV1Api().read_namespaced_config_map("settings", namespace).data
    pathlib.Path("/scratch/out").write_text("x")
    report = {
        "namespace": namespace,
        "settings": settings,
        "file": pathlib.Path("/etc/hpscan/settings/shard.json").read_text(),
        "secret": pathlib.Path("/etc/hpscan/token/token").read_text(),
        "pod": os.environ["POD_NAME"],
        "greeting": os.environ["GREETING"],
        "scratch": os.listdir("/scratch"),
    }
    pathlib.Path("/dev/termination-log").write_text(json.dumps(report))
    """
)


def test_pod_gets_its_token_env_and_volumes(cluster: LocalCluster, k8s: client.ApiClient, namespace: str) -> None:
    core, rbac = client.CoreV1Api(k8s), client.RbacAuthorizationV1Api(k8s)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "settings"}, "data": {"shard.json": "{}"}})
    core.create_namespaced_secret(namespace, {"metadata": {"name": "token"}, "stringData": {"token": "s3cret"}})
    rule = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "read"}, "rules": [rule]})
    binding = {
        "metadata": {"name": "read"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": namespace}],
    }
    rbac.create_namespaced_role_binding(namespace, binding)
    pod = {
        "metadata": {"name": "incluster"},
        "spec": {
            "restartPolicy": "Never",
            "volumes": [
                {"name": "settings", "configMap": {"name": "settings"}},
                {"name": "token", "secret": {"secretName": "token"}},
                {"name": "scratch", "emptyDir": {}},
            ],
            "containers": [
                {
                    "name": "main",
                    "image": "none",
                    "command": ["python", "-c", IN_POD],
                    "env": [
                        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "GREETING", "value": "hello $(POD_NAME)"},
                    ],
                    "volumeMounts": [
                        {"name": "settings", "mountPath": "/etc/hpscan/settings", "readOnly": True},
                        {"name": "token", "mountPath": "/etc/hpscan/token", "readOnly": True},
                        {"name": "scratch", "mountPath": "/scratch"},
                    ],
                }
            ],
        },
    }
    core.create_namespaced_pod(namespace, pod)
    done = cluster.wait(
        lambda: (p := core.read_namespaced_pod("incluster", namespace)).status.phase in ("Succeeded", "Failed") and p,
        60,
        "pod incluster to finish",
    )
    terminated = done.status.container_statuses[0].state.terminated
    assert done.status.phase == "Succeeded", cluster.pod_log(namespace, "incluster", "main")
    report = json.loads(terminated.message)
    assert report == {
        "namespace": namespace,
        "settings": {"shard.json": "{}"},
        "file": "{}",
        "secret": "s3cret",
        "pod": "incluster",
        "greeting": "hello incluster",
        "scratch": ["out"],
    }


RESTRICTED = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def gpu_pod(name: str, gpus: int) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": {"nvidia.com/gpu.present": "true"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [
                {
                    "name": "main",
                    "image": "none",
                    "command": ["true"],
                    "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
                    "securityContext": RESTRICTED,  # admitted, then ignored by the agent
                }
            ],
        },
    }


def test_gpu_pods_land_on_the_gpu_node_within_its_capacity(
    cluster: LocalCluster, k8s: client.ApiClient, new_namespace: Any
) -> None:
    core = client.CoreV1Api(k8s)
    namespace = new_namespace({"pod-security.kubernetes.io/enforce": "restricted"})
    core.create_namespaced_pod(namespace, gpu_pod("one-gpu", 1))
    core.create_namespaced_pod(namespace, gpu_pod("five-gpus", 5))  # the node advertises 4
    done = cluster.wait(
        lambda: (p := core.read_namespaced_pod("one-gpu", namespace)).status.phase == "Succeeded" and p,
        60,
        "pod one-gpu to succeed",
    )
    assert done.spec.node_name == "hpscan-gpu-0"

    def unschedulable() -> bool:
        pod = core.read_namespaced_pod("five-gpus", namespace)
        return any(c.type == "PodScheduled" and c.reason == "Unschedulable" for c in pod.status.conditions or [])

    cluster.wait(unschedulable, 30, "pod five-gpus to be reported unschedulable")
    privileged = gpu_pod("privileged", 1)
    privileged["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    with pytest.raises(ApiException) as refused:  # Pod Security admission enforces the namespace label
        core.create_namespaced_pod(namespace, privileged)
    assert refused.value.status == 403


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def processes_naming(text: str) -> list[int]:
    """Pids whose command line or environment contains text (how down.sh recognises its processes)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and proc.name != str(os.getpid()):
            with contextlib.suppress(OSError):
                if text.encode() in (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes():
                    found.append(int(proc.name))
    return found


def test_up_is_idempotent_and_down_leaves_no_process(cluster: LocalCluster, tmp_path: Path) -> None:
    """A second, throw-away cluster (own directory and ports), so the shared one is not disturbed."""
    state = tmp_path / "cluster"
    env = {
        **os.environ,
        "HPSCAN_CLUSTER_DIR": str(state),
        "HPSCAN_ETCD_PORT": str(free_port()),
        "HPSCAN_ETCD_PEER_PORT": str(free_port()),
        "HPSCAN_API_PORT": str(free_port()),
        "HPSCAN_REAL_NODE": "0",  # one real node per machine (its bridge, its ports): the shared cluster's
    }
    up, down = str(REPO / "cluster" / "up.sh"), str(REPO / "cluster" / "down.sh")
    try:
        first = subprocess.run([up], env=env, capture_output=True, text=True, check=True)
        assert first.stderr.count("starting") == 5
        other = LocalCluster(kubeconfig=state / "kubeconfig", tools_bin=cluster.tools_bin, state_dir=state / "pods")
        other.kubectl("run", "sleeper", "--image=none", "--restart=Never", "--command", "--", "sleep", "600")
        other.wait(lambda: "Running" in other.kubectl("get", "pod", "sleeper").stdout, 30, "pod sleeper to run")
        again = subprocess.run([up], env=env, capture_output=True, text=True, check=True)
        assert "starting" not in again.stderr and "ready" in again.stderr
    finally:
        subprocess.run([down], env=env, capture_output=True, text=True, check=True)
    assert processes_naming(str(state)) == []


def test_an_empty_dir_over_an_ancestor_of_the_repository_hides_nothing_the_pod_needs(
    cluster: LocalCluster, k8s: client.ApiClient, namespace: str
) -> None:
    """CI may clone the repository under /tmp, and a chart mounts an emptyDir at /tmp: the venv, the pod's own
    folder and its other volumes must stay reachable (the agent binds them back over the new mount)."""
    core = client.CoreV1Api(k8s)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "cfg"}, "data": {"key": "value"}})
    ancestor = str(Path(__file__).resolve().parents[4])  # the folder that holds the repository
    script = "import pathlib, sys; print(pathlib.Path('/etc/cfg/key').read_text(), sys.prefix, end='')"
    pod = {
        "metadata": {"name": "shadowed"},
        "spec": {
            "restartPolicy": "Never",
            "volumes": [{"name": "scratch", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "cfg"}}],
            "containers": [
                {
                    "name": "main",
                    "image": "none",
                    "command": ["python", "-c", script],
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                    "volumeMounts": [
                        {"name": "scratch", "mountPath": ancestor},
                        {"name": "cfg", "mountPath": "/etc/cfg", "readOnly": True},
                    ],
                }
            ],
        },
    }
    core.create_namespaced_pod(namespace, pod)
    done = cluster.wait(
        lambda: (p := core.read_namespaced_pod("shadowed", namespace)).status.phase in ("Succeeded", "Failed") and p,
        60,
        "pod shadowed to finish",
    )
    log = cluster.pod_log(namespace, "shadowed", "main")
    assert done.status.phase == "Succeeded", log
    assert log.startswith("value") and ".venv" in log
