"""What a site sets once for its operator (the Helm chart's `defaults` values, mounted as a YAML file)."""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import Field, ValidationError

from hpscan.api.common import CamelModel
from hpscan.api.sites import KubernetesSite, Site, Toleration
from hpscan.api.spec import HPScanSpec
from hpscan.api.store import ArtifactStore
from hpscan.core.artifacts import job_store
from hpscan.core.summary import MAX_STATUS_SHARDS
from hpscan.engine import EngineSettings
from hpscan.errors import ManifestError


class OperatorDefaults(CamelModel):
    """Site-wide defaults: the sites of scans that name none, and how this cluster's GPU nodes look."""

    model_config = CamelModel.model_config | {"extra": "ignore"}

    gpu_resource_name: str = Field("nvidia.com/gpu", description="Extended resource counting GPUs on the nodes.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Labels of the GPU nodes.")
    tolerations: list[Toleration] = Field(default_factory=list, description="Tolerations of the GPU nodes' taints.")
    payload_image: str = Field("", description="Reserved: a default payload image (spec.payload.image is required).")
    queue_name: str | None = Field(
        None, description="Kueue LocalQueue of the default site's Jobs (its kubernetes.queueName); none: no Kueue."
    )
    sites: list[Site] = Field(default_factory=list, description="Sites of scans whose spec.sites is empty.")
    artifact_store: ArtifactStore | None = Field(
        None,
        description="Where scans that name no spec.artifacts.store keep their models and their trials' checkpoints "
        "(its Secret in each scan's namespace).",
    )
    allowed_service_accounts: list[str] = Field(
        default_factory=list,
        description="ServiceAccounts a scan's kubernetes site may run its pods under, as namespace/name (* for any "
        "namespace); none by default: pods run under the operator's per-scan account.",
    )
    probe_cache_seconds: int = Field(
        3600,
        ge=0,
        description="How long a site probe's outcome holds for the next scans with the same site, image and check "
        "(0: every scan probes its sites).",
    )
    allowed_priority_classes: list[str] = Field(
        default_factory=list, description="PriorityClasses a scan's kubernetes site may give its pods; none by default."
    )

    def refusals(self, spec: HPScanSpec, namespace: str) -> list[str]:
        """What a scan asks for that only a site admin may grant: a ServiceAccount or PriorityClass for its pods
        that these defaults do not allow. Pure. Sites the scan takes from these defaults are the admin's own."""
        if not spec.sites:
            return []
        refused = []
        for site in spec.sites:
            k8s = site.settings_as(KubernetesSite)
            if k8s is None:
                continue
            account = k8s.service_account_name
            if account and not {f"{namespace}/{account}", f"*/{account}"} & set(self.allowed_service_accounts):
                refused.append(
                    f"site {site.name!r}: serviceAccountName {account!r} is not allowed in namespace {namespace!r} "
                    "(a site admin allows it with the chart value defaults.allowedServiceAccounts)"
                )
            priority = k8s.priority_class_name
            if priority and priority not in self.allowed_priority_classes:
                refused.append(
                    f"site {site.name!r}: priorityClassName {priority!r} is not allowed "
                    "(a site admin allows it with the chart value defaults.allowedPriorityClasses)"
                )
        return refused

    def with_store(self, spec: HPScanSpec) -> HPScanSpec:
        """``spec`` with the store its jobs use (core.artifacts.job_store: this site's when it names none, whether
        it keeps models or only trial checkpoints); pure."""
        store = job_store(spec.artifacts, self.artifact_store)
        if store is spec.artifacts.store:
            return spec
        return spec.model_copy(update={"artifacts": spec.artifacts.model_copy(update={"store": store})})

    def engine_settings(self) -> EngineSettings:
        """The operator's options for every engine step: a status that lists at most MAX_STATUS_SHARDS shards (etcd
        holds it), probe outcomes shared for probeCacheSeconds."""
        return EngineSettings(max_status_shards=MAX_STATUS_SHARDS, probe_cache_seconds=self.probe_cache_seconds)

    def default_sites(self) -> list[Site]:
        """`sites` when given, else one Kubernetes site on this cluster's GPU nodes."""
        if self.sites:
            return self.sites
        node = KubernetesSite(
            node_selector=self.node_selector,
            tolerations=self.tolerations,
            gpu_resource_name=self.gpu_resource_name,
            queue_name=self.queue_name or None,  # the chart writes "" for none
        )
        return [Site.model_validate({"name": "default", "kubernetes": node})]


def load_defaults(path: str | None = None) -> OperatorDefaults:
    """The defaults in HPSCAN_DEFAULTS_FILE (or `path`); built-in ones when there is no file."""
    where = path or os.environ.get("HPSCAN_DEFAULTS_FILE")
    if not where or not Path(where).exists():
        return OperatorDefaults()
    try:
        return OperatorDefaults.model_validate(yaml.safe_load(Path(where).read_text()) or {})
    except (yaml.YAMLError, ValidationError) as error:
        raise ManifestError(f"{where}: not valid operator defaults: {error}") from None
