"""A simulated Kubernetes API server, watch caches and kubelet, for the real KubernetesBackend (operator side) and
the real ConfigMapChannel (pod side) to talk to.

What it keeps of the real system: objects with resourceVersions; create answers 409 when the name exists; patch
is a JSON merge patch; list filters by label selector; every call may fail with a 5xx, or time out after it took
effect (the caller cannot tell whether its write happened), or (operator side) kill the operator between two
calls. The operator's watch caches (kopf indexes) show Jobs and ConfigMaps as they were some seconds ago, each
lagging independently, never going back in time. A Job runs one pod at a time (restartPolicy Never) up to
backoffLimit retries; a pod may die, or be evicted, at any time; a suspended Job's pod is stopped.

What it leaves out (the real control plane in tests/integration covers these): admission, RBAC (a Role's names
are checked by tests of the manifests), pod scheduling and images, watch events as such (a cache is a lagging
snapshot), and activeDeadlineSeconds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from urllib3.exceptions import ReadTimeoutError


class SimCrash(BaseException):
    """The operator process dies here (kill -9 between two API calls): nothing after it in the step happens."""


def _copy(value: Any) -> Any:
    """A deep copy of JSON data (several times faster than copy.deepcopy)."""
    return json.loads(json.dumps(value))


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = _copy(value)


def _matches(labels: dict[str, str], selector: str | None) -> bool:
    for term in (selector or "").split(","):
        if term:
            key, _, value = term.partition("=")
            if labels.get(key) != value:
                return False
    return True


class Obj(dict):
    """An API object as the client returns it: attribute access to its top-level fields (``.data``, ``.items``)."""

    def __getattr__(self, name: str) -> Any:
        return self.get(name)


@dataclass
class CallFaults:
    """How often the calls of one side fail: a 5xx before the call took effect, a timeout after it did, and (the
    operator only) a crash before it."""

    error: float = 0.0
    timeout_after: float = 0.0
    crash: float = 0.0


@dataclass
class ApiServer:
    """The objects of one namespace-aware API server, with a clock-stamped history for the lagging caches."""

    rng: Any
    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    version: int = 0
    history: list[tuple[float, tuple[str, str, str], dict[str, Any] | None]] = field(default_factory=list)
    now: float = 0.0
    calls: int = 0
    largest_object: int = 0

    def _store(self, key: tuple[str, str, str], body: dict[str, Any] | None) -> None:
        if body is None:
            self.objects.pop(key, None)
        else:
            self.version += 1
            body.setdefault("metadata", {})["resourceVersion"] = str(self.version)
            self.objects[key] = body
            self.largest_object = max(self.largest_object, len(json.dumps(body)))
        self.history.append((self.now, key, _copy(body) if body is not None else None))

    # the verbs -------------------------------------------------------------------------------------------------

    def create(self, kind: str, namespace: str, body: dict[str, Any]) -> Obj:
        body = _copy(body if isinstance(body, dict) else dict(body))
        name = body["metadata"]["name"]
        if (kind, namespace, name) in self.objects:
            raise _api_exception(409, "AlreadyExists", f'{kind} "{name}" already exists')
        body["metadata"]["namespace"] = namespace
        if kind == "job":
            body.setdefault("status", {})
        self._store((kind, namespace, name), body)
        return Obj(_copy(body))

    def read(self, kind: str, namespace: str, name: str) -> Obj:
        if (kind, namespace, name) not in self.objects:
            raise _api_exception(404, "NotFound", f'{kind} "{name}" not found')
        return Obj(_copy(self.objects[(kind, namespace, name)]))

    def patch(self, kind: str, namespace: str, name: str, body: dict[str, Any]) -> Obj:
        if (kind, namespace, name) not in self.objects:
            raise _api_exception(404, "NotFound", f'{kind} "{name}" not found')
        updated = _copy(self.objects[(kind, namespace, name)])
        _merge(updated, body)
        self._store((kind, namespace, name), updated)
        return Obj(_copy(updated))

    def replace(self, kind: str, namespace: str, name: str, body: dict[str, Any]) -> Obj:
        if (kind, namespace, name) not in self.objects:
            raise _api_exception(404, "NotFound", f'{kind} "{name}" not found')
        body = _copy(body)
        body.setdefault("metadata", {})["namespace"] = namespace
        self._store((kind, namespace, name), body)
        return Obj(_copy(body))

    def delete(self, kind: str, namespace: str, name: str) -> Obj:
        if (kind, namespace, name) not in self.objects:
            raise _api_exception(404, "NotFound", f'{kind} "{name}" not found')
        self._store((kind, namespace, name), None)
        return Obj({})

    def list(self, kind: str, namespace: str, label_selector: str | None = None) -> SimpleNamespace:
        items = [
            Obj(_copy(body))
            for (k, ns, _), body in sorted(self.objects.items())
            if k == kind and ns == namespace and _matches(body["metadata"].get("labels") or {}, label_selector)
        ]
        return SimpleNamespace(items=items)


def _api_exception(status: int, reason: str, message: str) -> Exception:
    from kubernetes.client.rest import ApiException

    error = ApiException(status=status, reason=reason)
    error.body = json.dumps({"kind": "Status", "message": message, "reason": reason, "code": status})
    return error


_VERB = re.compile(r"^(create|read|patch|replace|delete|list)_namespaced_(\w+)$")


class _Serializer:
    @staticmethod
    def sanitize_for_serialization(obj: Any) -> Any:
        return _copy(dict(obj)) if isinstance(obj, dict) else obj


class ClientApi:
    """What ``client.CoreV1Api()``, ``BatchV1Api()``, ... offer, for one side (operator or pod): each call goes
    to the ApiServer through that side's faults."""

    api_client = _Serializer()

    def __init__(self, server: ApiServer, faults: CallFaults, on_call: Callable[[], None] | None = None) -> None:
        self.server, self.faults, self.on_call = server, faults, on_call

    def __getattr__(self, method: str) -> Any:
        found = _VERB.match(method)
        if not found:
            raise AttributeError(method)
        verb, kind = found.groups()

        def call(*args: Any, **kwargs: Any) -> Any:
            server, rng = self.server, self.server.rng
            server.calls += 1
            if self.on_call is not None:
                self.on_call()
            if self.faults.crash and rng.random() < self.faults.crash:
                raise SimCrash(f"{method}")
            if self.faults.error and rng.random() < self.faults.error:
                raise _api_exception(503, "ServiceUnavailable", "the API server is shutting down (simulated)")
            result: Any
            if verb == "list":
                result = server.list(kind, args[0] if args else kwargs["namespace"], kwargs.get("label_selector"))
            elif verb == "create":
                result = server.create(kind, *args[:2])
            else:
                body = args[2:3]
                result = getattr(server, verb)(kind, args[1], args[0], *body)
            if (
                verb != "read"
                and verb != "list"
                and self.faults.timeout_after
                and rng.random() < self.faults.timeout_after
            ):
                raise ReadTimeoutError(None, "/", "read timed out (simulated, after the write took effect)")  # type: ignore[arg-type]
            return result

        return call


