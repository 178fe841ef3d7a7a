"""The Kubernetes backend: one batch/v1 Job per shard, records carried back through per-shard
ConfigMaps, its record pages.

Modules: ``names`` (labels, mounts and object names), ``page_layout`` (how records are paged into ConfigMaps),
``manifests`` (the Jobs, ConfigMaps and RBAC a scan needs, one pod builder for shards and probes), ``states`` (what
the Jobs, pods and Workloads the API returns say: a shard's phase and message, a probe's outcome) — all pure — and
the parts that call the API server: ``api`` (the client, and the one way a failed call becomes BackendError or
SchedulerUnavailable), ``state`` (what the backend holds per scan), ``shard_objects`` (a scan's shard Jobs and
ConfigMaps, from the watch cache or a LIST), ``failures`` (pods read when a Job does not say enough), ``kueue``
(Workloads, and pausing a Job Kueue manages), ``pull`` (the inbox ConfigMaps of workers that pull), ``probes``
(site probes) and ``backend`` (the backend, over these). The in-pod half of the live channel is
``hpscan.job.configmap``.
"""

from __future__ import annotations

from hpscan.backends.base import BackendContext
from hpscan.backends.kubernetes.api import load_client_config
from hpscan.backends.kubernetes.backend import SUBMIT_THREADS, KubernetesBackend
from hpscan.backends.kubernetes.manifests import job_manifest, payload_rbac, shard_pages
from hpscan.backends.kubernetes.names import job_name, shard_pages_name
from hpscan.backends.kubernetes.page_layout import page_layout
from hpscan.backends.kubernetes.states import shard_state

__all__ = [
    "KubernetesBackend",
    "create",
    "job_manifest",
    "job_name",
    "load_client_config",
    "page_layout",
    "payload_rbac",
    "shard_pages",
    "shard_pages_name",
    "shard_state",
]


def create(context: BackendContext) -> KubernetesBackend:
    """The operator's Kubernetes backend: in-cluster credentials (or KUBECONFIG), one kept-alive connection per
    submitting thread."""
    from kubernetes import client

    load_client_config()
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = SUBMIT_THREADS
    return KubernetesBackend(context.instrument(client.ApiClient(configuration)))
