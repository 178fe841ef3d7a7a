"""The manifests of a scan on Kubernetes, as pure functions of plain data (what KubernetesBackend sends).

What a shard needs, all owned by the HPScan (deleting the scan deletes them, by garbage collection):
- ConfigMap ``<scan>-shard-NNN``: the shard file (key shard.json, mounted read-only into the pod) and the live
  channel: the shard runner in the pod merge-patches one key per record into the same ConfigMap. It needs no
  inbound path to the pod, and the pod's ServiceAccount may only get/patch its scan's shard ConfigMaps (a
  per-scan Role naming them). The records outlive operator restarts, and a retried or resumed pod starts from
  them, so nothing recorded is trained twice. One object per shard keeps a 100-shard fan-out to 200 requests;
- Job ``<scan>-shard-NNN``: GPU limits, node selector and tolerations from the site, restricted pod security,
  backoffLimit = spec.retries, exit code 3 (GPU unavailable) fails the Job at once (podFailurePolicy).
Suspending sets the Jobs' ``spec.suspend`` (Kubernetes deletes their pods; recorded results stay).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from hpscan.api.contract import LAST_WORDS_ENV, ShardFile, shard_name
from hpscan.api.sites import KubernetesSite, Site
from hpscan.api.spec import GROUP, KIND, VERSION, HPScanSpec
from hpscan.api.status import FINAL_EXITS, Reason, ShardPhase, ShardStatus
from hpscan.api.store import ACCESS_KEY_ENV, SECRET_KEY_ENV, STORE_ENV, ModelStoreLocation
from hpscan.backends.base import ScanRef
from hpscan.core.brokering import ProbeOutcome
from hpscan.job.configmap import CONFIGMAP_ENV, NAMESPACE_ENV, SHARD_KEY

LABEL_SCAN = "hpscan.io/scan"
LABEL_SHARD = "hpscan.io/shard"
LABEL_ROLE = "hpscan.io/role"
LABEL_SITE = "hpscan.io/site"
LABEL_MOVES = "hpscan.io/moves"
MANAGED_BY = {"app.kubernetes.io/managed-by": "hpscan"}
SHARD_MOUNT = "/hpscan/shard"
OUT_MOUNT = "/hpscan/out"
CONTAINER = "payload"
MAX_SHARD_COMBINATIONS = 1000
"""The most combinations a shard may hold on Kubernetes: its ConfigMap carries the shard file (~150 bytes a
combination) and every record (~420 bytes), and an object must stay well under etcd's 1 MiB."""

TERMINATION_MESSAGE_PATH = "/dev/termination-log"
"""The container's termination message file (Kubernetes' default path): the payload writes its reason there."""
PAYLOAD_UID = 10001
"""The payload image's user (payload/Dockerfile); a high uid that no host account holds."""


def _name(scan: str, suffix: str) -> str:
    """``<scan>-<suffix>``, shortened with a hash when it would pass 63 characters (a DNS label)."""
    name = f"{scan}-{suffix}"
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(scan.encode()).hexdigest()[:6]
    return f"{scan[: 63 - len(suffix) - 8]}-{digest}-{suffix}"


def job_name(scan: str, shard: int, moves: int = 0) -> str:
    """``<scan>-shard-NNN``, and ``-mK`` for a shard moved K times (its earlier Jobs may still be ending)."""
    return _name(scan, shard_name(shard) + (f"-m{moves}" if moves else ""))


def site_name(site: Site | None) -> str:
    """The name a site goes by in labels and Job names; "default" for the operator's own site."""
    return site.name if site is not None else "default"


def probe_job_name(scan: str, site: str) -> str:
    suffix = site if len(site) <= 20 else f"{site[:11]}-{hashlib.sha256(site.encode()).hexdigest()[:8]}"
    return _name(scan, f"probe-{suffix}")


def shard_configmap_name(scan: str, shard: int) -> str:
    return _name(scan, shard_name(shard))


def results_configmap_name(scan: str, shard: int) -> str:
    """The ConfigMap a shard's records go to: its shard ConfigMap."""
    return shard_configmap_name(scan, shard)


def payload_account_name(scan: str) -> str:
    return _name(scan, "payload")


def owner_reference(scan: ScanRef) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "name": scan.name,
        "uid": scan.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(scan: ScanRef, name: str, role: str, shard: int | None = None) -> dict[str, Any]:
    labels = {LABEL_SCAN: scan.name, LABEL_ROLE: role, **MANAGED_BY}
    if shard is not None:
        labels[LABEL_SHARD] = str(shard)
    return {"name": name, "namespace": scan.namespace, "labels": labels, "ownerReferences": [owner_reference(scan)]}