class LaggingCache:
    """The operator's watch-fed indexes of shard Jobs and ConfigMaps (backends.kubernetes.ShardObjectCache): each
    shows the objects as a watch that has seen every event up to ``lag`` seconds ago holds them, the two lagging
    independently and never going back in time. A new cache (a restarted operator) starts from a fresh LIST."""

    def __init__(self, server: ApiServer, job_lag: Callable[[], float], configmap_lag: Callable[[], float]) -> None:
        self.server = server
        self.lags = {"job": job_lag, "config_map": configmap_lag}
        start = len(server.history)
        self.cursor = {"job": start, "config_map": start}
        self.held: dict[str, dict[tuple[str, str], dict[str, Any]]] = {
            kind: {(ns, name): body for (k, ns, name), body in server.objects.items() if k == kind}
            for kind in self.lags
        }

    def _objects(self, kind: str, namespace: str, scan: str) -> list[dict[str, Any]]:
        from hpscan.backends.kubernetes.names import LABEL_ROLE, LABEL_SCAN

        at, history, held = self.server.now - self.lags[kind](), self.server.history, self.held[kind]
        cursor = self.cursor[kind]
        while cursor < len(history) and history[cursor][0] <= at:
            _, (k, ns, name), body = history[cursor]
            if k == kind:
                if body is None:
                    held.pop((ns, name), None)
                else:
                    held[(ns, name)] = body
            cursor += 1
        self.cursor[kind] = cursor
        out = []
        for (ns, _), body in sorted(held.items()):
            labels = body["metadata"].get("labels") or {}
            if ns == namespace and labels.get(LABEL_SCAN) == scan and labels.get(LABEL_ROLE) == "shard":
                out.append(_copy(body))
        return out

    def jobs(self, namespace: str, scan: str) -> list[dict[str, Any]] | None:
        return self._objects("job", namespace, scan)

    def configmaps(self, namespace: str, scan: str) -> list[dict[str, Any]] | None:
        return self._objects("config_map", namespace, scan)
