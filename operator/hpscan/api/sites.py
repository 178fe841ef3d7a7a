"""Where shards run: a site has a name, a weight and exactly one backend block (see hpscan.api.registry)."""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field, GetJsonSchemaHandler, ValidationError, model_validator
from pydantic.json_schema import JsonSchemaValue

from hpscan.api.common import CamelModel, EnvVar, cel_rules

BlockT = TypeVar("BlockT", bound=BaseModel)

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
    image_pull_timeout_seconds: int = Field(
        300,
        ge=0,
        description="How long a shard's pod may fail to pull its image (ErrImagePull, ImagePullBackOff) before the "
        "shard fails with the kubelet's words; a malformed image name fails it at once.",
    )
    ephemeral_storage: str | None = Field(
        "4Gi",
        pattern=r"^[0-9]+(\.[0-9]+)?(k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$",
        description="Local disk request and limit of each shard and probe pod (Kubernetes quantity): its emptyDirs "
        "(shard file, models, checkpoints, /tmp) and logs. A pod that writes more is evicted, not its neighbours; "
        "null: neither (a Kueue ClusterQueue that does not cover ephemeral-storage cannot admit pods that ask).",
    )
    queue_name: str | None = Field(
        None,
        pattern=r"^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$",
        max_length=63,
        description="Kueue LocalQueue (in the HPScan's namespace) that admits the site's shard and probe Jobs: they "
        "get the kueue.x-k8s.io/queue-name label, are created suspended and start when Kueue admits them; "
        "suspending the scan deactivates their Workloads, which frees the quota. Empty: no Kueue.",
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
        "checkpoint_exit_code",
        "transfer_checkpoint_files",
    }
)
"""Submit commands hpscan owns: overriding them would lose results or break idempotent submission (the shard
runner ends an attempt with checkpoint_exit_code, and the checkpoints and results.jsonl must come back with it)."""


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


# The backend blocks (kubernetes:, htcondor:, any backend registered in hpscan.api.registry) are the registry's,
# so they are extra fields: validated by each backend's site model, described in the schema by the hook below.
class Site(CamelModel):
    """One place shards run. Exactly one of the backend blocks is set."""

    name: str = Field(pattern=NAME_PATTERN, max_length=63, description="Site name, shown per shard in the status.")
    weight: int = Field(
        1, ge=1, description="Preference among usable sites: shards go where running shards per weight are fewest."
    )
    max_running: int | None = Field(
        None,
        ge=0,
        description="Shards of the scan running here at once; no limit when empty. 0 sends the site no new shard "
        "(drain it: its running shards finish where they are).",
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=64,
        description="Environment of every job of this site and of its probe, set after payload.env (e.g. the GPU "
        "libraries a site must preload): a site admin fixes a site without touching the scan.",
    )
    probe_timeout_seconds: int = Field(
        600,
        ge=10,
        description="A site whose GPU probe has not ended this long after it was sent is Unreachable (its shards "
        "go to other sites); it is probed again after as long again.",
    )
    hold_timeout_seconds: int = Field(
        1800,
        ge=10,
        description="A shard held by the batch system (an HTCondor hold) this long is removed and moved to another "
        "usable site, keeping what it recorded.",
    )

    model_config = CamelModel.model_config | {"extra": "allow"}

    @model_validator(mode="after")
    def _one_backend(self) -> Site:
        from hpscan.api.registry import entries

        known = entries()
        blocks = {key: value for key, value in (self.__pydantic_extra__ or {}).items() if value is not None}
        errors: list[Any] = []
        for key, value in blocks.items():
            if key not in known:
                errors.append({"type": "extra_forbidden", "loc": (key,), "input": value})
                continue
            try:
                self.__pydantic_extra__[key] = known[key].model().model_validate(value)  # type: ignore[index]
            except ValidationError as error:  # keep each problem's path below the block, e.g. htcondor.executable
                errors += [_nested(key, item) for item in error.errors()]
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        if len(blocks) != 1:
            raise ValueError(f"a site needs exactly one backend block: {' or '.join(known)}")
        return self

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        from hpscan.api.registry import entries

        schema = handler(core_schema)
        target = handler.resolve_ref_schema(schema)
        known = entries()
        for name, entry in known.items():
            block = handler(entry.model().__pydantic_core_schema__)
            target["properties"][name] = {**block, "description": entry.description}
        target["additionalProperties"] = False
        has = ", ".join(f"has(self.{name})" for name in known)
        target["x-kubernetes-validations"] = [
            {
                "rule": f"[{has}].filter(b, b).size() == 1",
                "message": f"a site needs exactly one backend block: {' or '.join(known)}",
            }
        ]
        return schema

    @property
    def backend(self) -> str:
        """Name of the backend that runs this site's shards (its one block's key)."""
        return next(iter(self.__pydantic_extra__ or {}))

    @property
    def settings(self) -> BaseModel:
        """The site's backend block, as that backend's site model."""
        block = (self.__pydantic_extra__ or {})[self.backend]
        assert isinstance(block, BaseModel)
        return block

    def settings_as(self, model: type[BlockT]) -> BlockT | None:
        """The backend block when it is a ``model`` (e.g. HTCondorSite), else None."""
        block = self.settings
        return block if isinstance(block, model) else None


def _nested(key: str, item: Any) -> Any:
    """A block's validation error as an error of the site, one level deeper (InitErrorDetails)."""
    detail = {"type": item["type"], "loc": (key, *item["loc"]), "input": item.get("input")}
    if item.get("ctx"):
        detail["ctx"] = item["ctx"]
    return detail
