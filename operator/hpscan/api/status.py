"""The HPScan status: small at any scan size (it lives in etcd), the same shape for every backend and `status.json`."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import Field

from hpscan.api.common import CamelModel
from hpscan.api.contract import ParameterValue, PayloadExit
from hpscan.api.store import ArtifactStore


class ScanPhase(StrEnum):
    """Phase of a whole scan."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class ShardPhase(StrEnum):
    """Phase of one shard, the same on every backend."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"


ACTIVE_PHASES = frozenset({ShardPhase.PENDING, ShardPhase.RUNNING})
"""Phases of a shard whose job exists and has not finished."""

ENDED_PHASES = frozenset({ShardPhase.SUCCEEDED, ShardPhase.FAILED})
"""Phases of a shard that is done for good (its retries are spent or it succeeded)."""

TERMINAL_SCAN_PHASES = frozenset({ScanPhase.SUCCEEDED, ScanPhase.FAILED})
"""Phases of a scan that will not change unless its spec does."""


class Reason(StrEnum):
    """Every CamelCase reason hpscan writes into a shard's status, a condition or an Event: one list to grep."""

    # shards
    GPU_UNAVAILABLE = "GPUUnavailable"
    """The payload exited 3: no usable GPU. Never retried."""
    INVALID_INPUT = "InvalidInput"
    """The payload exited 2: its shard file, settings or data are wrong. Never retried."""
    UNSCHEDULABLE = "Unschedulable"
    """The scheduler cannot place the shard's pod (its message says why: GPUs, taints, selectors)."""
    QUEUED = "Queued"
    """The shard's Job waits in its site's Kueue queue for quota (its message: Kueue's words on the Workload)."""
    IMAGE_UNAVAILABLE = "ImageUnavailable"
    """The shard's pod could not get its image (a name that cannot be pulled, or pulls failing for the site's
    imagePullTimeoutSeconds): the Job is suspended and the shard failed, with the kubelet's words."""
    RECORDS_MISSING = "RecordsMissing"
    """The job ended well but fewer records came back than the shard holds."""
    PAYLOAD_FAILED = "PayloadFailed"
    RETRYING = "Retrying"
    STOPPED = "Stopped"
    SUSPENDED = "Suspended"
    SUSPENDED_BY_SITE = "SuspendedBySite"
    HELD = "Held"
    SPOOLING_INPUT = "SpoolingInput"
    RETRIEVING_OUTPUT = "RetrievingOutput"
    REMOVED = "Removed"
    JOB_FAILED = "JobFailed"
    SHARD_FAILED = "ShardFailed"
    SHARD_TROUBLE = "ShardTrouble"
    SCHEDULER_UNAVAILABLE = "SchedulerUnavailable"
    HOLD_TIMEOUT = "HoldTimeout"
    """The shard's job was held past its site's holdTimeoutSeconds: removed, and the shard moved."""
    SITE_EXCLUDED = "SiteExcluded"
    """The shard waited on a site that was excluded since: moved to another site."""
    NO_USABLE_SITE = "NoUsableSite"
    """No site can take the shard now (all excluded, unreachable or full): it waits for one."""
    # sites
    PROBING = "Probing"
    PROBE_PASSED = "ProbePassed"
    PROBE_FAILED = "ProbeFailed"
    """The site probe failed for another reason than a missing GPU (exit code and last words in the message)."""
    NOT_PROBED = "NotProbed"
    """The scan needs no probe (gpu.required is false, or payload.gpuCheck is empty)."""
    PROBE_TIMEOUT = "ProbeTimeout"
    SITE_UNREACHABLE = "SiteUnreachable"
    SITE_TROUBLE = "SiteTrouble"
    # the scan's phase and conditions
    PLANNED = "Planned"
    SHARDS_PENDING = "ShardsPending"
    SHARDS_RUNNING = "ShardsRunning"
    ALL_SHARDS_SUCCEEDED = "AllShardsSucceeded"
    ALL_SHARDS_HEALTHY = "AllShardsHealthy"
    TOO_MANY_FAILED_COMBINATIONS = "TooManyFailedCombinations"
    NOT_COMPLETE = "NotComplete"
    NOT_FAILED = "NotFailed"
    NOT_SUSPENDED = "NotSuspended"
    # errors (hpscan.errors maps each exception type to one of these)
    ERROR = "Error"
    INVALID_SPEC = "InvalidSpec"
    PLANNING_FAILED = "PlanningFailed"
    RESULTS_UNREADABLE = "ResultsUnreadable"
    BACKEND_ERROR = "BackendError"
    BACKEND_UNAVAILABLE = "BackendUnavailable"
    NOT_ALLOWED = "NotAllowed"
    """The scan asks for what only a site admin may grant (a ServiceAccount, a PriorityClass)."""
    RUN_REFUSED = "RunRefused"
    REPORT_FAILED = "ReportFailed"
    PAYLOAD_CHECK_UNAVAILABLE = "PayloadCheckUnavailable"
    """The payload registered a settings checker (entry point group hpscan.payloads) that cannot be loaded here."""
    MODELS_PENDING = "ModelsPending"
    """Trained models wait for their upload to the store (it failed; tried again): the prune waits for them."""
    MODELS_KEPT = "ModelsKept"
    MODELS_LOST = "ModelsLost"
    """Trained models were never stored: their uploads were given up after repeated failures."""
    ARTIFACT_STORE_FAILED = "ArtifactStoreFailed"
    """The object store of spec.artifacts.store refused (a credential, a bucket) or did not answer."""
    CLUSTER_UNAVAILABLE = "ClusterUnavailable"


