"""Helpers shared by the operator and Helm tests: a stand-in scan and waiting for its phase."""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any

from kubernetes import client

from hpscan.api.spec import GROUP, PLURAL, VERSION

REPO = Path(__file__).resolve().parents[2]
PAYLOAD = REPO / "tests" / "unit" / "payloads" / "contract_payload.py"


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
