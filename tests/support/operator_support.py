"""Helpers shared by the operator and Helm tests: a stand-in scan and waiting for its phase.

Also a pytest plugin (conftest.py registers it) with the fixtures of a test module that runs the operator on the
namespaces named with the module's ``PREFIX``: ``crd`` (module: the committed CRD applied), ``operator`` (module:
`hpscan operator` watching ``<PREFIX>-*``) and ``ns`` (a fresh watched namespace). A module defines its own where
it needs more (test_kueue.py starts Kueue first).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from hpscan.api.spec import GROUP, PLURAL, VERSION
from support import CONTRACT_PAYLOAD

REPO = Path(__file__).resolve().parents[2]
PAYLOAD = CONTRACT_PAYLOAD


def apply_crd(cluster: Any) -> None:
    """The committed CRD, applied and Established (a cluster kept from an older tree gets this one's)."""
    cluster.kubectl("apply", "-f", str(REPO / "crds" / "hpscan.io_hpscans.yaml"))
    cluster.kubectl("wait", "--for=condition=Established", "crd/hpscans.hpscan.io", "--timeout=60s")


def operator_watching(cluster: Any, log: Path, prefix: str) -> Iterator[Operator]:
    """`hpscan operator` watching the namespaces ``<prefix>-*`` while the caller holds it (a module fixture)."""
    running = Operator(cluster, log, f"{prefix}-*")
    running.start()
    yield running
    running.stop()


def watched_namespace(k8s: client.ApiClient, cluster: Any, prefix: str) -> Iterator[str]:
    """A fresh namespace ``<prefix>-<hex>`` (an operator watching ``<prefix>-*`` sees it) under the restricted Pod
    Security profile, once its default ServiceAccount exists. Afterwards its scans are deleted first, while the
    operator still runs to remove its finalizer, then the namespace."""
    core = client.CoreV1Api(k8s)
    name = f"{prefix}-{secrets.token_hex(3)}"
    core.create_namespace({"metadata": {"name": name, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})
    cluster.wait(lambda: core.list_namespaced_service_account(name, field_selector="metadata.name=default").items,
                 30, f"ServiceAccount {name}/default")  # fmt: skip
    yield name
    scans = client.CustomObjectsApi(k8s)
    for item in scans.list_namespaced_custom_object(GROUP, VERSION, name, PLURAL)["items"]:
        scans.delete_namespaced_custom_object(GROUP, VERSION, name, PLURAL, item["metadata"]["name"])
    cluster.wait(
        lambda: not scans.list_namespaced_custom_object(GROUP, VERSION, name, PLURAL)["items"], 60, "scans gone"
    )
    core.delete_namespace(name)


def module_prefix(request: pytest.FixtureRequest) -> str:
    """The namespace prefix of the requesting test module (its ``PREFIX``): what its operator watches."""
    prefix = getattr(request.module, "PREFIX", None)
    if not prefix:
        raise pytest.UsageError(f"{request.module.__name__} uses the operator fixtures but defines no PREFIX")
    return prefix


@pytest.fixture(scope="module")
def crd(cluster: Any) -> None:
    apply_crd(cluster)


@pytest.fixture(scope="module")
def operator(
    cluster: Any, crd: None, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    yield from operator_watching(cluster, tmp_path_factory.mktemp("operator") / "operator.log", module_prefix(request))


@pytest.fixture
def ns(k8s: client.ApiClient, cluster: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    yield from watched_namespace(k8s, cluster, module_prefix(request))


def handed_trials(k8s: client.ApiClient, ns: str, scan: str) -> Counter:
    """How often each trial was handed out, over the scan's worker inboxes (their trials.jsonl)."""
    inboxes = client.CoreV1Api(k8s).list_namespaced_config_map(ns, label_selector=f"hpscan.io/scan={scan}").items
    return Counter(
        json.loads(line)["trial"]["id"]
        for cm in inboxes
        if cm.metadata.name.endswith("-in")
        for line in (cm.data or {}).get("trials.jsonl", "").splitlines()
        if "trial" in line
    )


GPU_NODES = {
    "nodeSelector": {"nvidia.com/gpu.present": "true"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
}
"""A Kubernetes site block for the local control plane's GPU nodes (cluster/nodes.yaml)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scan_manifest(name: str, knobs: dict | None = None, **spec: Any) -> dict:
    body = {
        "apiVersion": "hpscan.io/v1alpha1",
        "kind": "HPScan",
        "metadata": {"name": name},
        "spec": {
            "parameters": [{"name": "x", "values": [1, 2, 3, 4]}, {"name": "act", "values": ["relu", "elu"]}],
            "sharding": {"shards": 4},
            "retries": 1,
            "gpu": {"count": 1, "required": True},
            "payload": {
                "image": "registry.example.org/contract-payload:1",
                "command": [sys.executable, str(PAYLOAD)],
                "gpuCheck": [sys.executable, str(PAYLOAD), "gpu-check"],
                "settings": {"contractPayload": knobs or {}},
            },
            "sites": [
                {
                    "name": "gpu-nodes",
                    "kubernetes": {
                        "nodeSelector": {"nvidia.com/gpu.present": "true"},
                        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                    },
                }
            ],
        },
    }
    body["spec"].update(spec)
    return body


def custom(k8s: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(k8s)


def create(k8s: client.ApiClient, ns: str, body: dict) -> dict:
    return custom(k8s).create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)


def get(k8s: client.ApiClient, ns: str, name: str) -> dict:
    return custom(k8s).get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)


def wait_phase(cluster: Any, k8s: client.ApiClient, ns: str, name: str, phases: set[str], timeout: float = 120) -> dict:
    def reached() -> dict | None:
        body = get(k8s, ns, name)
        return body if (body.get("status") or {}).get("phase") in phases else None

    return cluster.wait(reached, timeout, f"HPScan {ns}/{name} in {phases}")


def tiny_shard(scan: str) -> dict:
    """A one-combination dl1 shard file that trains in seconds (the images' and the real node's tests)."""
    return {
        "apiVersion": "hpscan.io/v1alpha1",
        "kind": "ShardFile",
        "scan": scan,
        "shard": 0,
        "shards": 1,
        "objective": {"metric": "val_loss", "goal": "minimize"},
        "gpu": {"count": 1, "required": False},
        "settings": {"epochs": 1, "patience": 1, "data": {"synthetic": {"jets": 2000, "seed": 1}}},
        "combinations": [{"id": "c-tiny", "parameters": {"layer1": 8, "learning_rate": 0.01, "batch_size": 250}}],
    }


class Operator:
    """`hpscan operator` as a process watching the namespaces that match ``namespaces`` (a kopf pattern), with the
    admin kubeconfig or the one given (the chart's RBAC is tested with the Helm chart). It can be killed and
    restarted, as a crashed pod would be."""

    def __init__(
        self,
        cluster: Any,
        log: Path,
        namespaces: str,
        kubeconfig: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.cluster, self.log, self.namespaces = cluster, log, namespaces
        self.kubeconfig = kubeconfig or cluster.kubeconfig
        self.env = dict(os.environ if env is None else env)
        """The operator's environment (a site's client settings, e.g. a pool's CONDOR_CONFIG); KUBECONFIG is set."""
        self.metrics_port, self.health_port = free_port(), free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**self.env, "KUBECONFIG": str(self.kubeconfig)}
        with self.log.open("a") as handle:
            self.process = subprocess.Popen(
                [str(Path(sys.executable).parent / "hpscan"), "operator", "--namespace", self.namespaces,
                 "--health-port", str(self.health_port), "--metrics-port", str(self.metrics_port)],
                env=env, stdout=handle, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()  # SIGKILL: no cleanup, as when a node dies
        self.process.wait()

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()

    def metrics(self) -> str:
        from urllib.request import urlopen

        with urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            return response.read().decode()
