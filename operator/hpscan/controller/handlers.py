"""kopf handlers, kept thin: fetch, call reconcile_scan, patch the status, post events.

One timer per HPScan reconciles every few seconds (live results reach the status within that interval). The
operator's state lives in kopf's memo (``memo.hpscan``, an OperatorState), never in module globals: the
backends, built once at startup from hpscan.api.registry, the site defaults, and each scan's records so far.
kopf's bookkeeping uses hpscan.io names, never kopf's defaults, so other kopf operators on the cluster never
mistake our objects for theirs (and vice versa).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import kopf
from kubernetes import client

from hpscan.api import registry
from hpscan.api.spec import GROUP, PLURAL, VERSION
from hpscan.backends.base import Backend, BackendContext
from hpscan.controller import health, metrics
from hpscan.controller.defaults import OperatorDefaults, load_defaults
from hpscan.controller.reconcile import reconcile_scan, scan_ref
from hpscan.core.results import Aggregate
from hpscan.core.search import Search
from hpscan.engine import EngineSettings, ProbeCache

RECONCILE_SECONDS = 2.0
FINALIZER = "hpscan.io/finalizer"
log = logging.getLogger(__name__)


@dataclass
class OperatorState:
    """What the handlers share, kept in ``memo.hpscan``."""

    backends: dict[str, Backend] = field(default_factory=dict)
    defaults: OperatorDefaults = field(default_factory=OperatorDefaults)
    settings: EngineSettings = field(default_factory=lambda: OperatorDefaults().engine_settings())
    """The engine's options for every step, from the defaults (built at startup)."""
    aggregates: dict[str, Aggregate] = field(default_factory=dict)
    """Each scan's plan and records so far, by uid."""
    searches: dict[str, Search] = field(default_factory=dict)
    """The trials of each scan whose workers pull, by uid (rebuilt from the backends after a restart)."""
    probes: ProbeCache = field(default_factory=dict)
    """Site probe outcomes that scans share (hpscan.engine.probe_key)."""
    vitals: health.Vitals = field(default_factory=lambda: health.Vitals(check_api=lambda: None))
    """What the health endpoints read (`hpscan operator` gives one that asks the API server)."""


class _QuietTimer(logging.Filter):
    """A reconcile every two seconds is routine: keep its success lines out of the log, keep everything else."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timer 'reconcile' succeeded")


def read_secret(namespace: str, name: str, key: str) -> str:
    """A key of a Secret in a scan's namespace (e.g. a site's HTCondor IDTOKEN)."""
    secret = client.CoreV1Api().read_namespaced_secret(name, namespace)
    return base64.b64decode((secret.data or {})[key]).decode()


def build_backends(context: BackendContext, names: Iterable[str] | None = None) -> dict[str, Backend]:
    """One backend per registry entry (or per name given) whose client library is installed; a missing one is
    logged, and scans whose sites need it are refused with a clear condition (reconcile_scan's
    BackendUnavailable)."""
    backends = {}
    for name in registry.entries() if names is None else names:
        try:
            backends[name] = registry.resolve(name, "factory")(context)
        except registry.RegistryError as error:
            log.info("%s: its sites are refused", error)
    return backends


def state_of(memo: Any) -> OperatorState:
    state = getattr(memo, "hpscan", None)
    if state is None:  # handlers called before startup (tests) or a memo of another operator
        state = memo.hpscan = OperatorState()
    return state


def status_changed(current: Any, wanted: dict[str, Any]) -> bool:
    """Whether patching ``wanted`` over the object's status would change it (kopf merge-patches the status)."""
    return any(current.get(key) != value for key, value in wanted.items())


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="hpscan.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="hpscan.io", key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    logging.getLogger("kopf.objects").addFilter(_QuietTimer())
    settings.watching.server_timeout = 60
    settings.execution.max_workers = 8
    state = state_of(memo)
    context = BackendContext(instrument=metrics.count_api_requests, read_secret=read_secret)
    state.backends = {**build_backends(context), **state.backends}  # backends given in the memo win (tests)
    state.defaults = load_defaults()
    state.settings = state.defaults.engine_settings()
    state.vitals.started = True