FINAL_EXITS: dict[int, Reason] = {
    PayloadExit.INVALID_INPUT: Reason.INVALID_INPUT,
    PayloadExit.GPU_UNAVAILABLE: Reason.GPU_UNAVAILABLE,
}
"""Payload exit codes that end a shard at once (a retry would fail the same way), with the reason each shows.
Every backend honours it: the local loop, Kubernetes' podFailurePolicy, HTCondor's retry_until."""


SITE_LEVEL_REASONS = frozenset({Reason.GPU_UNAVAILABLE, Reason.HOLD_TIMEOUT, Reason.SITE_EXCLUDED})
"""Reasons a shard's job ended that blame the site, not the shard: the shard moves to another usable site."""


class SiteState(StrEnum):
    """Whether a site takes a scan's shards."""

    PROBING = "Probing"
    """Its GPU probe runs: no shard goes there yet."""
    USABLE = "Usable"
    EXCLUDED = "Excluded"
    """Its GPUs failed the probe or a shard (GPUUnavailable): no shard of this scan goes there again."""
    UNREACHABLE = "Unreachable"
    """Its batch system does not answer, or its probe did not end in time: no new shard goes there until it does."""


class ConditionType(StrEnum):
    """Condition types an HPScan carries (`kubectl wait --for=condition=Complete hpscan/NAME`)."""

    PLANNED = "Planned"
    RUNNING = "Running"
    COMPLETE = "Complete"
    FAILED = "Failed"
    SUSPENDED = "Suspended"
    DEGRADED = "Degraded"
    MODELS_STORED = "ModelsStored"
    """A finished scan's store holds what spec.artifacts keeps (False while uploads wait or the prune failed)."""
    # What kstatus reads (Flux's health checks, Helm 4's --wait, cli-utils; hpscan.core.kstatus, docs/gitops.md):
    READY = "Ready"
    """True only once the scan succeeded; absent while it is suspended (a Ready False would read as InProgress)."""
    RECONCILING = "Reconciling"
    """True while the scan plans, waits for or runs shards, with its progress as message (kstatus: InProgress)."""
    STALLED = "Stalled"
    """True once the scan failed, an invalid spec included, with the reason (kstatus: Failed)."""


class Counts(CamelModel):
    """Combinations by state."""

    total: int = Field(0, ge=0, description="Combinations in the plan.")
    succeeded: int = Field(0, ge=0, description="Combinations with a result.")
    failed: int = Field(
        0, ge=0, description="Combinations that failed (e.g. diverged), or will never run because their shard failed."
    )
    running: int = Field(0, ge=0, description="Combinations in running shards, not yet recorded.")
    pending: int = Field(0, ge=0, description="Combinations waiting for their shard to start.")
    pruned: int = Field(0, ge=0, description="Trials stopped early as hopeless (spec.earlyStopping).")
    suggested: int = Field(
        0, ge=0, description="Trials handed out to workers so far (workers that pull; the budget is `total`)."
    )


