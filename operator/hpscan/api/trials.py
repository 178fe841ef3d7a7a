"""Workers that pull trials: the files between hpscan and a payload whose shard file says ``pull: true``.

All live in the payload's output folder and are append-only JSON lines, so either side may stop and start again
at any time and find where it was:

  trials.jsonl    hpscan -> payload: ``{"trial": <Combination>}`` for each trial given to this worker,
                  ``{"withdraw": "<id>"}`` for one taken back (its worker died; another runs it: skip it),
                  ``{"rungs": <Rungs>}`` (ASHA early stopping: the newest line replaces the one before; the worker
                  stops a trial itself at a rung's epoch when its value is worse than the rung's threshold), and
                  ``{"end": true}`` once no more will come (the scan's budget is handed out).
  stop.jsonl      hpscan -> payload: ``{"id": "<id>"}``: stop that trial at its next epoch boundary and record it
                  ``pruned`` (early stopping).
  progress.jsonl  payload -> hpscan: ``{"id", "epoch", "metrics"}`` after every epoch of every trial.

A worker trains the trials of its shard file first, then each new line of trials.jsonl, and exits 0 once it has
read the end line and recorded every trial it holds. On Kubernetes and HTCondor, ``hpscan shard-run`` carries these
lines between the files and the scan's live channel; locally hpscan writes and reads the files itself.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError

from hpscan.api.common import CamelModel
from hpscan.api.contract import Combination, complete_lines

TRIALS_FILE = "trials.jsonl"
STOP_FILE = "stop.jsonl"
PROGRESS_FILE = "progress.jsonl"


class Progress(CamelModel):
    """One epoch of one trial, as the payload reports it."""

    id: str
    epoch: int
    metrics: dict[str, float]


class Rung(CamelModel):
    """One ASHA rung as a worker sees it: the epoch at which trials are judged, and the worst value that still
    goes on (the operator's bound: hpscan.core.rungs)."""

    epoch: int = Field(ge=1)
    threshold: float


class Rungs(CamelModel):
    """The pruner's rung thresholds for the worker to stop trials itself at a rung's epoch, without waiting for a
    stop request (a round trip through the channel that a trial of sub-second epochs outruns)."""

    metric: str
    goal: Literal["minimize", "maximize"] = "minimize"
    rungs: list[Rung] = Field(default_factory=list)


def stops_at_rung(rungs: Rungs | None, epoch: int, metrics: dict[str, float]) -> bool:
    """Whether a worker stops a trial that reported ``metrics`` at ``epoch``: the epoch is a rung's and the value
    is worse than its threshold, or not a number (Optuna's ASHA prunes a NaN at a rung). Only the rung's own epoch
    counts: ASHA judges the value at that epoch, and the operator's stop requests cover the rest."""
    if rungs is None:
        return False
    value = metrics.get(rungs.metric)
    if value is None:
        return False
    for rung in rungs.rungs:
        if rung.epoch != epoch:
            continue
        if math.isnan(value):
            return True
        if value > rung.threshold if rungs.goal == "minimize" else value < rung.threshold:
            return True
    return False


class JsonLines:
    """Reads the complete JSON lines appended to a file since the last call (a line still being written waits);
    counts lines that are not JSON objects instead of failing on them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.bad_lines = 0

    def read_new(self) -> list[dict]:
        lines, self.offset = complete_lines(self.path, self.offset)
        out = []
        for line in lines:
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                value = None
            if isinstance(value, dict):
                out.append(value)
            else:
                self.bad_lines += 1
        return out


def append_lines(path: Path, values: Iterable[dict]) -> None:
    """Append JSON lines and make them durable before returning (the other side may read them at once, and a
    trial handed out must survive a crash of the hand)."""
    text = "".join(json.dumps(v, separators=(",", ":")) + "\n" for v in values)
    if not text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def trial_lines(trials: Iterable[Combination], withdrawn: Iterable[str] = (), end: bool = False) -> list[dict]:
    """The trials.jsonl lines that hand out ``trials``, take back ``withdrawn`` and, with ``end``, close the list."""
    lines: list[dict] = [{"trial": t.model_dump(mode="json")} for t in trials]
    lines += [{"withdraw": i} for i in withdrawn]
    if end:
        lines.append({"end": True})
    return lines


@dataclass
class Assignment:
    """What a worker's trials.jsonl says so far: its trials in order (without the withdrawn), the newest rung
    thresholds, and whether it ended."""

    trials: dict[str, Combination] = field(default_factory=dict)
    withdrawn: dict[str, Combination | None] = field(default_factory=dict)
    """Trials taken back from this worker (with the trial when it was handed out here first)."""
    ended: bool = False
    rungs: Rungs | None = None

    def fold(self, lines: Iterable[dict]) -> list[Combination]:
        """Fold new lines in; returns the trials they added."""
        added = []
        for line in lines:
            if "trial" in line:
                try:
                    trial = Combination.model_validate(line["trial"])
                except ValidationError:
                    continue
                if trial.id not in self.trials:  # handed again after a withdraw (a resumed worker): it is back
                    self.withdrawn.pop(trial.id, None)
                    self.trials[trial.id] = trial
                    added.append(trial)
            elif "withdraw" in line:
                trial_id = str(line["withdraw"])
                self.withdrawn[trial_id] = self.trials.pop(trial_id, None)
            elif "rungs" in line:
                with contextlib.suppress(ValidationError):  # a torn or foreign line: the last good one stays
                    self.rungs = Rungs.model_validate(line["rungs"])
            elif line.get("end") is True:
                self.ended = True
        return added


class TrialInbox:
    """The payload's side of pull mode: new trials, withdrawals, the end, and stop requests, read incrementally."""

    def __init__(self, out_dir: Path) -> None:
        self.assignment = Assignment()
        self._trials = JsonLines(out_dir / TRIALS_FILE)
        self._stops = JsonLines(out_dir / STOP_FILE)
        self.progress_path = out_dir / PROGRESS_FILE
        self.stops: set[str] = set()
        self.last_report: dict[str, tuple[int, dict[str, float]]] = {}

    def poll(self) -> list[Combination]:
        """Read what hpscan wrote since the last call; returns the newly handed-out trials."""
        added = self.assignment.fold(self._trials.read_new())
        self.stops.update(str(line["id"]) for line in self._stops.read_new() if "id" in line)
        return added

    @property
    def ended(self) -> bool:
        return self.assignment.ended

    def withdrawn(self, trial_id: str) -> bool:
        return trial_id in self.assignment.withdrawn

    def report(self, trial_id: str, epoch: int, metrics: dict[str, float]) -> None:
        """Append one epoch's metrics of a trial to progress.jsonl (hpscan's early stopping reads it)."""
        append_lines(self.progress_path, [Progress(id=trial_id, epoch=epoch, metrics=metrics).to_wire()])
        self.last_report[trial_id] = (epoch, metrics)

    def stopping(self, trial_id: str) -> bool:
        """Whether to stop ``trial_id`` now, at its epoch boundary: hpscan asked (stop.jsonl), or the epoch it just
        reported is a rung's and its value is worse than the rung's threshold (trials.jsonl's newest rungs)."""
        self.poll()
        if trial_id in self.stops:
            return True
        epoch, metrics = self.last_report.get(trial_id, (0, {}))
        return stops_at_rung(self.assignment.rungs, epoch, metrics)


def read_progress(lines: Iterable[dict]) -> list[Progress]:
    """progress.jsonl lines -> Progress entries; a torn or foreign line is skipped."""
    out = []
    for line in lines:
        try:
            out.append(Progress.model_validate(line))
        except ValidationError:
            continue
    return out
