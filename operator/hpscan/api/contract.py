"""The contract between hpscan and a payload: the shard file it reads and the result records it writes.

Both are plain JSON so that any container can honour them; these models are the single definition.
A payload reads ``ShardFile`` from a JSON file and appends one ``ResultRecord`` per line to
``results.jsonl`` as each combination finishes; it may keep each unfinished trial's state in
``checkpoints/<combination id>/`` and resume from it when it is started again in the same folder.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hpscan.api.common import CamelModel

ParameterValue = int | float | str | bool
"""One coordinate of a combination: what a parameter axis can hold."""

RESULTS_FILE = "results.jsonl"
"""The file in its output folder a payload appends one record per line to."""

MODELS_DIR = "models"
"""The folder next to results.jsonl where a payload asked to save models writes one folder per combination,
``models/<combination id>/`` (whatever the payload needs to use the model elsewhere, plus ``model.json``)."""

MODEL_FILE = "model.json"
"""The file every saved model folder holds: JSON with at least ``id`` and ``parameters`` (the payload adds the
rest: its format, inputs, metrics). A folder without it is not a finished model (a crash while saving)."""

CHECKPOINTS_DIR = "checkpoints"
"""The folder next to results.jsonl where a payload keeps one folder per unfinished trial,
``checkpoints/<combination id>/``: its state at its last epoch boundary, in the payload's own format. The payload
deletes a trial's folder after appending its record; a payload started again in the same folder (a killed run, an
evicted HTCondor job whose checkpoint came back) continues each trial from it instead of from epoch 0."""


def checkpoint_dir(out: Path, combination_id: str) -> Path:
    """``OUT/checkpoints/<combination id>/``: where a payload keeps one trial's checkpoint."""
    return out / CHECKPOINTS_DIR / combination_id


def shard_name(shard: int) -> str:
    """``shard-NNN``: how a shard is named everywhere (files, folders, Jobs, ConfigMaps)."""
    return f"shard-{shard:03d}"


def shard_file_name(shard: int) -> str:
    """``shard-NNN.json``: the file name of a shard file."""
    return f"{shard_name(shard)}.json"


class PayloadExit(IntEnum):
    """Exit codes of a payload process (see the brief's contracts)."""

    OK = 0
    """The shard ran; single combinations may have failed (their records say so)."""
    INVALID_INPUT = 2
    """The shard file, settings or data are wrong: retrying will not help."""
    GPU_UNAVAILABLE = 3
    """The shard requires a GPU and none is usable: nothing was trained."""


LAST_WORDS_ENV = "HPSCAN_LAST_WORDS_FILE"
"""Set by a backend that reads a payload's last words from a file: a payload that exits non-zero writes its reason
there, in one line. On Kubernetes it is the container's termination message file, which the kubelet reads at
exit; without it the kubelet falls back to the log's last line, and where the payload's stdout and stderr
interleave there is a race (a real container's JSON report's closing brace came after the error line)."""


ERROR_SUFFIX = "_err"
"""A record metric ``X`` with a statistical uncertainty reports it as metric ``X_err`` (dl1's rejections do): hpscan
ranks ``X`` honestly with it (hpscan.core.ranking: tied within errors)."""


def error_metric(metric: str) -> str:
    """The name of the metric that holds ``metric``'s statistical uncertainty."""
    return metric + ERROR_SUFFIX


