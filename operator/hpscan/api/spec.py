"""The HPScan resource: spec (what the user asks for) and the whole object as read from a manifest."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from hpscan.api.common import CamelModel, EnvVar, cel_rules
from hpscan.api.contract import GPURequest, Objective
from hpscan.api.parameters import MAX_PARAMETERS, Parameter
from hpscan.api.registry import entries
from hpscan.api.sites import NAME_PATTERN, Site
from hpscan.api.status import HPScanStatus
from hpscan.api.store import ArtifactStore

GROUP = "hpscan.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "HPScan"
PLURAL = "hpscans"
SINGULAR = "hpscan"
SHORT_NAMES = ["hps"]

ADAPTIVE_STRATEGIES = frozenset({"tpe", "cmaes", "qmc", "nsga2"})
"""Strategies whose next trials depend on the results so far (Optuna's samplers): their workers pull trials."""


class Sampling(CamelModel):
    """How combinations are drawn from the axes: all of them, a random set, or adaptively (Optuna's samplers)."""

    strategy: Literal["grid", "random", "tpe", "cmaes", "qmc", "nsga2"] = Field(
        "grid",
        description="grid: every combination; random: `samples` of them, drawn up front; tpe, cmaes, qmc, nsga2: "
        "`samples` trials suggested one by one by Optuna's TPE, CMA-ES, quasi-Monte Carlo or NSGA-II sampler from "
        "the results so far (workers pull them, see sharding.pull). With several objectives: tpe, nsga2, qmc, "
        "random or grid (CMA-ES has no multi-objective form).",
    )
    samples: int | None = Field(
        None, ge=1, description="The budget: combinations drawn (random) or trials suggested (tpe, cmaes, qmc, nsga2)."
    )
    seed: int = Field(0, ge=0, description="Seed of the draw or of the sampler: the same seed gives the same draws.")
    trials_per_worker: int = Field(
        2,
        ge=1,
        le=64,
        description="With pulling workers: trials a worker holds at once (one it trains and the next, so it never "
        "waits for a suggestion; a payload that trains several side by side, like dl1's settings.fuse, may want "
        "more). Fewer is more adaptive.",
    )

    model_config = CamelModel.model_config | {
        "json_schema_extra": cel_rules(
            ("self.strategy == 'grid' || has(self.samples)", "random, tpe, cmaes, qmc and nsga2 sampling need samples")
        )
    }

    @property
    def adaptive(self) -> bool:
        """Whether trials are suggested from the results so far (not planned up front)."""
        return self.strategy in ADAPTIVE_STRATEGIES

    @model_validator(mode="after")
    def _check(self) -> Sampling:
        if self.strategy != "grid" and self.samples is None:
            raise ValueError(f"{self.strategy} sampling needs samples (the budget)")
        return self


class EarlyStopping(CamelModel):
    """Stopping hopeless trials early from their per-epoch losses (Optuna's pruners), decided by hpscan and sent
    to the worker, which stops the trial at its next epoch boundary and records it as pruned; with asha the worker
    also gets the rung thresholds and stops a trial at its rung itself (docs/search.md)."""

    strategy: Literal["asha", "median", "none"] = Field(
        "none",
        description="asha: asynchronous successive halving (a trial goes on past a rung only when it is among the "
        "best 1/reductionFactor there); median: stop a trial worse than the median of the others at the same "
        "epoch; none: every trial trains to the end.",
    )
    min_epochs: int = Field(
        1, ge=1, description="Epochs every trial trains before it can be stopped (asha's first rung)."
    )
    reduction_factor: int = Field(3, ge=2, le=16, description="asha: the share kept at each rung is 1/this.")


class Sharding(CamelModel):
    """How combinations are cut into shards (one job each): give exactly one of the two fields."""

    shards: int | None = Field(None, ge=1, le=1000, description="Number of shards.")
    combinations_per_shard: int | None = Field(
        None, ge=1, description="Combinations per shard; the last ones get fewer."
    )
    pull: bool | None = Field(
        None,
        description="Shards are workers that pull their next trials while they run (a fast worker takes more, so "
        "none straggles) instead of getting a fixed list. Default: true for tpe, cmaes, qmc, nsga2 and with early "
        "stopping (they need it), false for grid and random.",
    )

    model_config = CamelModel.model_config | {
        "json_schema_extra": cel_rules(
            (
                "has(self.shards) != has(self.combinationsPerShard)",
                "sharding needs exactly one of shards or combinationsPerShard",
            )
        )
    }

    @model_validator(mode="after")
    def _check(self) -> Sharding:
        if (self.shards is None) == (self.combinations_per_shard is None):
            raise ValueError("sharding needs exactly one of shards or combinationsPerShard")
        return self


class Payload(CamelModel):
    """The container every shard runs; it reads a shard file and writes result records (see the contract)."""

    image: str = Field(min_length=1, description="Container image of the payload.")
    command: list[str] = Field(
        default_factory=lambda: ["dl1", "train-shard"],
        min_length=1,
        description="Command run with the shard file and output folder appended.",
    )
    env: list[EnvVar] = Field(default_factory=list, description="Extra environment of the payload.")
    gpu_check: list[str] = Field(
        default_factory=lambda: ["dl1", "gpu-check", "--require"],
        description="The site probe (the paper's GPU test container): run once per site, in the payload image with "
        "the shards' GPU request, before the site gets shards of a scan with gpu.required. Exit 0: the site is "
        "usable; exit 3: its GPUs are not, and it is excluded for the scan. An empty list sends no probe.",
    )
    settings: dict[str, Any] = Field(
        default_factory=dict, description="Opaque settings passed to the payload in every shard file (epochs, data...)."
    )
    cpu: str = Field("2", description="CPU request of a shard (Kubernetes quantity).")
    memory: str = Field("8Gi", description="Memory request and limit of a shard (Kubernetes quantity).")
    timeout_seconds: int | None = Field(
        None,
        ge=60,
        description="Wall-clock limit of one shard attempt, in seconds (a pod's activeDeadlineSeconds, HTCondor's "
        "allowed_execute_duration); an attempt past it fails and is retried up to spec.retries.",
    )


class FailurePolicy(CamelModel):
    """When a scan counts as failed."""

    max_failed_combinations: int | None = Field(
        None, ge=0, description="Fail the scan when more combinations fail (e.g. diverge); no limit when empty."
    )


class Artifacts(CamelModel):
    """Which trained models a scan keeps (the payload saves one folder per combination; hpscan prunes)."""

    keep: Literal["top", "all", "none"] = Field(
        "top",
        description="top: the `top` best combinations' models, plus the median and the worst (the report compares "
        "best, median and worst); all: every succeeded combination's model; none: the payload saves no model.",
    )
    top: int = Field(3, ge=1, le=1000, description="With keep: top, how many of the best combinations' models.")
    store: ArtifactStore | None = Field(
        None,
        description="Where Kubernetes and HTCondor shards keep their models (local runs use the run folder): "
        "<prefix>/<namespace>/<scan>/<combination id>/ in an S3 bucket; the operator's default store "
        "(defaults.artifactStore) when empty. Without a store, cluster scans keep no models. Trial checkpoints "
        "are kept there too (<scan>/_checkpoints/), whatever `keep` says: by Kubernetes shards, and by the operator "
        "for HTCondor and Slurm shards that move to another site.",
    )

    @property
    def save_models(self) -> bool:
        """Whether payloads are asked to save models at all."""
        return self.keep != "none"


MAX_OBJECTIVES = 3
"""Objectives a multi-objective scan may have: beyond three a Pareto front is too large to read or search well."""

SINGLE_OBJECTIVE_STRATEGIES = frozenset({"cmaes"})
"""Samplers Optuna has no multi-objective form of."""

_NO_OBJECTIVE_GIVEN = "(self.objective.metric == 'val_loss' && self.objective.goal == 'minimize')"


class HPScanSpec(CamelModel):
    """A hyperparameter scan: axes, objective, payload, GPU needs and the sites that run it."""

    objective: Objective = Field(
        default_factory=Objective,
        description="The metric to optimise and its direction; with `objectives`, the first of them (it orders "
        "status.top and picks the report's best, median and worst).",
    )
    objectives: list[Objective] | None = Field(
        None,
        min_length=2,
        max_length=MAX_OBJECTIVES,
        description="Several metrics optimised at once (2 or 3, e.g. light and c rejection at 77%): a "
        "multi-objective scan whose status holds the Pareto set (status.pareto). Instead of `objective` (give one "
        "or the other); no early stopping; sampling tpe, nsga2, qmc, random or grid.",
    )
    parameters: list[Parameter] = Field(
        min_length=1, max_length=MAX_PARAMETERS, description="The axes of the scan, in order; each has a unique name."
    )
    sampling: Sampling = Field(
        default_factory=Sampling, description="grid (every combination), random, or adaptive (tpe, cmaes, qmc)."
    )
    early_stopping: EarlyStopping = Field(
        default_factory=EarlyStopping, description="Stop hopeless trials early (asha, median) from per-epoch losses."
    )
    sharding: Sharding = Field(description="How combinations are cut into shards (one GPU job each).")
    parallelism: int | None = Field(
        None, ge=1, description="Shards running at once, all sites together; no limit when empty."
    )
    retries: int = Field(2, ge=0, le=20, description="How often a failed shard is retried before it fails for good.")
    suspend: bool = Field(
        False, description="Pause the scan: no new shards start, running ones stop, nothing recorded is lost."
    )
    failure_policy: FailurePolicy = Field(default_factory=FailurePolicy, description="When the scan counts as failed.")
    gpu: GPURequest = Field(default_factory=GPURequest, description="GPU needs of each shard.")
    payload: Payload = Field(description="The container each shard runs.")
    sites: list[Site] = Field(
        default_factory=list, max_length=64, description="Where shards run; the operator's default site when empty."
    )
    top_k: int = Field(5, ge=1, le=50, description="How many of the best combinations the status lists.")
    artifacts: Artifacts = Field(
        default_factory=Artifacts,
        description="Trained models kept after the scan (local runs: RUN/models/<id>/; clusters: artifacts.store; "
        "listed by `hpscan models`).",
    )

    model_config = CamelModel.model_config | {
        "json_schema_extra": cel_rules(
            (
                "self.parameters.all(p, self.parameters.exists_one(q, q.name == p.name))",
                "parameter names must be unique",
            ),
            (  # sites has no default in the CRD: a scan without sites (the operator's default site) is valid
                "!has(self.sites) || self.sites.all(s, self.sites.exists_one(t, t.name == s.name))",
                "site names must be unique",
            ),
            (
                f"!has(self.objectives) || {_NO_OBJECTIVE_GIVEN} || (self.objective.metric == "
                "self.objectives[0].metric && self.objective.goal == self.objectives[0].goal)",
                "give objective or objectives, not both",
            ),
            (
                "!has(self.objectives) || self.objectives.all(o, self.objectives.exists_one(p, p.metric == o.metric))",
                "objectives must name different metrics",
            ),
            (
                "!has(self.objectives) || self.earlyStopping.strategy == 'none'",
                "early stopping judges one metric per epoch: a scan with several objectives needs "
                "earlyStopping.strategy: none",
            ),
            (
                "!has(self.objectives) || self.sampling.strategy != 'cmaes'",
                "cmaes has no multi-objective form: with several objectives use tpe, nsga2, qmc, random or grid",
            ),
            (
                "self.sampling.strategy != 'grid' || self.parameters.all(p, !has(p.range) || has(p.range.count) || has(p.range.step))",
                "grid sampling needs count or step on every range",
            ),
            # Transition rules: what was planned must not change under running shards. Sites may be added or
            # retuned (weights, maxRunning, settings) for shards placed from now on; a running shard never moves
            # because of an edit (where it runs is read from its job), and a site that holds shards cannot go.
            (
                "!has(oldSelf.sites) || has(self.sites) && oldSelf.sites.all(o, self.sites.exists(s, s.name == o.name"
                + "".join(f" && has(s.{name}) == has(o.{name})" for name in entries())
                + "))",
                "spec.sites: a site cannot be removed or given another backend once the scan exists; add a site, "
                "or drain one with maxRunning: 0",
            ),
            (
                "self.parameters == oldSelf.parameters",
                "spec.parameters cannot change once the scan exists; create a new HPScan",
            ),
            (
                "self.sampling == oldSelf.sampling",
                "spec.sampling cannot change once the scan exists; create a new HPScan",
            ),
            (
                "self.sharding == oldSelf.sharding",
                "spec.sharding cannot change once the scan exists; create a new HPScan",
            ),
            (
                "self.objective == oldSelf.objective",
                "spec.objective cannot change once the scan exists; create a new HPScan",
            ),
            (
                "has(self.objectives) == has(oldSelf.objectives) && "
                "(!has(self.objectives) || self.objectives == oldSelf.objectives)",
                "spec.objectives cannot change once the scan exists; create a new HPScan",
            ),
            ("self.payload == oldSelf.payload", "spec.payload cannot change once the scan exists; create a new HPScan"),
            (
                "self.earlyStopping == oldSelf.earlyStopping",
                "spec.earlyStopping cannot change once the scan exists; create a new HPScan",
            ),
            (
                "!has(self.sharding.pull) || self.sharding.pull || "
                "(self.sampling.strategy in ['grid', 'random'] && self.earlyStopping.strategy == 'none')",
                "tpe, cmaes, qmc, nsga2 and early stopping need workers that pull (sharding.pull: true)",
            ),
        )
    }

    @model_validator(mode="after")
    def _check(self) -> HPScanSpec:
        for label, names in (("parameter", [p.name for p in self.parameters]), ("site", [s.name for s in self.sites])):
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"{label} names must be unique; repeated: {', '.join(twice)}")
        if self.objectives is not None:
            self._check_objectives(self.objectives)
        if self.sharding.pull is False and (self.sampling.adaptive or self.early_stopping.strategy != "none"):
            raise ValueError(
                f"sampling.strategy {self.sampling.strategy} with earlyStopping.strategy "
                f"{self.early_stopping.strategy} needs workers that pull (sharding.pull: true)"
            )
        if self.sampling.strategy == "grid":
            continuous = [p.name for p in self.parameters if p.range is not None and not p.range.is_discrete]
            if continuous:
                raise ValueError(
                    f"grid sampling needs count or step on every range; missing on: {', '.join(continuous)}"
                )
        return self

    def _check_objectives(self, objectives: list[Objective]) -> None:
        """Several objectives: distinct metrics, instead of `objective` (which becomes the first of them, so that
        what ranks by one objective ranks by it), nothing that judges one metric alone."""
        metrics = [o.metric for o in objectives]
        if len(set(metrics)) != len(metrics):
            raise ValueError(f"objectives must name different metrics; repeated: {', '.join(sorted(set(metrics)))}")
        if self.objective not in (Objective(), objectives[0]):
            raise ValueError(
                f"give objective or objectives, not both (objective names {self.objective.metric}; a scan with "
                "several objectives lists them all under objectives)"
            )
        if self.early_stopping.strategy != "none":
            raise ValueError(
                f"earlyStopping.strategy {self.early_stopping.strategy} judges one metric per epoch: a scan with "
                "several objectives cannot be pruned; set earlyStopping.strategy: none, or optimise one objective"
            )
        if self.sampling.strategy in SINGLE_OBJECTIVE_STRATEGIES:
            raise ValueError(
                f"sampling.strategy {self.sampling.strategy} has no multi-objective form: with several objectives "
                "use tpe, nsga2, qmc, random or grid"
            )
        self.objective = objectives[0]

    @property
    def goals(self) -> list[Objective]:
        """Every objective: spec.objectives, or the one spec.objective."""
        return list(self.objectives) if self.objectives else [self.objective]

    @property
    def multi_objective(self) -> bool:
        """Whether the scan optimises several metrics at once (its status holds a Pareto set)."""
        return bool(self.objectives)

    @property
    def pull(self) -> bool:
        """Whether shards are workers that pull trials (sharding.pull, defaulted from the strategy)."""
        if self.sharding.pull is not None:
            return self.sharding.pull
        return self.sampling.adaptive or self.early_stopping.strategy != "none"


class ObjectMeta(CamelModel):
    """The part of Kubernetes metadata hpscan reads."""

    model_config = CamelModel.model_config | {"extra": "ignore"}

    name: str = Field(pattern=NAME_PATTERN, max_length=63, description="Name of the scan (a DNS label).")
    namespace: str | None = Field(None, description="Namespace of the scan.")
    uid: str | None = Field(None, description="UID assigned by the API server.")
    generation: int | None = Field(None, description="Generation of the spec.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations.")


class HPScan(CamelModel):
    """An HPScan object, as in a manifest or read from the API server."""

    api_version: Literal["hpscan.io/v1alpha1"] = Field("hpscan.io/v1alpha1", description="hpscan.io/v1alpha1")
    kind: Literal["HPScan"] = Field("HPScan", description="HPScan")
    metadata: ObjectMeta
    spec: HPScanSpec
    status: HPScanStatus | None = None