def shard_configmap(scan: ScanRef, shard_file: ShardFile) -> dict[str, Any]:
    """The ConfigMap that delivers a shard file to its pod and receives its records (one key per id)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(scan, shard_configmap_name(scan.name, shard_file.shard), "shard", shard_file.shard),
        "data": {SHARD_KEY: shard_file.model_dump_json(by_alias=True, exclude_none=True)},
    }


def shard_network_policy(scan: ScanRef) -> dict[str, Any]:
    """Nothing may connect to a scan's shard pods: they only reach out (the API server for their ConfigMap, data
    stores), never serve. Egress stays open: where data lives is the site's business."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(scan, _name(scan.name, "shards"), "shard"),
        "spec": {
            "podSelector": {"matchLabels": {LABEL_SCAN: scan.name, LABEL_ROLE: "shard"}},
            "policyTypes": ["Ingress"],
            "ingress": [],
        },
    }


def payload_rbac(scan: ScanRef, shard_count: int) -> list[dict[str, Any]]:
    """ServiceAccount, Role and RoleBinding for a scan's pods: get/patch on its results ConfigMaps, nothing else."""
    account = payload_account_name(scan.name)
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _metadata(scan, account, "payload")},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _metadata(scan, account, "payload"),
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "resourceNames": [results_configmap_name(scan.name, i) for i in range(shard_count)],
                    "verbs": ["get", "patch"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _metadata(scan, account, "payload"),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": scan.namespace}],
        },
    ]


def model_store_env(scan: ScanRef, spec: HPScanSpec) -> list[dict[str, Any]]:
    """The environment that makes a shard job upload its models (hpscan.job.store): where, and the key pair from
    the store's Secret (the kubelet reads it; the pod's ServiceAccount gets no access to Secrets). Empty when the
    scan keeps no models or names no store."""
    store = spec.artifacts.store
    if store is None or not spec.artifacts.save_models:
        return []
    location = ModelStoreLocation.of(store.s3, scan.namespace, scan.name)
    ref = store.s3.secret_ref
    return [
        {"name": STORE_ENV, "value": location.model_dump_json(by_alias=True)},
        {"name": ACCESS_KEY_ENV, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.access_key_id_key}}},
        {"name": SECRET_KEY_ENV, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.secret_access_key_key}}},
    ]


