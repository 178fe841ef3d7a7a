"""The one way the Kubernetes backend calls the API server: the official client's APIs in one ``KubernetesApi``
shared by the backend's parts, and ``api_call``, which turns a refusal into BackendError and a lost connection into
SchedulerUnavailable (base.batch_call), so the engine shows either as this site's outage and goes on with the others.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from functools import partial, wraps
from typing import Any

from hpscan.backends.base import batch_call
from hpscan.errors import BackendError, HPScanError, SchedulerUnavailable


def load_client_config() -> None:
    """In a pod: the service account; elsewhere: KUBECONFIG or ~/.kube/config (as kubectl does)."""
    from kubernetes import config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()


def api_failed(doing: str, error: Exception) -> HPScanError:
    """An API server's refusal (a quota, an admission webhook, RBAC) as a BackendError naming it; a connection that
    failed (urllib3's HTTPError) as SchedulerUnavailable."""
    from kubernetes.client.rest import ApiException

    if not isinstance(error, ApiException):
        return SchedulerUnavailable(f"the Kubernetes API did not answer ({doing}): {error}")
    detail = error.reason
    with contextlib.suppress(ValueError, AttributeError):  # a body that is not a Status: the reason
        detail = json.loads(error.body or "{}").get("message") or detail
    return BackendError(f"the Kubernetes API refused {doing} ({error.status}): {detail}")


def api_call(method: Callable[..., Any]) -> Callable[..., Any]:
    """A backend method whose API errors become api_failed's, named after the method; other errors pass."""

    @wraps(method)
    def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.rest import ApiException
        from urllib3.exceptions import HTTPError

        with batch_call(partial(api_failed, method.__name__), catching=(ApiException, HTTPError)):
            return method(self, *args, **kwargs)

    return guarded


class KubernetesApi:
    """The client's APIs on one connection (``api_client``; None: the default configuration), and the reads and
    creates every part of the backend makes. Synchronous: kopf runs the backend in a thread."""

    def __init__(self, api_client: Any = None) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.rbac = client.RbacAuthorizationV1Api(api_client)
        self.networking = client.NetworkingV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    @staticmethod
    def create(create: Any, namespace: str, body: dict[str, Any]) -> bool:
        """Create, treating AlreadyExists as done (names are deterministic: a retry never duplicates)."""
        from kubernetes.client.rest import ApiException

        try:
            create(namespace, body)
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True

    def jobs(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """The Jobs a label selector matches, as dicts."""
        listed = self.batch.list_namespaced_job(namespace, label_selector=selector).items
        return [self.batch.api_client.sanitize_for_serialization(job) for job in listed]

    def job(self, namespace: str, name: str) -> dict[str, Any] | None:
        """One Job as a dict, or None (a LIST by name: the operator's role lists Jobs, it does not get them)."""
        listed = self.batch.list_namespaced_job(namespace, field_selector=f"metadata.name={name}").items
        return self.batch.api_client.sanitize_for_serialization(listed[0]) if listed else None

    def configmaps(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """The ConfigMaps a label selector matches, as dicts."""
        listed = self.core.list_namespaced_config_map(namespace, label_selector=selector).items
        return [self.core.api_client.sanitize_for_serialization(configmap) for configmap in listed]

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """The pods a label selector matches, as dicts."""
        listed = self.core.list_namespaced_pod(namespace, label_selector=selector).items
        return [self.batch.api_client.sanitize_for_serialization(pod) for pod in listed]


class ClientOf:
    """A backend attribute that is its KubernetesApi's client of the same name (``backend.core`` is
    ``backend.api.core``): tests and the simulation set their own client through it, for every part at once."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, backend: Any, owner: type | None = None) -> Any:
        return self if backend is None else getattr(backend.api, self.name)

    def __set__(self, backend: Any, client: Any) -> None:
        setattr(backend.api, self.name, client)
