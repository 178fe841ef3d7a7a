"""The test node agent: a stand-in for a kubelet with a container runtime, which cannot run on this machine.

It registers Nodes (labels, taints and a capacity that advertises ``nvidia.com/gpu``), keeps them Ready with a
Lease and status heartbeat, and runs each container of the pods bound to them as a local process:

- the image is ignored (there is no runtime); ``command`` + ``args`` run with the repository's ``.venv/bin``
  first on PATH, so pods can run ``hpscan`` and ``dl1``;
- the environment is the pod's (``env``, ``envFrom``, ``$(VAR)`` expansion) plus ``KUBERNETES_SERVICE_HOST``/
  ``PORT`` pointing at the local API server on 127.0.0.1;
- ConfigMap, Secret, emptyDir, downwardAPI, hostPath and projected (service-account token, ConfigMap, Secret,
  downwardAPI) volumes are written to a per-pod directory and bind-mounted at their ``mountPath`` inside a
  private mount namespace per container (``unshare --mount``), so ``load_incluster_config()`` works unchanged;
- status is reported like a kubelet: Pending -> Running -> Succeeded/Failed, container states with exit code
  and termination message, restarts per ``restartPolicy`` with a crash-loop back-off; deleting a pod
  stops its processes (SIGTERM, SIGKILL after the grace period) and then removes the pod object.

Not supported (a real kubelet does these): images and image pull, probes, resource limits and cgroups,
securityContext (processes run as the agent's user), per-pod networking (pods share the host's network; podIP
is 127.0.0.1, or the address in the pod's ``POD_IP_ANNOTATION``), ``kubectl logs``/``exec`` (logs are files in the pod's state directory), sidecar init
containers, CSI/PVC volumes. Run with ``python -m cluster.nodeagent --help``; ``cluster/up.sh`` starts it.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import json
import logging
import os
import re
import shlex
import signal
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import yaml
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

REPO = Path(__file__).resolve().parent.parent
KEEP_FDS = (9, 8)  # descriptors the launch script holds on paths a pod's mounts must not hide
AGENT_LABEL = "hpscan.io/test-node-agent"
STRATEGIC = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
MAX_TERMINATION_MESSAGE = 4096
HEARTBEAT_SECONDS = 10.0

log = logging.getLogger("nodeagent")


def now() -> str:
    """The current time in the API's RFC 3339 format."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_now() -> str:
    """The current time as a metav1.MicroTime."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class MountError(Exception):
    """A volume cannot be materialised yet (a missing ConfigMap or Secret); the kubelet retries these."""


class UnsupportedPod(Exception):
    """The pod asks for something this stand-in cannot do; the pod fails with this message."""


# --- pure helpers: environment and volume contents -----------------------------------------------------

_EXPANSION = re.compile(r"\$(\$|\(([A-Za-z_][A-Za-z0-9_.-]*)\))")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: defined variables are replaced, ``$$`` escapes, others stay as is."""

    def replace(match: re.Match[str]) -> str:
        if match.group(1) == "$":
            return "$"
        return env.get(match.group(2), match.group(0))

    return _EXPANSION.sub(replace, text)


POD_IP_ANNOTATION = "node-agent.hpscan.io/pod-ip"
"""A pod annotated with one of the host's own addresses reports it as its podIP: the API server proxies to no
loopback address (and Endpoints hold none), so a test that reaches a pod through a Service's proxy, as a real
kubelet's pod IP allows, names the host's address here (the pod still shares the host's network)."""


def pod_ip(pod: dict[str, Any]) -> str:
    return (pod["metadata"].get("annotations") or {}).get(POD_IP_ANNOTATION) or "127.0.0.1"


def field_value(pod: dict[str, Any], path: str) -> str:
    """The value of a downward-API ``fieldRef.fieldPath`` for this pod."""
    meta = pod["metadata"]
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": pod["spec"].get("nodeName", ""),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
        "status.podIP": pod_ip(pod),
        "status.hostIP": "127.0.0.1",
        "status.podIPs": pod_ip(pod),
        "status.hostIPs": "127.0.0.1",
    }
    if path in simple:
        return str(simple[path])
    for kind in ("labels", "annotations"):
        mapping = meta.get(kind) or {}
        if path == f"metadata.{kind}":
            return "".join(f'{key}="{value}"\n' for key, value in sorted(mapping.items()))
        match = re.fullmatch(rf"metadata\.{kind}\['(.+)'\]", path)
        if match:
            return str(mapping.get(match.group(1), ""))
    raise UnsupportedPod(f"fieldRef {path!r} is not supported by the test node agent")


def resource_value(pod: dict[str, Any], container_name: str | None, ref: dict[str, Any]) -> str:
    """The value of a ``resourceFieldRef`` (limits/requests of a container, as written in the spec)."""
    containers = pod["spec"].get("containers", [])
    container = next((c for c in containers if c["name"] == container_name), containers[0])
    kind, _, resource = ref["resource"].partition(".")
    return str((container.get("resources") or {}).get(kind, {}).get(resource, "0"))


