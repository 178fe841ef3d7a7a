"""The ``slurm:`` block of a site (registered in hpscan.api.registry; this module imports nothing of the backend,
so the API layer and the CRD read it without the operator's dependencies)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from hpscan.api.common import CamelModel, cel_rules


class SlurmTokenRef(CamelModel):
    """A Kubernetes Secret holding a Slurm JWT (``scontrol token`` or signed with the centre's jwt_key)."""

    name: str = Field(description="Name of the Secret in the HPScan's namespace.")
    key: str = Field("token", description="Key in the Secret whose value is the JWT (SLURM_JWT).")


class SlurmSite(CamelModel):
    """Submit shards as Slurm batch jobs through the centre's REST API (slurmrestd, OpenAPI v0.0.38, JWT auth), or
    with Slurm's commands where hpscan runs on a login node. Jobs run as the token's user (or the login node's);
    their working folders live on the centre's shared file system (``spool``), which is also the live channel: the
    operator reads records and writes trials there, so no job needs an inbound connection (docs/slurm.md)."""

    interface: Literal["rest", "commands"] = Field(
        "rest",
        description="How hpscan reaches Slurm: rest (slurmrestd at restUrl, with the user's JWT) or commands "
        "(sbatch, squeue --json and scancel where hpscan runs: a login node, as the user who runs it; with a token, "
        "as the token's user where the centre accepts JWT for its commands).",
    )
    rest_url: str | None = Field(
        None,
        pattern=r"^https?://[^\s/]+(/[^\s]*)?$",
        description="Base URL of the centre's slurmrestd, e.g. https://slurm.example.org:6820 (the API version "
        "path, /slurm/v0.0.38, is added by hpscan). Required with interface rest.",
    )
    user: str = Field(
        pattern=r"^[a-z_][a-z0-9_.-]*$",
        max_length=64,
        description="The centre's user name the token belongs to (X-SLURM-USER-NAME): jobs run as this user.",
    )
    token_secret: SlurmTokenRef | None = Field(
        None,
        description="The user's JWT from a Secret in the HPScan's namespace (read per namespace: a scan can use "
        "only its own namespace's Secrets); the operator's SLURM_JWT environment variable when empty.",
    )
    spool: str = Field(
        pattern=r"^/",
        description="Absolute folder on the centre's shared file system, writable by `user` and mounted at the "
        "same path where the operator runs: each shard's shard file, results.jsonl, trials and logs live below it.",
    )
    partition: str | None = Field(None, description="Partition (queue) of the jobs; the cluster's default when empty.")
    account: str | None = Field(None, description="Account the jobs are charged to; the user's default when empty.")
    qos: str | None = Field(None, description="Quality of service of the jobs; the association's default when empty.")
    time_limit_minutes: int | None = Field(
        None, ge=1, description="Time limit of each shard job in minutes; the partition's default when empty."
    )
    gres: str | None = Field(
        None,
        pattern=r"^[a-zA-Z0-9_:,./-]+$",
        description="Generic resources per node, e.g. gpu:a100:1. Empty: gpu:<spec.gpu.count> when the scan asks "
        "for GPUs, none otherwise.",
    )
    constraint: str | None = Field(None, description="Node features the jobs require (sbatch --constraint).")
    cpus: int = Field(1, ge=1, description="CPU cores per shard job (cpus-per-task).")
    memory: str = Field(
        "8G",
        pattern=r"^[0-9]+[KMGT]?$",
        description="Memory per shard job (per node), with Slurm's units K, M (the default), G or T.",
    )
    runner: str = Field(
        "hpscan",
        description="The hpscan command on the compute nodes that runs the shard runner (hpscan shard-run), e.g. "
        "/cvmfs/sw.example.org/hpscan/bin/hpscan or a wrapper that enters the payload's container.",
    )
    setup: list[str] = Field(
        default_factory=list,
        max_length=32,
        description="Shell lines the job script runs before the shard runner, e.g. `module load cuda/12`.",
    )
    path: str = Field(
        "/usr/local/bin:/usr/bin:/bin",
        description="PATH of the jobs (before payload.env and the site's env): where the payload command is found.",
    )
    requeue: bool = Field(
        True,
        description="Let Slurm requeue a job whose node failed or that was preempted (it resumes from its "
        "results.jsonl); other failures are retried by hpscan, up to spec.retries.",
    )

    model_config = CamelModel.model_config | {
        "json_schema_extra": cel_rules(
            (
                "(has(self.interface) && self.interface == 'commands') || has(self.restUrl)",
                "slurm.restUrl is required with interface rest (or set interface: commands)",
            ),
        )
    }

    @model_validator(mode="after")
    def _rest_needs_its_url(self) -> SlurmSite:
        if self.interface == "rest" and not self.rest_url:
            raise ValueError("slurm.restUrl is required with interface rest (or set interface: commands)")
        return self
