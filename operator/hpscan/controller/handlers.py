"""kopf handlers, kept thin: fetch, call reconcile_scan, patch the status, post events.

One timer per HPScan reconciles every few seconds (live results reach the status within that interval);
the backends are created once at startup and shared. kopf's bookkeeping uses hpscan.io names, never kopf's
defaults, so other kopf operators on the cluster never mistake our objects for theirs (and vice versa).
"""

from __future__ import annotations

import base64
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

import kopf
from kubernetes import client

from hpscan.api.spec import GROUP, PLURAL, VERSION
from hpscan.backends.base import Backend
from hpscan.controller import metrics
from hpscan.controller.defaults import OperatorDefaults, load_defaults
from hpscan.controller.reconcile import reconcile_scan, scan_ref
from hpscan.results import Aggregate

RECONCILE_SECONDS = 2.0


class _QuietTimer(logging.Filter):
    """A reconcile every two seconds is routine: keep its success lines out of the log, keep everything else."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timer 'reconcile' succeeded")


FINALIZER = "hpscan.io/finalizer"

BACKENDS: dict[str, Backend] = {}
DEFAULTS = OperatorDefaults()
MEMORY: dict[str, Aggregate] = {}
"""Each scan's plan and records so far, by uid."""


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="hpscan.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="hpscan.io", key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    logging.getLogger("kopf.objects").addFilter(_QuietTimer())
    settings.watching.server_timeout = 60
    settings.execution.max_workers = 8
    if "kubernetes" not in BACKENDS:
        from hpscan.backends.kubernetes import SUBMIT_THREADS, KubernetesBackend, load_client_config

        load_client_config()
        configuration = client.Configuration.get_default_copy()
        configuration.connection_pool_maxsize = SUBMIT_THREADS  # one kept-alive connection per submitting thread
        BACKENDS["kubernetes"] = KubernetesBackend(metrics.count_api_requests(client.ApiClient(configuration)))
    if "htcondor" not in BACKENDS:
        add_htcondor_backend()
    global DEFAULTS
    DEFAULTS = load_defaults()


def add_htcondor_backend() -> None:
    """The HTCondor backend, when the bindings are installed (the `condor` extra); its sandboxes live in
    HPSCAN_CONDOR_DIR (an emptyDir or a volume in the operator's pod)."""
    try:
        from hpscan.backends.htcondor import HTCondorBackend
    except ImportError:
        logging.getLogger(__name__).info("htcondor2 bindings not installed: htcondor sites are refused")
        return

    def read_secret(namespace: str, name: str, key: str) -> str:
        secret = client.CoreV1Api().read_namespaced_secret(name, namespace)
        return base64.b64decode((secret.data or {})[key]).decode()

    BACKENDS["htcondor"] = HTCondorBackend(
        Path(os.environ.get("HPSCAN_CONDOR_DIR", "/var/lib/hpscan/condor")), read_secret=read_secret
    )


@kopf.timer(GROUP, VERSION, PLURAL, interval=RECONCILE_SECONDS, sharp=False)
def reconcile(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    with metrics.timed_reconcile():
        outcome = reconcile_scan(body, BACKENDS, MEMORY, DEFAULTS.default_sites())
    if outcome.status is not None:
        status = outcome.status
        patch.status.update(status.model_dump(mode="json", by_alias=True, exclude_none=True))
        metrics.observe_scan(
            body.get("metadata", {}).get("uid", ""),
            str(status.phase),
            dict(Counter(str(s.phase) for s in status.shards)),
            status.combinations.model_dump(exclude={"total"}),
        )
    for event in outcome.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)


@kopf.on.delete(GROUP, VERSION, PLURAL)
def forget(body: kopf.Body, **_: Any) -> None:
    """Owned Jobs, ConfigMaps and RBAC go by garbage collection; other backends release their jobs here
    (an error, e.g. a schedd that does not answer, makes kopf retry before the finalizer goes)."""
    ref = scan_ref(body)
    for backend in BACKENDS.values():
        backend.forget(ref)
    MEMORY.pop(ref.uid, None)
    metrics.forget_scan(ref.uid)