class Training(CamelModel):
    """What the recorded combinations cost, and what early stopping and checkpoints saved."""

    epochs: int = Field(0, ge=0, description="Epochs trained by the recorded combinations.")
    epochs_saved: int = Field(
        0, ge=0, description="Epochs pruned trials did not train (their maximum minus what they ran)."
    )
    epochs_resumed: int = Field(
        0,
        ge=0,
        description="Epochs interrupted trials did not train again because they resumed from a checkpoint (the sum "
        "of their records' resumedFrom).",
    )


class ShardCounts(CamelModel):
    """Shards by phase: the whole picture, also when the per-shard list is cut short."""

    total: int = Field(0, ge=0, description="Shards in the plan.")
    pending: int = Field(0, ge=0, description="Shards waiting to start (or to be scheduled).")
    running: int = Field(0, ge=0, description="Shards running.")
    succeeded: int = Field(0, ge=0, description="Shards done.")
    failed: int = Field(0, ge=0, description="Shards failed for good.")
    suspended: int = Field(0, ge=0, description="Shards stopped by spec.suspend.")


class RankedCombination(CamelModel):
    """One of the best combinations so far."""

    id: str = Field(description="Combination id.")
    parameters: dict[str, ParameterValue] = Field(description="Its parameter values.")
    value: float = Field(description="Its objective value.")
    error: float | None = Field(
        None, ge=0, description="The statistical uncertainty of its value (the record's <metric>_err), if reported."
    )
    shard: int = Field(ge=0, description="The shard that ran it.")


class ParetoMember(CamelModel):
    """A combination of a multi-objective scan that no other one beats in every objective."""

    id: str = Field(description="Combination id.")
    parameters: dict[str, ParameterValue] = Field(description="Its parameter values.")
    values: dict[str, float] = Field(description="Its value of each objective, by metric.")
    errors: dict[str, float] = Field(
        default_factory=dict, description="The statistical uncertainties of those values (<metric>_err), if reported."
    )
    shard: int = Field(ge=0, description="The shard that ran it.")


class ShardStatus(CamelModel):
    """Progress of one shard."""

    index: int = Field(ge=0, description="Shard index.")
    site: str | None = Field(None, description="Site the shard runs on.")
    phase: ShardPhase = Field(ShardPhase.PENDING, description="Pending, Running, Succeeded, Failed or Suspended.")
    done: int = Field(0, ge=0, description="Combinations recorded (succeeded or failed).")
    total: int = Field(0, ge=0, description="Combinations in the shard.")
    failed: int = Field(0, ge=0, description="Combinations that failed.")
    attempts: int = Field(0, ge=0, description="Attempts started so far (1 + retries).")
    job: str | None = Field(None, description="Backend reference: Job name, HTCondor cluster.proc, or local pid.")
    reason: str | None = Field(None, description="CamelCase reason of the phase, e.g. GPUUnavailable or Held.")
    message: str | None = Field(None, description="Why the shard is in its phase, when not obvious.")
    moves: int = Field(
        0,
        ge=0,
        description="How often the shard was moved to another site (its move count: each move starts a new job).",
    )
    since: datetime | None = Field(
        None, description="When the batch system's reason began (e.g. when it held the job)."
    )


class SiteStatus(CamelModel):
    """Where one site stands for the scan: probed, usable, excluded or unreachable, and its shards."""

    name: str = Field(description="Site name.")
    backend: str = Field(description="Backend that runs its shards (kubernetes, htcondor, local).")
    state: SiteState = Field(SiteState.PROBING, description="Probing, Usable, Excluded or Unreachable.")
    reason: str = Field("", description="CamelCase reason of the state, e.g. ProbePassed or GPUUnavailable.")
    message: str = Field("", description="The cause in a line, e.g. the probe's own words or the schedd's error.")
    since: datetime | None = Field(None, description="When the site entered its state (or its probe was sent).")
    running: int = Field(0, ge=0, description="Shards of the scan pending or running here.")
    succeeded: int = Field(0, ge=0, description="Shards that succeeded here.")
    failed: int = Field(0, ge=0, description="Shards that failed here for good.")
    done: int = Field(0, ge=0, description="Combinations recorded by shards that ran here last.")


