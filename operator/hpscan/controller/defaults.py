"""What a site sets once for its operator (the Helm chart's `defaults` values, mounted as a YAML file)."""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import Field, ValidationError

from hpscan.api.common import CamelModel
from hpscan.api.sites import KubernetesSite, Site, Toleration
from hpscan.errors import ManifestError


class OperatorDefaults(CamelModel):
    """Site-wide defaults: the sites of scans that name none, and how this cluster's GPU nodes look."""

    model_config = CamelModel.model_config | {"extra": "ignore"}

    gpu_resource_name: str = Field("nvidia.com/gpu", description="Extended resource counting GPUs on the nodes.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Labels of the GPU nodes.")
    tolerations: list[Toleration] = Field(default_factory=list, description="Tolerations of the GPU nodes' taints.")
    payload_image: str = Field("", description="Reserved: a default payload image (spec.payload.image is required).")
    sites: list[Site] = Field(default_factory=list, description="Sites of scans whose spec.sites is empty.")

    def default_sites(self) -> list[Site]:
        """`sites` when given, else one Kubernetes site on this cluster's GPU nodes."""
        if self.sites:
            return self.sites
        node = KubernetesSite(
            node_selector=self.node_selector, tolerations=self.tolerations, gpu_resource_name=self.gpu_resource_name
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
