"""The manifests of a scan on Kubernetes, as pure functions of plain data (what KubernetesBackend sends).

What a shard needs, all owned by the HPScan (deleting the scan deletes them, by garbage collection):
- its record pages, ConfigMaps ``<scan>-shard-NNN-p0``, ``-p1``, ... (hpscan.job.configmap): they carry the shard
  file to the pod (read through the API) and receive its records, one key per record, merge-patched by the shard
  runner into the page that holds the record's combination. They need no inbound path to the pod, and the pod's
  ServiceAccount may only get/patch its scan's pages (a per-scan Role naming them). The records outlive operator
  restarts, and a retried or resumed pod starts from them, so nothing recorded is trained twice. ``page_layout``
  sizes the pages so that no page passes PAGE_BUDGET, whatever the shard's size;
- Job ``<scan>-shard-NNN``: GPU limits, node selector and tolerations from the site, restricted pod security,
  backoffLimit = spec.retries, exit code 3 (GPU unavailable) fails the Job at once (podFailurePolicy).
Suspending sets the Jobs' ``spec.suspend`` (Kubernetes deletes their pods; recorded results stay).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from hpscan.api.contract import LAST_WORDS_ENV, ShardFile
from hpscan.api.sites import KubernetesSite, Site
from hpscan.api.spec import GROUP, KIND, VERSION, HPScanSpec
from hpscan.api.status import FINAL_EXITS
from hpscan.api.store import ACCESS_KEY_ENV, SECRET_KEY_ENV, STORE_ENV, ModelStoreLocation
from hpscan.backends.base import ScanRef
from hpscan.backends.kubernetes.names import (
    CONTAINER,
    IMAGE_PULL_TIMEOUT_ANNOTATION,
    KUEUE_QUEUE_LABEL,
    LABEL_MOVES,
    LABEL_PAGE,
    LABEL_ROLE,
    LABEL_SCAN,
    LABEL_SHARD,
    LABEL_SITE,
    MANAGED_BY,
    OUT_MOUNT,
    PAYLOAD_UID,
    SHARD_FILE,
    SHARD_MOUNT,
    TERMINATION_MESSAGE_PATH,
    _name,
    job_name,
    payload_account_name,
    probe_job_name,
    shard_pages_name,
    site_name,
)
from hpscan.core.artifacts import job_store
from hpscan.job.configmap import ACCOUNT_ENV, CONFIGMAP_ENV, NAMESPACE_ENV
from hpscan.job.pages import (
    PAGE_KEY,
    PAGE_SIZE_KEY,
    STOPS_KEY,
    TRIALS_KEY,
    compact,
    inbox_name,
    page_name,
    split_shard_file,
)


def pull_inbox(scan: ScanRef, shard: int, page_size: int) -> dict[str, Any]:
    """A pulling worker's inbox (hpscan.job.configmap): the operator appends its trials and stops, the pod its
    newest per-epoch reports. Labelled as a shard page, so the operator's watch of the pages sees it."""
    metadata = _metadata(scan, inbox_name(shard_pages_name(scan.name, shard)), "shard", shard)
    data = {TRIALS_KEY: "", STOPS_KEY: "", PAGE_SIZE_KEY: str(page_size)}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}


def pull_page(scan: ScanRef, shard: int, page: int) -> dict[str, Any]:
    """A record page of a pulling worker beyond its first: the records of the trials trial_pages puts on it."""
    metadata = _metadata(scan, page_name(shard_pages_name(scan.name, shard), page), "shard", shard)
    metadata["labels"][LABEL_PAGE] = str(page)
    data = {PAGE_KEY: compact({"page": page, "pulled": True, "combinations": []})}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}


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


def shard_pages(
    scan: ScanRef, shard_file: ShardFile, page_size: int, held: Mapping[int, Mapping[str, str]] | None = None
) -> list[dict[str, Any]]:
    """The record pages of a shard: ConfigMaps that deliver its shard file to the pod, ``page_size`` combinations
    each, and receive its records (one key per id, in the page of its combination). ``held``: the data of pages
    that exist already (split_shard_file): the new pages' data is then what to patch into them."""
    base = shard_pages_name(scan.name, shard_file.shard)
    pages = []
    for page, data in enumerate(split_shard_file(shard_file, page_size, held)):
        metadata = _metadata(scan, page_name(base, page), "shard", shard_file.shard)
        metadata["labels"][LABEL_PAGE] = str(page)
        pages.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data})
    return pages


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


def payload_rbac(
    scan: ScanRef, shard_count: int, pages_per_shard: int = 1, inboxes: bool = False
) -> list[dict[str, Any]]:
    """ServiceAccount, Role and RoleBinding for a scan's pods: get/patch on its shards' record pages (each of
    ``shard_count`` shards with up to ``pages_per_shard``, page_layout) and, for workers that pull, their
    inboxes; nothing else: no create, no list."""
    account = payload_account_name(scan.name)
    pages = [
        page_name(shard_pages_name(scan.name, shard), page)
        for shard in range(shard_count)
        for page in range(pages_per_shard)
    ]
    if inboxes:
        pages += [inbox_name(shard_pages_name(scan.name, shard)) for shard in range(shard_count)]
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
                    "resourceNames": pages,
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


