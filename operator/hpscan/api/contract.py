"""The contract between hpscan and a payload: the shard file it reads and the result records it writes.

Both are plain JSON so that any container can honour them; these models are the single definition.
A payload reads ``ShardFile`` from a JSON file and appends one ``ResultRecord`` per line to
``results.jsonl`` as each combination finishes.
"""

from __future__ import annotations

from datetime import datetime
from enum import IntEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hpscan.api.common import CamelModel

ParameterValue = int | float | str | bool
"""One coordinate of a combination: what a parameter axis can hold."""


class PayloadExit(IntEnum):
    """Exit codes of a payload process (see the brief's contracts)."""

    OK = 0
    """The shard ran; single combinations may have failed (their records say so)."""
    INVALID_INPUT = 2
    """The shard file, settings or data are wrong: retrying will not help."""
    GPU_UNAVAILABLE = 3
    """The shard requires a GPU and none is usable: nothing was trained."""


class Objective(CamelModel):
    """What the scan optimises: one metric that every result record carries."""

    metric: str = Field(
        "val_loss", min_length=1, description="Name of the metric in each record's `metrics` to optimise."
    )
    goal: Literal["minimize", "maximize"] = Field(
        "minimize", description="Whether smaller or larger values are better."
    )


class GPURequest(CamelModel):
    """GPU needs of one shard."""

    count: int = Field(1, ge=0, le=16, description="GPUs per shard (0 runs on CPU).")
    required: bool = Field(
        True,
        description="Refuse to train when no usable GPU is visible (payload exits 3) instead of silently falling back to the CPU.",
    )
    min_compute_capability: str | None = Field(
        None, pattern=r"^\d+\.\d+$", description='Lowest CUDA compute capability accepted, e.g. "7.0".'
    )
    min_memory_mb: int | None = Field(None, ge=1, description="Lowest GPU memory accepted, in MiB.")


class Combination(BaseModel):
    """One point of the scan: a stable id and a value per parameter."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="Stable id: a hash of the parameters, the same for the same manifest.")
    parameters: dict[str, ParameterValue]


class ShardFile(CamelModel):
    """Input of one payload process: one shard of a scan (the paper's small JSON input files)."""

    api_version: Literal["hpscan.io/v1alpha1"] = "hpscan.io/v1alpha1"
    kind: Literal["ShardFile"] = "ShardFile"
    scan: str = Field(description="Name of the HPScan.")
    shard: int = Field(ge=0, description="Index of this shard, from 0.")
    shards: int = Field(ge=1, description="Number of shards in the scan.")
    objective: Objective
    gpu: GPURequest
    settings: dict[str, Any] = Field(
        default_factory=dict, description="spec.payload.settings, passed through untouched."
    )
    combinations: list[Combination]


class ResultRecord(CamelModel):
    """Output of a payload for one combination: one JSON object per line of ``results.jsonl``."""

    id: str
    shard: int = Field(ge=0)
    parameters: dict[str, ParameterValue]
    metrics: dict[str, float] = Field(
        default_factory=dict, description="Holds at least the objective metric when succeeded."
    )
    status: Literal["succeeded", "failed"]
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_seconds: float | None = Field(None, ge=0)
    device: str | None = Field(None, description='Where it really ran, e.g. "GPU:0 NVIDIA H100" or "CPU".')
    epochs: int | None = Field(None, ge=0, description="Epochs actually trained (early stopping may cut them).")

    def objective_value(self, objective: Objective) -> float | None:
        """The objective metric of a succeeded record, or None when it has none."""
        if self.status != "succeeded":
            return None
        value = self.metrics.get(objective.metric)
        return value if value is not None and value == value else None  # NaN never wins