def files_from_items(
    data: dict[str, bytes], items: list[dict[str, Any]] | None, default_mode: int
) -> dict[str, tuple[bytes, int]]:
    """ConfigMap/Secret keys -> {relative path: (content, mode)}, honouring ``items`` like the kubelet."""
    if not items:
        return {key: (value, default_mode) for key, value in data.items()}
    files = {}
    for item in items:
        if item["key"] not in data:
            raise MountError(f"key {item['key']!r} not found")
        files[item["path"]] = (data[item["key"]], item.get("mode", default_mode))
    return files


def write_files(root: Path, files: dict[str, tuple[bytes, int]]) -> None:
    """Write files below root atomically (rename), so a refreshed token never appears half-written."""
    for relative, (content, mode) in files.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.tmp")
        temporary.write_bytes(content)
        temporary.chmod(mode)
        temporary.replace(target)


def exit_code(returncode: int) -> int:
    """Popen's returncode -> a container exit code (a signal N reads as 128+N, as in a shell)."""
    return 128 - returncode if returncode < 0 else returncode


def mount_namespace_command() -> list[str]:
    """The command prefix that gives a process a private mount namespace here (root, or a user namespace)."""
    for prefix in (
        ["unshare", "--mount", "--propagation", "private"],
        ["unshare", "--user", "--map-root-user", "--mount", "--propagation", "private"],
    ):
        probe = subprocess.run([*prefix, "true"], capture_output=True, check=False)
        if probe.returncode == 0:
            return prefix
    raise SystemExit(
        "the test node agent needs `unshare --mount` (root) or unprivileged user namespaces to mount pod volumes"
    )


# --- the cluster side -------------------------------------------------------------------------------------


@dataclass
class NodeSpec:
    """One Node the agent registers, from the nodes file."""

    name: str
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)
    capacity: dict[str, str] = field(default_factory=dict)


def load_nodes(path: Path) -> list[NodeSpec]:
    """Read the nodes file (see cluster/nodes.yaml)."""
    document = yaml.safe_load(path.read_text())
    return [
        NodeSpec(
            name=node["name"],
            labels={k: str(v) for k, v in (node.get("labels") or {}).items()},
            taints=list(node.get("taints") or []),
            capacity={k: str(v) for k, v in (node.get("capacity") or {}).items()},
        )
        for node in document["nodes"]
    ]