def site_account_binding(scan: ScanRef, account: str) -> dict[str, Any]:
    """The RoleBinding that lets a site's own ServiceAccount (its kubernetes.serviceAccountName, which replaces the
    scan's account in the pod, see job_manifest) get/patch the scan's pages: the scan's Role, that account only,
    owned by the scan (it goes with it)."""
    suffix = account if len(account) <= 20 else f"{account[:11]}-{hashlib.sha256(account.encode()).hexdigest()[:8]}"
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _metadata(scan, _name(scan.name, f"payload-{suffix}"), "payload"),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": payload_account_name(scan.name)},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": scan.namespace}],
    }


def site_account(site: Site | None) -> str | None:
    """The site's own ServiceAccount for shard pods, or None (they run under the scan's account)."""
    k8s = site.settings_as(KubernetesSite) if site is not None else None
    return k8s.service_account_name if k8s is not None else None


def model_store_env(scan: ScanRef, spec: HPScanSpec) -> list[dict[str, Any]]:
    """The environment that makes a shard job keep its trials' checkpoints and upload its models in the scan's
    store (hpscan.job.store, job.checkpoints): where, and the key pair from the store's Secret (the kubelet reads
    it; the pod's ServiceAccount gets no access to Secrets). Empty when the scan has no store (core.artifacts.job_store:
    a scan that keeps no models still keeps checkpoints there)."""
    store = job_store(spec.artifacts)
    if store is None:
        return []
    location = ModelStoreLocation.of(store.s3, scan.namespace, scan.name)
    ref = store.s3.secret_ref
    return [
        {"name": STORE_ENV, "value": location.model_dump_json(by_alias=True)},
        {"name": ACCESS_KEY_ENV, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.access_key_id_key}}},
        {"name": SECRET_KEY_ENV, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.secret_access_key_key}}},
    ]


def _site_settings(site: Site | None) -> KubernetesSite:
    return (site.settings_as(KubernetesSite) if site is not None else None) or KubernetesSite()


def pod_spec(
    spec: HPScanSpec,
    site: Site | None,
    *,
    image: str,
    command: list[str],
    env: list[dict[str, Any]],
    account: str,
    deadline: int | None,
    shard_file: bool = True,
) -> dict[str, Any]:
    """The pod of a shard's or a probe's Job (one builder, so both meet the site alike): the payload image with
    ``command`` and ``env``, GPU limits, node selector, tolerations and priority class from the site, restricted
    security (non-root, read-only root filesystem, no capabilities), emptyDirs for its output and /tmp, and for a
    shard (``shard_file``) the folder the runner writes the shard file into; ``deadline``: seconds an attempt may
    run (activeDeadlineSeconds), None for no limit."""
    k8s = _site_settings(site)
    resources: dict[str, dict[str, str]] = {
        "requests": {"cpu": spec.payload.cpu, "memory": spec.payload.memory},
        "limits": {"memory": spec.payload.memory},
    }
    if spec.gpu.count > 0:
        resources["limits"][k8s.gpu_resource_name] = str(spec.gpu.count)
    if k8s.ephemeral_storage:  # the emptyDirs count against it: a full disk evicts this pod, not a neighbour's
        resources["requests"]["ephemeral-storage"] = resources["limits"]["ephemeral-storage"] = k8s.ephemeral_storage
    folders = (["shard"] if shard_file else []) + ["out", "tmp"]
    # the runner writes the shard file to SHARD_MOUNT; the root filesystem is read-only, and TensorFlow needs /tmp
    mounts = {"shard": SHARD_MOUNT, "out": OUT_MOUNT, "tmp": "/tmp"}
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": account,
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
                "image": image,
                "command": command,
                "env": env,
                "resources": resources,
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
                "volumeMounts": [{"name": name, "mountPath": mounts[name]} for name in folders],
                "terminationMessagePath": TERMINATION_MESSAGE_PATH,
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }
        ],
        "volumes": [{"name": name, "emptyDir": {}} for name in folders],
    }
    if deadline:
        pod["activeDeadlineSeconds"] = deadline
    if k8s.node_selector:
        pod["nodeSelector"] = dict(k8s.node_selector)
    if k8s.tolerations:
        pod["tolerations"] = [t.to_wire() for t in k8s.tolerations]
    if k8s.priority_class_name:
        pod["priorityClassName"] = k8s.priority_class_name
    return pod