@kopf.on.startup()
async def start_heartbeat(memo: kopf.Memo, **_: Any) -> None:
    """The event loop's heartbeat, which /livez reads; kopf cancels the task when the operator stops."""
    vitals = state_of(memo).vitals
    memo.hpscan_heartbeat = asyncio.get_running_loop().create_task(vitals.beat(), name="hpscan-heartbeat")


# Watch-fed indexes of the shard Jobs and record pages (ConfigMaps; an informer cache): a reconcile reads them instead of
# listing, so an idle scan costs no request and a busy one costs the watch events of what changed.
SHARD_OBJECTS = {"hpscan.io/role": "shard", "app.kubernetes.io/managed-by": "hpscan"}


@kopf.index("batch", "v1", "jobs", labels=SHARD_OBJECTS)
def shard_jobs(
    namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> dict[tuple[str | None, str], Any]:
    return {(namespace, labels.get("hpscan.io/scan", "")): copy.deepcopy(dict(body))}


@kopf.index("", "v1", "configmaps", labels=SHARD_OBJECTS)
def shard_configmaps(
    namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> dict[tuple[str | None, str], Any]:
    # A record page's managedFields name each of its records again: the backend needs only name and resourceVersion.
    metadata = {k: v for k, v in body.metadata.items() if k != "managedFields"}
    return {(namespace, labels.get("hpscan.io/scan", "")): {"metadata": metadata, "data": body.get("data")}}


@dataclass(frozen=True)
class IndexCache:
    """The indexes above, as a backend's ``use_watch_cache`` takes them (the Kubernetes backend's ShardObjectCache)."""

    jobs_index: kopf.Index[tuple[str, str], Any]
    configmaps_index: kopf.Index[tuple[str, str], Any]

    def jobs(self, namespace: str, scan: str) -> list[dict[str, Any]]:
        return list(self.jobs_index.get((namespace, scan), []))

    def configmaps(self, namespace: str, scan: str) -> list[dict[str, Any]]:
        return list(self.configmaps_index.get((namespace, scan), []))


@kopf.timer(GROUP, VERSION, PLURAL, interval=RECONCILE_SECONDS, sharp=False)
def reconcile(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **kwargs: Any) -> None:
    state = state_of(memo)
    for backend in state.backends.values():  # kopf passes the indexes by name; backends that need none ignore them
        backend.use_watch_cache(IndexCache(kwargs["shard_jobs"], kwargs["shard_configmaps"]))
    meta = body.get("metadata", {})
    with state.vitals.reconciling(f"{meta.get('namespace')}/{meta.get('name')}"), metrics.timed_reconcile():
        outcome = reconcile_scan(
            body,
            state.backends,
            state.aggregates,
            state.defaults,
            state.probes,
            read_secret=read_secret,
            searches=state.searches,
            settings=state.settings,
        )
    if outcome.status is not None:
        status = outcome.status
        wanted = status.model_dump(mode="json", by_alias=True, exclude_none=True)
        if status_changed(body.get("status") or {}, wanted):  # an unchanged status costs no request
            patch.status.update(wanted)
        metrics.observe_scan(
            body.get("metadata", {}).get("uid", ""),
            str(status.phase),
            dict(Counter(str(s.phase) for s in status.shards)),
            status.combinations.model_dump(exclude={"total"}),
        )
    for event in outcome.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)


@kopf.on.delete(GROUP, VERSION, PLURAL)
def forget(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Owned Jobs, ConfigMaps and RBAC go by garbage collection; other backends release their jobs here
    (an error, e.g. a schedd that does not answer, makes kopf retry before the finalizer goes)."""
    state = state_of(memo)
    ref = scan_ref(body)
    for backend in state.backends.values():
        backend.forget(ref)
    state.aggregates.pop(ref.uid, None)
    state.searches.pop(ref.uid, None)
    metrics.forget_scan(ref.uid)