class Agent:
    """Registers the nodes, heartbeats them, and keeps one PodWorker per pod bound to them."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.api_client = config.new_client_from_config(config_file=str(args.kubeconfig))
        # Any: the agent sends and reads raw dicts (camelCase, as in manifests), not the client's models.
        self.core: Any = client.CoreV1Api(self.api_client)
        self.leases: Any = client.CoordinationV1Api(self.api_client)
        self.nodes = {node.name: node for node in load_nodes(args.nodes)}
        self.state_dir: Path = args.state_dir
        self.unshare = mount_namespace_command()
        self.logs = LogServer(self.state_dir, args.tls_cert_file, args.tls_key_file)
        self.workers: dict[str, PodWorker] = {}
        self.finished: set[str] = set()  # uids never to start again (a stale event must not rerun a pod)
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    # nodes -----------------------------------------------------------------------------------------
    def register_nodes(self) -> None:
        for node in self.nodes.values():
            labels = {
                "kubernetes.io/hostname": node.name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                AGENT_LABEL: "true",
                **node.labels,
            }
            body = {"metadata": {"name": node.name, "labels": labels}, "spec": {"taints": node.taints}}
            try:
                self.core.create_node({"apiVersion": "v1", "kind": "Node", **body})
                log.info("registered node %s", node.name)
            except ApiException as error:
                if error.status != 409:
                    raise
                self.core.patch_node(node.name, body, _content_type=MERGE)
            self.heartbeat(node)

    def heartbeat(self, node: NodeSpec) -> None:
        """Renew the node's Lease and refresh its Ready condition, as the kubelet does."""
        stamp = now()
        conditions = [
            {"type": kind, "status": "False", "reason": f"KubeletHas{reason}", "message": "test node agent"}
            for kind, reason in (
                ("MemoryPressure", "SufficientMemory"),
                ("DiskPressure", "NoDiskPressure"),
                ("PIDPressure", "SufficientPID"),
            )
        ]
        conditions.append(
            {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "hpscan test node agent"}
        )
        for condition in conditions:
            condition.update(lastHeartbeatTime=stamp, lastTransitionTime=stamp)
        status = {
            "capacity": node.capacity,
            "allocatable": node.capacity,
            "conditions": conditions,
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": node.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.logs.port}},
            "nodeInfo": {
                "machineID": node.name,
                "systemUUID": node.name,
                "bootID": node.name,
                "kernelVersion": os.uname().release,
                "osImage": "hpscan test node agent (no container runtime)",
                "containerRuntimeVersion": "hpscan-node-agent://0",
                "kubeletVersion": self.args.kubelet_version,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }
        current = self.core.read_node(node.name)
        known = {c.type: c for c in (current.status.conditions or [])} if current.status else {}
        for condition in conditions:  # keep transition times stable while the status stays the same
            old = known.get(condition["type"])
            if old is not None and old.status == condition["status"] and old.last_transition_time:
                condition["lastTransitionTime"] = old.last_transition_time.strftime("%Y-%m-%dT%H:%M:%SZ")
        self.core.patch_node_status(node.name, {"status": status}, _content_type=STRATEGIC)
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": node.name,
                "namespace": "kube-node-lease",
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Node", "name": node.name, "uid": current.metadata.uid}
                ],
            },
            "spec": {"holderIdentity": node.name, "leaseDurationSeconds": 40, "renewTime": micro_now()},
        }
        try:
            self.leases.patch_namespaced_lease(node.name, "kube-node-lease", lease, _content_type=MERGE)
        except ApiException as error:
            if error.status != 404:
                raise
            self.leases.create_namespaced_lease("kube-node-lease", lease)

    def heartbeat_loop(self) -> None:
        while not self.stopping.wait(HEARTBEAT_SECONDS):
            for node in self.nodes.values():
                try:
                    self.heartbeat(node)
                except Exception:
                    log.exception("heartbeat of node %s failed", node.name)

    # pods ------------------------------------------------------------------------------------------
    def watch_pods(self) -> None:
        """List, then watch, all pods; each event goes to sync(). Relists after any watch failure."""
        while not self.stopping.is_set():
            try:
                response = self.core.list_pod_for_all_namespaces(_preload_content=False)
                listing = json.loads(response.data)
                present = set()
                for pod in listing["items"]:
                    present.add(pod["metadata"]["uid"])
                    self.sync(pod)
                with self.lock:
                    gone = [worker for uid, worker in self.workers.items() if uid not in present]
                for worker in gone:
                    worker.request_delete(grace=0, object_gone=True)
                if self.args.ready_file:  # up.sh waits for this: nodes registered, pods listed
                    self.args.ready_file.write_text(str(os.getpid()))
                stream = watch.Watch().stream(
                    self.core.list_pod_for_all_namespaces,
                    resource_version=listing["metadata"]["resourceVersion"],
                    timeout_seconds=60,
                )
                for event in stream:
                    if self.stopping.is_set():
                        return
                    pod = event["raw_object"]
                    if event["type"] == "ERROR":
                        break
                    if event["type"] == "DELETED":
                        self.forget(pod)
                    else:
                        self.sync(pod)
            except Exception:
                if self.stopping.is_set():
                    return
                log.exception("pod watch failed; relisting")
                time.sleep(1)

    def sync(self, pod: dict[str, Any]) -> None:
        """Bring one pod bound to our nodes towards what its object says."""
        if pod["spec"].get("nodeName") not in self.nodes:
            return
        uid = pod["metadata"]["uid"]
        with self.lock:
            worker = self.workers.get(uid)
            if pod["metadata"].get("deletionTimestamp"):
                if worker is None:
                    threading.Thread(target=self.final_delete, args=(pod,), daemon=True).start()
                else:
                    worker.request_delete(grace=pod["metadata"].get("deletionGracePeriodSeconds") or 0)
                return
            phase = (pod.get("status") or {}).get("phase")
            if worker is not None or uid in self.finished or phase in ("Succeeded", "Failed"):
                return
            worker = PodWorker(self, pod)
            self.workers[uid] = worker
        worker.start()

    def forget(self, pod: dict[str, Any]) -> None:
        with self.lock:
            worker = self.workers.get(pod["metadata"]["uid"])
        if worker is not None:
            worker.request_delete(grace=0, object_gone=True)

    def worker_done(self, worker: PodWorker) -> None:
        with self.lock:
            self.workers.pop(worker.uid, None)
            self.finished.add(worker.uid)

    def final_delete(self, pod: dict[str, Any]) -> None:
        """Remove a pod object once nothing runs for it (the kubelet's grace-period-0 delete)."""
        meta = pod["metadata"]
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}}
        try:
            self.core.delete_namespaced_pod(meta["name"], meta["namespace"], body=body)
        except ApiException as error:
            if error.status not in (404, 409):
                log.warning("final delete of %s/%s failed: %s", meta["namespace"], meta["name"], error.reason)

    def stop(self) -> None:
        """Stop every pod process (the pod objects stay as they are) and the loops."""
        self.stopping.set()
        with self.lock:
            workers = list(self.workers.values())
        for worker in workers:
            worker.request_delete(grace=2, object_gone=True, agent_stopping=True)
        for worker in workers:
            worker.join(timeout=5)

    def stop_orphans(self) -> None:
        """Kill pod processes an earlier agent left running (it was killed): they would run twice."""
        for pid_file in self.state_dir.glob("*/*.pid"):
            with contextlib.suppress(OSError, ValueError):
                pid = int(pid_file.read_text())
                marker = f"HPSCAN_NODE_AGENT_POD={pid_file.parent}".encode()
                if marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                    log.info("stopping orphaned pod process %d (%s)", pid, pid_file)
                    os.killpg(pid, signal.SIGKILL)
            pid_file.unlink(missing_ok=True)

    def run(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.stop_orphans()
        self.register_nodes()
        threading.Thread(target=self.heartbeat_loop, name="heartbeat", daemon=True).start()
        threading.Thread(target=self.logs.server.serve_forever, name="logs", daemon=True).start()
        log.info("test node agent running nodes %s (mounts via %s)", ", ".join(self.nodes), " ".join(self.unshare))
        self.watch_pods()


class LogServer:
    """The one kubelet endpoint the agent serves: ``GET /containerLogs/<ns>/<pod>/<container>``, which the API
    server calls for ``kubectl logs`` (``tailLines``, ``limitBytes`` and ``follow`` honoured). Listens on an
    ephemeral port on 127.0.0.1, advertised in the Node's ``daemonEndpoints``; TLS when given a certificate."""

    def __init__(self, state_dir: Path, cert: Path | None, key: Path | None) -> None:
        self.state_dir = state_dir
        logs = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                logs.serve(self)

            def log_message(self, format: str, *args: Any) -> None:  # requests are not worth a log line
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if cert and key:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = int(self.server.server_address[1])

    def serve(self, request: BaseHTTPRequestHandler) -> None:
        url = urlparse(request.path)
        parts = url.path.strip("/").split("/")
        if len(parts) != 4 or parts[0] != "containerLogs":
            request.send_error(404, "the test node agent serves only /containerLogs (no exec, attach, port-forward)")
            return
        _, namespace, pod, container = parts
        candidates = list(self.state_dir.glob(f"{namespace}_{pod}_*/{container}.log"))
        if not candidates:
            request.send_error(404, f"no log for container {container} of pod {namespace}/{pod}")
            return
        log_file = max(candidates, key=lambda path: path.stat().st_mtime)  # the newest pod of that name
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        content = log_file.read_bytes()
        if "tailLines" in query:
            lines = content.splitlines(keepends=True)
            content = b"".join(lines[-int(query["tailLines"]) :]) if int(query["tailLines"]) else b""
        if "limitBytes" in query:
            content = content[: int(query["limitBytes"])]
        request.send_response(200)
        request.send_header("Content-Type", "text/plain")
        request.end_headers()
        with contextlib.suppress(OSError):
            request.wfile.write(content)
            request.wfile.flush()
            if query.get("follow") == "true":
                self.follow(request, log_file, log_file.stat().st_size)

    @staticmethod
    def follow(request: BaseHTTPRequestHandler, log_file: Path, offset: int) -> None:
        """Stream what the container writes until it has exited (its pid file is gone) and nothing is left."""
        pid_file = log_file.with_suffix(".pid")
        with open(log_file, "rb") as source:
            source.seek(offset)
            while True:
                chunk = source.read(65536)
                if chunk:
                    request.wfile.write(chunk)
                    request.wfile.flush()
                elif not pid_file.exists():
                    return
                else:
                    time.sleep(0.2)


# --- one pod -----------------------------------------------------------------------------------------------


@dataclass
class Container:
    """What the agent knows about one container of a pod: its spec, process and kubelet-style state."""

    spec: dict[str, Any]
    init: bool
    process: subprocess.Popen[bytes] | None = None
    restart_count: int = 0
    state: dict[str, Any] = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: dict[str, Any] = field(default_factory=dict)
    started_at: str = ""
    restart_at: float = 0.0
    done: bool = False
    ever_started: bool = False

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def status(self) -> dict[str, Any]:
        running = "running" in self.state
        return {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": "",
            "containerID": f"hpscan-node-agent://{self.process.pid}" if self.process else "",
            "ready": running and not self.init,
            "started": running,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }


class PodWorker(threading.Thread):
    """Runs one pod: materialises its volumes, runs init then main containers, reports status, stops it."""

    def __init__(self, agent: Agent, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.agent = agent
        self.pod = pod
        self.uid: str = meta["uid"]
        self.namespace: str = meta["namespace"]
        self.pod_name: str = meta["name"]
        self.restart_policy: str = pod["spec"].get("restartPolicy", "Always")
        self.dir = agent.state_dir / f"{self.namespace}_{self.pod_name}_{self.uid[:8]}"
        self.init_containers = [Container(c, init=True) for c in pod["spec"].get("initContainers") or []]
        self.containers = [Container(c, init=False) for c in pod["spec"]["containers"]]
        self.volume_dirs: dict[str, Path] = {}
        self.refresh_at = float("inf")  # when projected tokens are due for renewal (80% of their lifetime)
        self.start_time = now()
        self.initialized = False
        self.volumes_ready = False
        self.phase = "Pending"
        self.reason = ""
        self.message = ""
        self.conditions: dict[str, tuple[str, str]] = {}
        self.deleted = threading.Event()
        self.grace = 30.0
        self.object_gone = False
        self.agent_stopping = False

    def request_delete(self, grace: float, object_gone: bool = False, agent_stopping: bool = False) -> None:
        """Called from the watch thread: stop the pod (SIGTERM, SIGKILL after grace seconds)."""
        self.grace = min(self.grace, float(grace)) if self.deleted.is_set() else float(grace)
        self.object_gone = self.object_gone or object_gone
        self.agent_stopping = self.agent_stopping or agent_stopping
        self.deleted.set()

    def run(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.execute()
        except UnsupportedPod as error:
            self.finish("Failed", "UnsupportedByTestNodeAgent", str(error))
        except Exception as error:
            log.exception("pod %s/%s failed in the agent", self.namespace, self.pod_name)
            self.finish("Failed", "TestNodeAgentError", str(error))
        finally:
            self.agent.worker_done(self)

    def execute(self) -> None:
        if self.pod.get("status", {}).get("phase") == "Running" and self.restart_policy == "Never":
            # Started by an earlier agent whose processes are gone: like a node reboot.
            return self.finish("Failed", "TestNodeAgentRestarted", "the test node agent restarted while this pod ran")
        self.report()
        while not self.prepare_volumes():
            if self.deleted.wait(2.0):
                return self.stop_and_finish()
        self.volumes_ready = True
        for container in self.init_containers:
            self.run_until_done([container])
            if self.deleted.is_set():
                return self.stop_and_finish()
            if exit_code_of(container) != 0:
                return self.finish("Failed", "", f"init container {container.name} failed")
        self.initialized = True
        self.run_until_done(self.containers)
        if self.deleted.is_set():
            return self.stop_and_finish()
        failed = any(exit_code_of(c) != 0 for c in self.containers)
        self.finish("Failed" if failed else "Succeeded")

    # volumes ---------------------------------------------------------------------------------------
    def prepare_volumes(self) -> bool:
        """Write every volume's files below the pod directory; False (and a waiting reason) to retry."""
        try:
            for volume in self.pod["spec"].get("volumes") or []:
                self.volume_dirs[volume["name"]] = self.materialise(volume)
        except MountError as error:
            for container in self.init_containers + self.containers:
                container.state = {"waiting": {"reason": "ContainerCreating", "message": f"MountVolume: {error}"}}
            self.report()
            return False
        return True

    def refresh_tokens(self) -> None:
        """Rewrite the volumes at 80% of the shortest token lifetime, as the kubelet renews projected tokens."""
        self.refresh_at = float("inf")
        try:
            for volume in self.pod["spec"].get("volumes") or []:
                if "projected" in volume:
                    self.materialise(volume)
        except MountError as error:
            log.warning("%s/%s: volumes not refreshed: %s", self.namespace, self.pod_name, error)
            self.refresh_at = time.monotonic() + 10

    def materialise(self, volume: dict[str, Any]) -> Path:
        name = volume["name"]
        if "hostPath" in volume:  # this is the host, so hostPath is the path itself
            path = Path(volume["hostPath"]["path"])
            if volume["hostPath"].get("type") in ("DirectoryOrCreate", "", None):
                path.mkdir(parents=True, exist_ok=True)
            return path
        root = self.dir / "volumes" / name
        root.mkdir(parents=True, exist_ok=True)
        if "emptyDir" in volume:
            return root
        files: dict[str, tuple[bytes, int]] = {}
        if "configMap" in volume:
            files = self.config_map_files(volume["configMap"], volume["configMap"].get("defaultMode", 0o644))
        elif "secret" in volume:
            files = self.secret_files(volume["secret"], volume["secret"].get("defaultMode", 0o644))
        elif "downwardAPI" in volume:
            files = self.downward_files(volume["downwardAPI"], volume["downwardAPI"].get("defaultMode", 0o644))
        elif "projected" in volume:
            mode = volume["projected"].get("defaultMode", 0o644)
            for source in volume["projected"].get("sources") or []:
                files.update(self.projected_files(source, mode))
        else:
            kinds = ", ".join(sorted(set(volume) - {"name"}))
            raise UnsupportedPod(f"volume {name!r} ({kinds}) is not supported by the test node agent")
        write_files(root, files)
        return root

    def config_map_files(self, source: dict[str, Any], mode: int) -> dict[str, tuple[bytes, int]]:
        try:
            config_map = self.agent.core.read_namespaced_config_map(source["name"], self.namespace)
        except ApiException as error:
            if error.status == 404 and source.get("optional"):
                return {}
            raise MountError(f'configmap "{source["name"]}" not found') from error
        data = {k: v.encode() for k, v in (config_map.data or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (config_map.binary_data or {}).items()})
        return files_from_items(data, source.get("items"), mode)

    def secret_files(self, source: dict[str, Any], mode: int) -> dict[str, tuple[bytes, int]]:
        name = source.get("secretName") or source.get("name", "")
        try:
            response = self.agent.core.read_namespaced_secret(name, self.namespace, _preload_content=False)
        except ApiException as error:
            if error.status == 404 and source.get("optional"):
                return {}
            raise MountError(f'secret "{name}" not found') from error
        secret = json.loads(response.data)
        data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
        return files_from_items(data, source.get("items"), mode)

    def downward_files(self, source: dict[str, Any], mode: int) -> dict[str, tuple[bytes, int]]:
        files = {}
        for item in source.get("items") or []:
            if "fieldRef" in item:
                value = field_value(self.pod, item["fieldRef"]["fieldPath"])
            else:
                ref = item["resourceFieldRef"]
                value = resource_value(self.pod, ref.get("containerName"), ref)
            files[item["path"]] = (value.encode(), item.get("mode", mode))
        return files

    def projected_files(self, source: dict[str, Any], mode: int) -> dict[str, tuple[bytes, int]]:
        if "serviceAccountToken" in source:
            token = source["serviceAccountToken"]
            lifetime = int(token.get("expirationSeconds") or 3607)
            spec: dict[str, Any] = {
                "expirationSeconds": lifetime,
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": self.pod_name, "uid": self.uid},
            }
            if token.get("audience"):
                spec["audiences"] = [token["audience"]]
            account = self.pod["spec"].get("serviceAccountName") or "default"
            response = self.agent.core.create_namespaced_service_account_token(
                account, self.namespace, {"spec": spec}, _preload_content=False
            )
            self.refresh_at = min(self.refresh_at, time.monotonic() + 0.8 * lifetime)
            return {token["path"]: (json.loads(response.data)["status"]["token"].encode(), mode)}
        if "configMap" in source:
            return self.config_map_files(source["configMap"], mode)
        if "secret" in source:
            return self.secret_files(source["secret"], mode)
        if "downwardAPI" in source:
            return self.downward_files(source["downwardAPI"], mode)
        raise UnsupportedPod(f"projected source {sorted(source)} is not supported by the test node agent")

    # processes -------------------------------------------------------------------------------------
    def environment(self, container: Container) -> dict[str, str]:
        """The container's environment: a minimal base, the API server, then envFrom and env in order."""
        port = str(self.agent.args.api_port)
        venv_bin = os.environ.get("HPSCAN_POD_BIN", str(REPO / ".venv" / "bin"))
        env = {
            "PATH": f"{venv_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOSTNAME": self.pod_name,
            "HOME": str(self.dir / "home"),
            "LANG": "C.UTF-8",
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": port,
            "KUBERNETES_SERVICE_PORT_HTTPS": port,
            "KUBERNETES_PORT": f"tcp://127.0.0.1:{port}",
            # lets `cluster-down` recognise a pod process it must stop
            "HPSCAN_NODE_AGENT_POD": str(self.dir),
        }
        for source in container.spec.get("envFrom") or []:
            prefix = source.get("prefix", "")
            if "configMapRef" in source:
                ref = source["configMapRef"]
                data = {k: v.decode() for k, (v, _) in self.config_map_files(ref, 0o644).items()}
            else:
                ref = source["secretRef"]
                data = {k: v.decode() for k, (v, _) in self.secret_files(ref, 0o644).items()}
            env.update({prefix + key: value for key, value in data.items()})
        for variable in container.spec.get("env") or []:
            env[variable["name"]] = self.env_value(container, variable, env)
        return env

    def env_value(self, container: Container, variable: dict[str, Any], env: dict[str, str]) -> str:
        if "valueFrom" not in variable:
            return expand(variable.get("value", ""), env)
        source = variable["valueFrom"]
        if "fieldRef" in source:
            return field_value(self.pod, source["fieldRef"]["fieldPath"])
        if "resourceFieldRef" in source:
            return resource_value(self.pod, container.name, source["resourceFieldRef"])
        kind = "configMapKeyRef" if "configMapKeyRef" in source else "secretKeyRef"
        ref = source[kind]
        reader = self.config_map_files if kind == "configMapKeyRef" else self.secret_files
        data = reader({**ref, "items": None}, 0o644)
        if ref["key"] not in data:
            if ref.get("optional"):
                return ""
            raise MountError(f"{kind} {ref.get('name')}/{ref['key']} not found")
        return data[ref["key"]][0].decode()

    def launch_script(self, container: Container, env: dict[str, str]) -> str:
        """A shell script run inside a fresh mount namespace: bind-mount the volumes, then exec the command."""
        spec = container.spec
        command = [expand(part, env) for part in (spec.get("command") or []) + (spec.get("args") or [])]
        if not spec.get("command"):
            raise UnsupportedPod(
                f"container {container.name!r} has no command: the test node agent cannot run an image's entrypoint"
            )
        lines = ["set -e"]
        # A volume mounted over an ancestor of the repository or the pod folder (an emptyDir at /tmp while the
        # repository is a clone under /tmp, say) would hide the venv and the other volumes' sources: hold a
        # descriptor on each first and bind it back right after such a mount.
        keep = [
            p
            for p in (REPO.resolve(), self.dir.resolve())
            if not any(q in p.parents for q in (REPO.resolve(), self.dir.resolve()) if q != p)
        ]
        for fd, path in zip(KEEP_FDS, keep, strict=False):
            lines.append(f"exec {fd}< {shlex.quote(str(path))}")
        message_file = self.dir / f"{container.name}.termination-log"
        message_file.write_bytes(b"")
        mounts = [(message_file, spec.get("terminationMessagePath") or "/dev/termination-log", False)]
        for mount in spec.get("volumeMounts") or []:
            if mount["name"] not in self.volume_dirs:
                raise UnsupportedPod(f"volumeMount {mount['name']!r} names no volume")
            source = self.volume_dirs[mount["name"]] / mount.get("subPath", "")
            if mount.get("subPath") and not source.exists():
                source.mkdir(parents=True)
            mounts.append((source, mount["mountPath"], bool(mount.get("readOnly"))))
        for source, target, read_only in mounts:
            quoted_target = shlex.quote(target)
            if source.is_dir():
                lines.append(f"mkdir -p {quoted_target}")
            else:  # a file is mounted onto a file: make an empty one to mount over if none is there
                lines.append(
                    f"[ -e {quoted_target} ] || {{ mkdir -p $(dirname {quoted_target}); : > {quoted_target}; }}"
                )
            lines.append(f"mount --bind {shlex.quote(str(source))} {quoted_target}")
            if read_only:
                lines.append(f"mount -o remount,bind,ro {quoted_target}")
            for fd, path in zip(KEEP_FDS, keep, strict=False):
                if Path(target) in path.parents:
                    quoted = shlex.quote(str(path))
                    lines.append(f"mkdir -p {quoted} && mount --no-canonicalize --bind /proc/self/fd/{fd} {quoted}")
        workdir = spec.get("workingDir") or str(self.dir / "workdir")
        lines.append(f"mkdir -p {shlex.quote(workdir)} && cd {shlex.quote(workdir)}")
        lines.append("exec " + shlex.join(command))
        return "\n".join(lines) + "\n"

    def start_container(self, container: Container) -> None:
        (self.dir / "home").mkdir(exist_ok=True)
        env = self.environment(container)
        script = self.dir / f"{container.name}.sh"
        script.write_text(self.launch_script(container, env))
        with open(self.dir / f"{container.name}.log", "ab") as output:
            container.process = subprocess.Popen(
                [*self.agent.unshare, "/bin/sh", str(script)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                start_new_session=True,  # its own process group, so a stop reaches its children too
            )
        (self.dir / f"{container.name}.pid").write_text(str(container.process.pid))
        container.started_at = now()
        container.ever_started = True
        container.state = {"running": {"startedAt": container.started_at}}
        log.info("started %s/%s %s (pid %d)", self.namespace, self.pod_name, container.name, container.process.pid)

    def reap(self, container: Container) -> None:
        """Record a container's exit and decide whether it restarts (restartPolicy, crash-loop back-off)."""
        assert container.process is not None
        code = exit_code(container.process.wait())
        (self.dir / f"{container.name}.pid").unlink(missing_ok=True)
        terminated = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": container.started_at,
            "finishedAt": now(),
            "containerID": f"hpscan-node-agent://{container.process.pid}",
        }
        message = self.termination_message(container, code)
        if message:
            terminated["message"] = message
        container.state = {"terminated": terminated}
        policy = self.restart_policy
        if container.init:
            restart = code != 0 and policy != "Never"
        else:
            restart = policy == "Always" or (policy == "OnFailure" and code != 0)
        if restart and not self.deleted.is_set():
            delay = min(self.agent.args.backoff_base * 2**container.restart_count, self.agent.args.backoff_max)
            container.last_state = container.state
            container.state = {
                "waiting": {"reason": "CrashLoopBackOff", "message": f"back-off {delay:g}s restarting {container.name}"}
            }
            container.restart_count += 1
            container.restart_at = time.monotonic() + delay
            container.process = None
        else:
            container.done = True

    def termination_message(self, container: Container, code: int) -> str:
        message = (self.dir / f"{container.name}.termination-log").read_bytes()[:MAX_TERMINATION_MESSAGE]
        if not message and code != 0 and container.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            tail = (self.dir / f"{container.name}.log").read_bytes()[-2048:]
            message = b"\n".join(tail.splitlines()[-80:])
        return message.decode(errors="replace")

    def run_until_done(self, containers: list[Container]) -> None:
        """Start, watch and restart these containers until each is done or the pod is deleted."""
        while not self.deleted.is_set():
            changed = False
            for container in containers:
                if container.done:
                    continue
                if container.process is None and time.monotonic() >= container.restart_at:
                    try:
                        self.start_container(container)
                    except MountError as error:  # a missing ConfigMap/Secret key in env: retried, as a kubelet does
                        reason = {"reason": "CreateContainerConfigError", "message": str(error)}
                        container.state = {"waiting": reason}
                        container.restart_at = time.monotonic() + 2.0
                    changed = True
                elif container.process is not None and container.process.poll() is not None:
                    self.reap(container)
                    changed = True
            if time.monotonic() >= self.refresh_at:
                self.refresh_tokens()
            if changed:
                self.report()
            if all(container.done for container in containers):
                return
            self.deleted.wait(0.2)

    def stop_and_finish(self) -> None:
        """The pod is being deleted: SIGTERM every process group, SIGKILL after the grace period, finish."""
        running = [c for c in self.init_containers + self.containers if c.process is not None]
        for container in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(container.process.pid, signal.SIGTERM)  # type: ignore[union-attr]
        deadline = time.monotonic() + self.grace
        while any(c.process.poll() is None for c in running) and time.monotonic() < deadline:  # type: ignore[union-attr]
            time.sleep(0.1)
        for container in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(container.process.pid, signal.SIGKILL)  # type: ignore[union-attr]
            self.reap(container)
        if self.agent_stopping:
            return
        succeeded = all(exit_code_of(c) == 0 for c in self.containers) and self.restart_policy != "Always"
        self.finish("Succeeded" if succeeded else "Failed")
        if not self.object_gone:
            self.agent.final_delete(self.pod)

    # status ----------------------------------------------------------------------------------------
    def finish(self, phase: str, reason: str = "", message: str = "") -> None:
        self.phase, self.reason, self.message = phase, reason, message
        for container in self.init_containers + self.containers:
            if "terminated" not in container.state:
                container.state = {
                    "terminated": {"exitCode": 137 if container.ever_started else 1, "reason": reason or "Error"}
                }
        self.report()
        log.info("pod %s/%s %s %s", self.namespace, self.pod_name, phase, message)

    def condition(self, kind: str, true: bool, reason: str = "") -> dict[str, Any]:
        status = "True" if true else "False"
        if self.conditions.get(kind, ("", ""))[0] != status:
            self.conditions[kind] = (status, now())
        result = {"type": kind, "status": status, "lastTransitionTime": self.conditions[kind][1], "lastProbeTime": None}
        if reason and not true:
            result["reason"] = reason
        return result

    def current_phase(self) -> str:
        if self.phase in ("Succeeded", "Failed"):
            return self.phase
        if not self.initialized or not any(c.ever_started for c in self.containers):
            return "Pending"
        return "Running"

    def report(self) -> None:
        """Patch the pod's status from what the agent knows (conditions merge by type, lists are replaced)."""
        phase = self.current_phase()
        terminal = phase in ("Succeeded", "Failed")
        ready = not terminal and all("running" in c.state for c in self.containers)
        not_ready_reason = "PodCompleted" if terminal else "ContainersNotReady"
        status: dict[str, Any] = {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": pod_ip(self.pod),
            "podIPs": [{"ip": pod_ip(self.pod)}],
            "startTime": self.start_time,
            "conditions": [
                self.condition("PodReadyToStartContainers", self.volumes_ready),
                self.condition("Initialized", self.initialized, "ContainersNotInitialized"),
                self.condition("ContainersReady", ready, not_ready_reason),
                self.condition("Ready", ready, not_ready_reason),
            ],
            "containerStatuses": [c.status() for c in self.containers],
        }
        if self.init_containers:
            status["initContainerStatuses"] = [c.status() for c in self.init_containers]
        if self.reason:
            status["reason"] = self.reason
        if self.message:
            status["message"] = self.message
        try:
            self.agent.core.patch_namespaced_pod_status(
                self.pod_name, self.namespace, {"status": status}, _content_type=STRATEGIC
            )
        except ApiException as error:
            if error.status != 404:
                log.warning("status of %s/%s not written: %s", self.namespace, self.pod_name, error.reason)


def exit_code_of(container: Container) -> int:
    """The exit code of a terminated container (1 when it never ran)."""
    return int(container.state.get("terminated", {}).get("exitCode", 1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cluster.nodeagent", description=__doc__.split("\n")[0])
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--nodes", type=Path, default=REPO / "cluster" / "nodes.yaml", help="nodes file")
    parser.add_argument("--state-dir", type=Path, default=REPO / ".cluster" / "pods", help="per-pod directories")
    parser.add_argument("--api-port", type=int, required=True, help="the API server port on 127.0.0.1")
    parser.add_argument("--tls-cert-file", type=Path, help="serving certificate of the log endpoint")
    parser.add_argument("--tls-key-file", type=Path, help="its key")
    parser.add_argument("--ready-file", type=Path, help="written once the nodes are registered and pods listed")
    parser.add_argument("--kubelet-version", default="v0.0.0-hpscan", help="reported as the node's kubelet version")
    parser.add_argument(
        "--backoff-base", type=float, default=1.0, help="crash-loop back-off start, seconds (kubelet: 10)"
    )
    parser.add_argument(
        "--backoff-max", type=float, default=20.0, help="crash-loop back-off cap, seconds (kubelet: 300)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(threadName)s %(message)s")
    agent = Agent(args)

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping pods and exiting", signum)
        agent.stop()
        os._exit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    agent.run()


if __name__ == "__main__":
    main()