def job_manifest(
    scan: ScanRef, spec: HPScanSpec, shard: int, site: Site | None, image: str | None = None, moves: int = 0
) -> dict:
    """The batch/v1 Job that runs one shard on a Kubernetes site (``moves``: its move count, see job_name)."""
    k8s = _site_settings(site)
    command = [
        "hpscan", "shard-run", SHARD_FILE, "--out", OUT_MOUNT,
        "--channel", "kubernetes", "--", *spec.payload.command,
    ]  # fmt: skip
    env: list[dict[str, Any]] = [{"name": e.name, "value": e.value} for e in spec.payload.env] + [
        {"name": "HPSCAN_SCAN", "value": scan.name},
        {"name": "HPSCAN_SHARD", "value": str(shard)},
        {"name": NAMESPACE_ENV, "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": ACCOUNT_ENV, "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
        {"name": CONFIGMAP_ENV, "value": shard_pages_name(scan.name, shard)},
        {"name": "HOME", "value": OUT_MOUNT},  # the root filesystem is read-only
        {"name": LAST_WORDS_ENV, "value": TERMINATION_MESSAGE_PATH},  # the payload's reason, read by the kubelet
        *model_store_env(scan, spec),
    ]
    env += site_env(site)
    pod_labels = {LABEL_SCAN: scan.name, LABEL_SHARD: str(shard), LABEL_ROLE: "shard", **MANAGED_BY}
    if site is not None:
        pod_labels[LABEL_SITE] = site.name
    pod = pod_spec(
        spec, site, image=image or spec.payload.image, command=command, env=env,
        account=k8s.service_account_name or payload_account_name(scan.name),  # site_account_binding
        deadline=spec.payload.timeout_seconds,  # per attempt: a pod past it fails and the Job retries (backoffLimit)
    )  # fmt: skip
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
        "template": {"metadata": {"labels": pod_labels}, "spec": pod},
    }
    metadata = _with_moves(_metadata(scan, job_name(scan.name, shard, moves), "shard", shard), moves)
    metadata["annotations"] = {
        "hpscan.io/site": site.name if site else "default",
        IMAGE_PULL_TIMEOUT_ANNOTATION: str(k8s.image_pull_timeout_seconds),
    }
    return with_queue({"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": job_spec}, k8s)


def with_queue(job: dict[str, Any], k8s: KubernetesSite) -> dict[str, Any]:
    """A Job of a site with a Kueue queue: labelled for it and created suspended, as Kueue recommends (its webhook
    would suspend it too, and without one a Job created running would start before admission). Kueue unsuspends it
    once admitted; hpscan never does (KubernetesBackend pauses and resumes such Jobs through their Workloads)."""
    if k8s.queue_name:
        job["metadata"]["labels"][KUEUE_QUEUE_LABEL] = k8s.queue_name
        job["spec"]["suspend"] = True
    return job


def _with_moves(metadata: dict[str, Any], moves: int) -> dict[str, Any]:
    metadata["labels"][LABEL_MOVES] = str(moves)
    return metadata


def site_env(site: Site | None) -> list[dict[str, str]]:
    """The site's environment (after the payload's, so the site admin's setting wins)."""
    return [{"name": e.name, "value": e.value} for e in (site.env if site is not None else [])]


def probe_manifest(scan: ScanRef, spec: HPScanSpec, site: Site | None, image: str | None = None) -> dict:
    """The site probe: a Job whose pod is a shard's (pod_spec: image, GPU request, selectors, tolerations, site
    environment, restricted security) that runs spec.payload.gpuCheck once, without the shard's files or API
    access."""
    k8s = _site_settings(site)
    where = site_name(site)
    labels = {LABEL_SCAN: scan.name, LABEL_ROLE: "probe", LABEL_SITE: where, **MANAGED_BY}
    env = [{"name": e.name, "value": e.value} for e in spec.payload.env] + [
        {"name": "HOME", "value": OUT_MOUNT},
        {"name": LAST_WORDS_ENV, "value": TERMINATION_MESSAGE_PATH},
        *site_env(site),
    ]
    pod = pod_spec(
        spec, site, image=image or spec.payload.image, command=list(spec.payload.gpu_check), env=env,
        account=k8s.service_account_name or "default",  # sent before the scan's account exists
        deadline=site.probe_timeout_seconds if site is not None else 600, shard_file=False,
    )  # fmt: skip
    pod["automountServiceAccountToken"] = False  # the probe needs no API: it only exits 0 or 3
    metadata = {
        "name": probe_job_name(scan.name, where),
        "namespace": scan.namespace,
        "labels": dict(labels),  # with_queue labels the Job, not its pods
        "annotations": {"hpscan.io/site": where},
        "ownerReferences": [owner_reference(scan)],
    }
    job_spec = {
        "backoffLimit": 0,
        "completions": 1,
        "parallelism": 1,
        "template": {"metadata": {"labels": labels}, "spec": pod},
    }
    return with_queue({"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": job_spec}, k8s)