class Condition(CamelModel):
    """A standard metav1.Condition."""

    type: str = Field(description="Condition type, e.g. Complete, Failed, Degraded.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase reason, e.g. GPUUnavailable.")
    message: str = Field("", description="Human-readable detail.")
    last_transition_time: datetime | None = Field(None, description="When status last changed.")
    observed_generation: int | None = Field(None, description="Spec generation the condition was computed from.")


class ModelsStatus(CamelModel):
    """Where the scan's trained models are kept."""

    store: ArtifactStore = Field(
        description="The store the operator keeps them in: spec.artifacts.store, or the operator's "
        "defaults.artifactStore when the spec names none (`hpscan models SCAN` reads it here)."
    )
    waiting: int = Field(0, ge=0, description="Trained models not in the store yet: their upload failed, tried again.")
    lost: int = Field(0, ge=0, description="Trained models never stored: their uploads were given up.")
    prune_failures: int = Field(0, ge=0, description="Failed tries in a row to prune the finished scan's store.")
    retry_at: datetime | None = Field(None, description="When the prune is tried again after a failure.")
    settled: bool = Field(
        False,
        description="The finished scan's store is done with: pruned to what spec.artifacts keeps, or given up on "
        "(condition ModelsStored says which); the operator leaves the scan alone from then on.",
    )


class HPScanStatus(CamelModel):
    """Observed state of a scan; kept to a few KiB whatever its size (the full records live outside the object)."""

    phase: ScanPhase = Field(ScanPhase.PENDING, description="Pending, Running, Suspended, Succeeded or Failed.")
    progress: str = Field("0/0", description="Recorded / total combinations (or trials of the budget), e.g. 312/800.")
    combinations: Counts = Field(default_factory=Counts, description="Combinations by state.")
    training: Training = Field(default_factory=Training, description="Epochs trained and saved by pruning.")
    best: RankedCombination | None = Field(None, description="The best combination so far.")
    top: list[RankedCombination] = Field(default_factory=list, description="The best combinations so far, best first.")
    tied: list[str] = Field(
        default_factory=list,
        description="Ids of the best combinations whose objective values overlap the best's within their errors "
        "(the best's included): no single winner can be named. Empty when the best stands alone.",
    )
    pareto: list[ParetoMember] = Field(
        default_factory=list,
        description="A multi-objective scan's Pareto set so far (no member is beaten in every objective), by the "
        "first objective, better first; past a few dozen only the first ones (paretoSize counts them all).",
    )
    pareto_size: int | None = Field(
        None, ge=0, description="How many combinations the Pareto set holds (multi-objective scans; a printer column)."
    )
    pareto_omitted: int = Field(0, ge=0, description="Pareto members left out of `pareto` (counted in paretoSize).")
    shard_counts: ShardCounts = Field(default_factory=ShardCounts, description="Shards by phase.")
    shards: list[ShardStatus] = Field(
        default_factory=list,
        description="Per-shard progress; past a few hundred shards only the notable ones (running, failed, "
        "suspended, or with a reason), so the object stays small; `hpscan status` lists every shard.",
    )
    shards_omitted: int = Field(0, ge=0, description="Shards left out of `shards` (uneventful ones, counted above).")
    sites: list[SiteStatus] = Field(default_factory=list, description="Each site's state and shards, in spec order.")
    usable_sites: str = Field("", description="Usable / all sites, e.g. 1/2 (a printer column).")
    conditions: list[Condition] = Field(default_factory=list, description="Standard conditions.")
    observed_generation: int | None = Field(None, description="Spec generation this status reflects.")
    start_time: datetime | None = Field(None, description="When the first shard started.")
    completion_time: datetime | None = Field(None, description="When the scan ended.")
    message: str | None = Field(None, description="One line on what the scan is doing or why it stopped.")
    models: ModelsStatus | None = Field(
        None,
        description="The trained models of a scan that has a store (one that keeps none has it for its trials' "
        "checkpoints, which are pruned alike).",
    )
