"""Where shards run: each site has exactly one backend block (kubernetes or htcondor)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from hpscan.api.common import CamelModel, cel_rules

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class Toleration(CamelModel):
    """A Kubernetes toleration, so shards may land on tainted GPU nodes (core/v1 Toleration)."""

    key: str | None = Field(None, description="Taint key the toleration applies to; empty matches all keys.")
    operator: Literal["Exists", "Equal"] | None = Field(None, description="Exists or Equal (the default).")
    value: str | None = Field(None, description="Taint value the toleration matches (with operator Equal).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to match; empty matches all effects."
    )
    toleration_seconds: int | None = Field(None, description="How long a NoExecute taint is tolerated, in seconds.")


class KubernetesSite(CamelModel):
    """Run shards as batch/v1 Jobs in the HPScan's namespace of the cluster the operator watches."""

    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels a shard's pod must match, e.g. nvidia.com/gpu.present: 'true'."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Tolerations for the taints that keep ordinary pods off GPU nodes."
    )
    gpu_resource_name: str = Field(
        "nvidia.com/gpu", description="Extended resource that counts GPUs on this site's nodes (e.g. amd.com/gpu)."
    )
    priority_class_name: str | None = Field(None, description="PriorityClass of the shard pods.")
    service_account_name: str | None = Field(
        None, description="ServiceAccount of the shard pods; the operator's per-scan account when empty."
    )


class TokenSecretRef(CamelModel):
    """A Kubernetes Secret holding an HTCondor IDTOKEN."""

    name: str = Field(description="Name of the Secret in the HPScan's namespace.")
    key: str = Field("token", description="Key in the Secret whose value is the IDTOKEN.")


RESERVED_SUBMIT_COMMANDS = frozenset(
    {
        "queue",
        "initialdir",
        "transfer_input_files",
        "transfer_output_files",
        "when_to_transfer_output",
        "leave_in_queue",
        "arguments",
    }
)
"""Submit commands hpscan owns: overriding them would lose results or break idempotent submission."""


class HTCondorSite(CamelModel):
    """Submit shards as HTCondor jobs to an access point (schedd), e.g. a WLCG grid site."""

    schedd: str | None = Field(
        None, description="Name of the schedd (access point); the local schedd when both schedd and pool are empty."
    )
    pool: str | None = Field(None, description="Central manager (collector) host[:port]; the local config when empty.")
    token_secret: TokenSecretRef | None = Field(
        None, description="IDTOKEN from a Kubernetes Secret; the environment's credentials when empty."
    )
    universe: Literal["container", "vanilla"] = Field(
        "container", description="container runs payload.image; vanilla runs `executable` on the worker."
    )
    container_image: str | None = Field(
        None,
        description="Image for the container universe (docker://..., or a .sif path); docker:// + payload.image when empty.",
    )
    executable: str | None = Field(
        None,
        description="Program the vanilla universe starts with the shard runner's command line as its arguments "
        '(e.g. /usr/bin/env, or a wrapper that sets up hpscan and the payload and runs "$@"). Required with vanilla.',
    )
    transfer_executable: bool = Field(
        False, description="Ship `executable` from the operator with each job instead of using the worker's copy."
    )
    request_cpus: int = Field(1, ge=1, description="CPU cores per shard job.")
    request_memory: str = Field(
        "8GB", pattern=r"^\d+(\.\d+)?\s*([KMGT]B?)?$", description="Memory per shard job, with unit (e.g. 8GB)."
    )
    request_disk: str = Field(
        "4GB", pattern=r"^\d+(\.\d+)?\s*([KMGT]B?)?$", description="Scratch disk per shard job, with unit (e.g. 4GB)."
    )
    requirements: str | None = Field(
        None, description="Extra ClassAd requirements expression, and-ed with the GPU ones."
    )
    accounting_group: str | None = Field(None, description="accounting_group of the jobs.")
    extra_submit: dict[str, str] = Field(
        default_factory=dict,
        description="Further submit commands, passed through verbatim after hpscan's own (so they may override "
        "e.g. request_gpus); the transfer, queue and HPScan* commands that hpscan relies on are refused.",
    )
    max_retries: int | None = Field(None, ge=0, description="max_retries of each job; spec.retries when empty.")

    model_config = CamelModel.model_config | {
        "json_schema_extra": cel_rules(
            (
                "!has(self.universe) || self.universe != 'vanilla' || has(self.executable)",
                "htcondor.executable is required with universe: vanilla",
            )
        )
    }

    @model_validator(mode="after")
    def _check(self) -> HTCondorSite:
        if self.universe == "vanilla" and not self.executable:
            raise ValueError("htcondor.executable is required with universe: vanilla")
        for key in self.extra_submit:
            bare = key.lower().removeprefix("+").removeprefix("my.")
            if bare in RESERVED_SUBMIT_COMMANDS or bare.startswith("hpscan"):
                raise ValueError(f"htcondor.extraSubmit: {key!r} is set by hpscan and cannot be overridden")
        return self

    @property
    def remote(self) -> bool:
        """Whether the schedd is another machine's (located through a collector): inputs are spooled to it and
        outputs retrieved from it."""
        return self.schedd is not None or self.pool is not None


class Site(CamelModel):
    """One place shards run. Exactly one of the backend blocks is set."""

    name: str = Field(pattern=NAME_PATTERN, max_length=63, description="Site name, shown per shard in the status.")
    weight: int = Field(1, ge=1, description="Relative share of the shards this site receives.")
    kubernetes: KubernetesSite | None = Field(None, description="Run shards as Kubernetes Jobs.")
    htcondor: HTCondorSite | None = Field(None, description="Run shards as HTCondor jobs.")

    model_config = CamelModel.model_config | {
        "json_schema_extra": cel_rules(
            (
                "[has(self.kubernetes), has(self.htcondor)].filter(b, b).size() == 1",
                "a site needs exactly one backend block: kubernetes or htcondor",
            )
        )
    }

    @model_validator(mode="after")
    def _one_backend(self) -> Site:
        if (self.kubernetes is None) == (self.htcondor is None):
            raise ValueError("a site needs exactly one backend block: kubernetes or htcondor")
        return self

    @property
    def backend(self) -> str:
        """Name of the backend that runs this site's shards."""
        return "kubernetes" if self.kubernetes is not None else "htcondor"