class Objective(CamelModel):
    """What the scan optimises: one metric that every succeeded result record carries."""

    metric: str = Field(
        "val_loss",
        min_length=1,
        max_length=63,
        pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$",
        description="Name of the metric in each record's `metrics` to optimise: any metric the payload records "
        "(dl1: val_loss, light_rejection_77, ...: payload/README.md).",
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


class ArtifactRequest(CamelModel):
    """What the payload keeps of each trained combination (from spec.artifacts)."""

    save_models: bool = Field(
        False,
        description="Save each succeeded combination's trained model into OUT/models/<combination id>/ (with a "
        "model.json) before appending its record; hpscan keeps the ones spec.artifacts asks for.",
    )


class ShardFile(CamelModel):
    """Input of one payload process: one shard of a scan (the paper's small JSON input files)."""

    api_version: Literal["hpscan.io/v1alpha1"] = "hpscan.io/v1alpha1"
    kind: Literal["ShardFile"] = "ShardFile"
    scan: str = Field(description="Name of the HPScan.")
    shard: int = Field(ge=0, description="Index of this shard, from 0.")
    shards: int = Field(ge=1, description="Number of shards in the scan.")
    objective: Objective = Field(description="The scan's objective (the first of `objectives` when it has several).")
    objectives: list[Objective] = Field(
        default_factory=list,
        description="Every objective of a multi-objective scan (spec.objectives), the first being `objective`; "
        "empty for a scan with one.",
    )
    gpu: GPURequest
    settings: dict[str, Any] = Field(
        default_factory=dict, description="spec.payload.settings, passed through untouched."
    )
    combinations: list[Combination]
    artifacts: ArtifactRequest = Field(
        default_factory=ArtifactRequest, description="What to keep besides the records (trained models)."
    )
    pull: bool = Field(
        False,
        description="The shard is a worker that pulls trials: after `combinations`, more arrive as lines of "
        "OUT/trials.jsonl until an end line; it appends each trial's per-epoch metrics to OUT/progress.jsonl and "
        "stops a trial named in OUT/stop.jsonl at its next epoch boundary (hpscan.api.trials).",
    )
    checkpoints: bool = Field(
        True,
        description="Save each trial's state (weights, optimiser, epoch, RNG, early stopping) at epoch boundaries "
        "into OUT/checkpoints/<combination id>/ and, started again in the same folder, resume each unfinished trial "
        "from it; its record then lists the epochs it resumed at (resumedFrom). A payload that cannot resume "
        "ignores this and starts such trials again from epoch 0.",
    )

    def ranked_metrics(self) -> list[str]:
        """The metrics hpscan ranks by and their errors: what a record keeps when it is cut to fit its page."""
        goals = self.objectives or [self.objective]
        return [name for goal in goals for name in (goal.metric, error_metric(goal.metric))]


class ResultRecord(CamelModel):
    """Output of a payload for one combination: one JSON object per line of ``results.jsonl``."""

    id: str
    shard: int = Field(ge=0)
    parameters: dict[str, ParameterValue]
    metrics: dict[str, float] = Field(
        default_factory=dict, description="Holds at least the objective metric when succeeded."
    )
    status: Literal["succeeded", "failed", "pruned"] = Field(
        description="succeeded (metrics hold the objective), failed (error says why), or pruned: stopped early "
        "because hpscan's early stopping judged it hopeless (metrics are those of its last epoch)."
    )
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_seconds: float | None = Field(None, ge=0)
    device: str | None = Field(None, description='Where it really ran, e.g. "GPU:0 NVIDIA H100" or "CPU".')
    epochs: int | None = Field(None, ge=0, description="Epochs actually trained (early stopping may cut them).")
    max_epochs: int | None = Field(
        None, ge=0, description="Epochs the combination would have trained at most (what pruning saved is the rest)."
    )
    resumed_from: list[int] | None = Field(
        None,
        description="The epochs at which training resumed from a checkpoint, one per interruption it survived "
        "(absent: trained in one go); their sum is what resuming saved.",
    )

    def objective_value(self, objective: Objective) -> float | None:
        """The objective metric of a succeeded record, or None when it has none or it is not finite: a diverged
        loss (NaN, inf) or a rejection nothing was left to measure (inf) never ranks, and never stretches an axis."""
        if self.status != "succeeded":
            return None
        value = self.metrics.get(objective.metric)
        return value if value is not None and math.isfinite(value) else None


@dataclass(frozen=True)
class LineProblem:
    """A line of results that could not be read as a record."""

    line: int
    reason: str


def parse_record(line: str | bytes) -> ResultRecord:
    """One JSON line -> a record. Raises ValueError whose message says what is wrong (not JSON, or which field)."""
    try:
        return ResultRecord.model_validate(json.loads(line))
    except json.JSONDecodeError as error:
        raise ValueError(f"not JSON ({error.msg})") from None
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "record"
        raise ValueError(f"{where}: {first['msg']}") from None


def complete_lines(path: Path, offset: int) -> tuple[list[bytes], int]:
    """The whole lines appended to a file since ``offset``, and the offset after them: a line still being written
    (no newline yet) waits for the next call; a missing file has none. The one reader of every append-only
    JSON-lines file hpscan tails (results.jsonl, and the files of workers that pull)."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            chunk = handle.read()
    except FileNotFoundError:
        return [], offset
    end = chunk.rfind(b"\n") + 1
    return chunk[:end].splitlines(), offset + end


def parse_records(lines: Iterable[str | bytes]) -> tuple[list[ResultRecord], list[LineProblem]]:
    """JSON lines -> records; unreadable lines are reported with their number, never fatal (what was recorded
    stays). The one parser of results.jsonl, ConfigMap entries and chirped attributes."""
    records: list[ResultRecord] = []
    problems: list[LineProblem] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(parse_record(line))
        except ValueError as error:
            problems.append(LineProblem(number, str(error)))
    return records, problems