def job_manifest(
    scan: ScanRef, spec: HPScanSpec, shard: int, site: Site | None, image: str | None = None, moves: int = 0
) -> dict:
    """The batch/v1 Job that runs one shard on a Kubernetes site (``moves``: its generation, see job_name)."""
    k8s = (site.settings_as(KubernetesSite) if site is not None else None) or KubernetesSite()
    resources: dict[str, dict[str, str]] = {
        "requests": {"cpu": spec.payload.cpu, "memory": spec.payload.memory},
        "limits": {"memory": spec.payload.memory},
    }
    if spec.gpu.count > 0:
        resources["limits"][k8s.gpu_resource_name] = str(spec.gpu.count)
    command = [
        "hpscan", "shard-run", f"{SHARD_MOUNT}/{SHARD_KEY}", "--out", OUT_MOUNT,
        "--channel", "kubernetes", "--", *spec.payload.command,
    ]  # fmt: skip
    env = [{"name": e.name, "value": e.value} for e in spec.payload.env] + [
        {"name": "HPSCAN_SCAN", "value": scan.name},
        {"name": "HPSCAN_SHARD", "value": str(shard)},
        {"name": NAMESPACE_ENV, "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": CONFIGMAP_ENV, "value": results_configmap_name(scan.name, shard)},
        {"name": "HOME", "value": OUT_MOUNT},  # the root filesystem is read-only
        {"name": LAST_WORDS_ENV, "value": TERMINATION_MESSAGE_PATH},  # the payload's reason, read by the kubelet
        *model_store_env(scan, spec),
    ]
    env += site_env(site)
    pod_labels = {LABEL_SCAN: scan.name, LABEL_SHARD: str(shard), LABEL_ROLE: "shard", **MANAGED_BY}
    if site is not None:
        pod_labels[LABEL_SITE] = site.name
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": k8s.service_account_name or payload_account_name(scan.name),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": PAYLOAD_UID,
            "runAsGroup": PAYLOAD_UID,
            "fsGroup": PAYLOAD_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": CONTAINER,
                "image": image or spec.payload.image,
                "command": command,
                "env": env,
                "resources": resources,
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
                "volumeMounts": [
                    {"name": "shard", "mountPath": SHARD_MOUNT, "readOnly": True},
                    {"name": "out", "mountPath": OUT_MOUNT},
                    {"name": "tmp", "mountPath": "/tmp"},  # the root filesystem is read-only; TensorFlow needs /tmp
                ],
                "terminationMessagePath": TERMINATION_MESSAGE_PATH,
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }
        ],
        "volumes": [
            {"name": "shard", "configMap": {"name": shard_configmap_name(scan.name, shard)}},
            {"name": "out", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    if spec.payload.timeout_seconds:  # per attempt: a pod past it fails and the Job retries (backoffLimit)
        pod_spec["activeDeadlineSeconds"] = spec.payload.timeout_seconds
    if k8s.node_selector:
        pod_spec["nodeSelector"] = dict(k8s.node_selector)
    if k8s.tolerations:
        pod_spec["tolerations"] = [t.to_wire() for t in k8s.tolerations]
    if k8s.priority_class_name:
        pod_spec["priorityClassName"] = k8s.priority_class_name
    job_spec: dict[str, Any] = {
        "backoffLimit": spec.retries,
        "completions": 1,
        "parallelism": 1,
        "podFailurePolicy": {
            "rules": [
                {
                    "action": "FailJob",
                    "onExitCodes": {
                        "containerName": CONTAINER,
                        "operator": "In",
                        "values": sorted(int(code) for code in FINAL_EXITS),
                    },
                },
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            ]
        },
        "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
    }

    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _with_moves(_metadata(scan, job_name(scan.name, shard, moves), "shard", shard), moves)
        | {"annotations": {"hpscan.io/site": site.name if site else "default"}},
        "spec": job_spec,
    }


def _with_moves(metadata: dict[str, Any], moves: int) -> dict[str, Any]:
    metadata["labels"][LABEL_MOVES] = str(moves)
    return metadata


def site_env(site: Site | None) -> list[dict[str, str]]:
    """The site's environment (after the payload's, so the site admin's setting wins)."""
    return [{"name": e.name, "value": e.value} for e in (site.env if site is not None else [])]


def probe_manifest(scan: ScanRef, spec: HPScanSpec, site: Site | None, image: str | None = None) -> dict:
    """The site probe: a Job like a shard's (image, GPU request, selectors, tolerations, site environment,
    restricted security) that runs spec.payload.gpuCheck once, without the shard's ConfigMap or API access."""
    job = job_manifest(scan, spec, 0, site, image)
    where = site_name(site)
    name = probe_job_name(scan.name, where)
    labels = {LABEL_SCAN: scan.name, LABEL_ROLE: "probe", LABEL_SITE: where, **MANAGED_BY}
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    container["command"] = list(spec.payload.gpu_check)
    container["env"] = [{"name": e.name, "value": e.value} for e in spec.payload.env] + [
        {"name": "HOME", "value": OUT_MOUNT},
        {"name": LAST_WORDS_ENV, "value": TERMINATION_MESSAGE_PATH},
        *site_env(site),
    ]
    container["volumeMounts"] = [m for m in container["volumeMounts"] if m["name"] != "shard"]
    pod["volumes"] = [v for v in pod["volumes"] if v["name"] != "shard"]
    k8s = (site.settings_as(KubernetesSite) if site is not None else None) or KubernetesSite()
    pod["serviceAccountName"] = k8s.service_account_name or "default"  # sent before the scan's account exists
    pod["automountServiceAccountToken"] = False  # the probe needs no API: it only exits 0 or 3
    pod["activeDeadlineSeconds"] = site.probe_timeout_seconds if site is not None else 600
    job["metadata"] = {
        "name": name,
        "namespace": scan.namespace,
        "labels": labels,
        "annotations": {"hpscan.io/site": where},
        "ownerReferences": [owner_reference(scan)],
    }
    job["spec"]["backoffLimit"] = 0
    job["spec"].pop("podFailurePolicy")
    job["spec"]["template"]["metadata"]["labels"] = labels
    return job


def probe_outcome(job: dict[str, Any] | None, pods: Sequence[dict[str, Any]]) -> ProbeOutcome:
    """A probe Job and its pods -> the probe's exit code and last words, or why it waits (not sent, not
    scheduled)."""
    if job is None:
        return ProbeOutcome(None, "not sent yet")
    for pod in sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "", reverse=True):
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            ended = (container.get("state") or {}).get("terminated")
            if ended is not None:
                lines = [line.strip() for line in (ended.get("message") or "").splitlines() if line.strip()]
                return ProbeOutcome(int(ended.get("exitCode", 1)), lines[-1][:300] if lines else "")
    conditions = {c["type"]: c for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"}
    if "Complete" in conditions:
        return ProbeOutcome(0, "")
    if "Failed" in conditions:  # e.g. the deadline passed before the pod ran
        failed = conditions["Failed"]
        return ProbeOutcome(1, f"{failed.get('reason')}: {failed.get('message') or ''}".strip(": "))
    return ProbeOutcome(None, unscheduled(pods) or "waiting for the probe pod")


def _exit_code(message: str) -> int | None:
    """The exit code a podFailurePolicy message names ("... failed with exit code 3 matching FailJob rule ...")."""
    found = re.search(r"exit ?code:? ?(\d+)", message, re.IGNORECASE)
    return int(found.group(1)) if found else None


def unscheduled(pods: Sequence[dict[str, Any]]) -> str | None:
    """The scheduler's message when none of a Job's live pods runs and one cannot be scheduled, e.g. "0/2 nodes are
    available: 1 Insufficient nvidia.com/gpu, 1 node(s) had untolerated taint(s)"; None otherwise."""
    live = [p for p in pods if (p.get("status") or {}).get("phase") in ("Pending", "Running")]
    if not live or any(p["status"]["phase"] == "Running" for p in live):
        return None
    for pod in live:
        for condition in pod["status"].get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                return str(condition.get("message") or condition.get("reason") or "the pod cannot be scheduled")
    return None


def shard_state(
    job: dict[str, Any], terminations: Mapping[str, str] | None = None, pods: Sequence[dict[str, Any]] = ()
) -> ShardStatus:
    """A Job (as a dict from the API) -> the shard's phase, attempts and reason. ``terminations`` maps a Job's name
    to its failed pod's termination message (the payload's last words); ``pods`` are the Job's pods, read when it
    has pods that are not ready (so a pod the scheduler cannot place shows as Pending, Unschedulable)."""
    terminations = terminations or {}
    meta, spec, status = job.get("metadata", {}), job.get("spec", {}), job.get("status") or {}
    shard = int(meta.get("labels", {}).get(LABEL_SHARD, 0))
    moves = int(meta.get("labels", {}).get(LABEL_MOVES, 0))
    site = meta.get("annotations", {}).get("hpscan.io/site")
    attempts = (status.get("failed") or 0) + (status.get("succeeded") or 0) + (status.get("active") or 0)
    conditions = {c["type"]: c for c in status.get("conditions") or [] if c.get("status") == "True"}
    base = {"index": shard, "site": site, "attempts": attempts, "job": meta.get("name"), "moves": moves}
    if "Complete" in conditions:
        return ShardStatus(phase=ShardPhase.SUCCEEDED, **base)
    if "Failed" in conditions:
        failed = conditions["Failed"]
        reason = failed.get("reason") or Reason.JOB_FAILED
        message = failed.get("message") or ""
        if reason == "PodFailurePolicy" and (code := _exit_code(message)) in FINAL_EXITS:
            reason = FINAL_EXITS[code]
            message = terminations.get(str(meta.get("name")), "") or f"the payload exited with code {code} ({message})"
        return ShardStatus(phase=ShardPhase.FAILED, reason=reason, message=message[:300], **base)
    if spec.get("suspend"):
        return ShardStatus(phase=ShardPhase.SUSPENDED, reason=None, **base)
    if status.get("active"):
        if (why := unscheduled(pods)) is not None:
            return ShardStatus(phase=ShardPhase.PENDING, reason=Reason.UNSCHEDULABLE, message=why[:300], **base)
        retrying = (status.get("failed") or 0) > 0
        return ShardStatus(
            phase=ShardPhase.RUNNING,
            reason=Reason.RETRYING if retrying else None,
            message=f"{status.get('failed')} failed attempt(s)" if retrying else None,
            **base,
        )
    return ShardStatus(phase=ShardPhase.PENDING, **base)


def oversized_shards(largest_shard: int, total: int) -> str | None:
    """Why a plan's shards are too large for their ConfigMaps, with the shard count that fits; None when they fit."""
    if largest_shard <= MAX_SHARD_COMBINATIONS:
        return None
    needed = -(-total // MAX_SHARD_COMBINATIONS)
    return (
        f"a shard of {largest_shard:,} combinations is more than a Kubernetes shard carries ({MAX_SHARD_COMBINATIONS:,}: "
        f"its ConfigMap holds the shard file and every record under etcd's 1 MiB); use sharding.shards >= {needed:,} "
        f"or sharding.combinationsPerShard <= {MAX_SHARD_COMBINATIONS:,}"
    )
