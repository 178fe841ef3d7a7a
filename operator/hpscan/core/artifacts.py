"""Which trained models a scan keeps, and the kept ones read back. Pure but for reading model.json files.

A payload asked to save models (``ShardFile.artifacts.save_models``) writes ``OUT/models/<combination id>/`` next
to its results.jsonl, ``model.json`` last (so a folder without it is an unfinished save). The scan then keeps what
``spec.artifacts`` says: the decision is ``models_to_keep`` (plain records in, ids out); moving and deleting
folders is the shell's (``hpscan.local_scan`` for local runs; the operator for the object store of a cluster
scan, spec.artifacts.store, where ``models_to_prune`` decides from the records stored with the models). Which
store a cluster scan's jobs use at all is ``job_store``: trial checkpoints need it whether models are kept or not.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpscan.api.contract import MODEL_FILE, Objective, ResultRecord
from hpscan.api.spec import Artifacts
from hpscan.api.store import ArtifactStore


@dataclass(frozen=True)
class RankedRecord:
    """A succeeded combination's best record and its objective value; rank 0 is the best."""

    rank: int
    record: ResultRecord
    value: float

    @property
    def id(self) -> str:
        return self.record.id


def rank_records(records: Iterable[ResultRecord], objective: Objective) -> list[RankedRecord]:
    """Succeeded combinations, best first: one entry per id (its best value), ties broken by id."""
    best_of: dict[str, tuple[ResultRecord, float]] = {}
    for record in records:
        value = record.objective_value(objective)
        if value is None:
            continue
        held = best_of.get(record.id)
        if held is None or (value < held[1] if objective.goal == "minimize" else value > held[1]):
            best_of[record.id] = (record, value)
    sign = 1.0 if objective.goal == "minimize" else -1.0
    order = sorted(best_of.values(), key=lambda rv: (sign * rv[1], rv[0].id))
    return [RankedRecord(rank=i, record=r, value=v) for i, (r, v) in enumerate(order)]


def pick_ranks(count: int) -> dict[str, int]:
    """The ranks of the best, the median and the worst of ``count`` ranked combinations (the report's three)."""
    if count < 1:
        return {}
    return {"best": 0, "median": (count - 1) // 2, "worst": count - 1}


def job_store(artifacts: Artifacts, default: ArtifactStore | None = None) -> ArtifactStore | None:
    """The store a cluster scan's jobs use, or None: the scan's own (spec.artifacts.store), else the operator's
    ``default``; for every scan, whether it keeps models or not, since its jobs keep their trials' checkpoints
    there too (a pod's output folder dies with it: docs/checkpoints.md). A scan that keeps no models uploads none."""
    return artifacts.store or default


def models_to_keep(ranked: list[RankedRecord], artifacts: Artifacts) -> set[str]:
    """The combination ids whose models the scan keeps: none, all, or the ``top`` best plus the median and the
    worst (so that the report can compare best, median and worst without retraining)."""
    if artifacts.keep == "none":
        return set()
    if artifacts.keep == "all":
        return {r.id for r in ranked}
    keep = {r.id for r in ranked[: artifacts.top]}
    keep |= {ranked[rank].id for rank in pick_ranks(len(ranked)).values()}
    return keep


def retry_delay(failures: int, first: float, tries: int, cap: float) -> float | None:
    """Seconds to wait after the ``failures``-th failure in a row before trying again: ``first``, doubling, at most
    ``cap``; None once ``tries`` tries have failed (give up and say so)."""
    if failures >= tries:
        return None
    return float(min(first * 2 ** max(failures - 1, 0), cap))


def models_to_prune(stored: dict[str, ResultRecord | None], objective: Objective, artifacts: Artifacts) -> set[str]:
    """The stored models (combination id -> the record stored with it) a finished scan deletes: every ranked one
    that ``models_to_keep`` does not keep (the top k, the median and the worst of the stored ones). Models stored
    without a record, or whose record has no objective value, cannot be ranked and stay."""
    ranked = rank_records((r for r in stored.values() if r is not None), objective)
    return {r.id for r in ranked} - models_to_keep(ranked, artifacts)


@dataclass(frozen=True)
class SavedModel:
    """A kept model folder and what its model.json says."""

    id: str
    path: Path
    info: dict[str, Any]


def read_saved_model(folder: Path) -> SavedModel | None:
    """The model in ``folder`` (its model.json read), or None when it is not a finished model folder."""
    try:
        info = json.loads((folder / MODEL_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict):
        return None
    return SavedModel(id=str(info.get("id", folder.name)), path=folder, info=info)


def saved_models(models_dir: Path) -> dict[str, SavedModel]:
    """Every finished model folder under ``models_dir``, by combination id (empty when the folder is missing)."""
    if not models_dir.is_dir():
        return {}
    found: dict[str, SavedModel] = {}
    for folder in sorted(p for p in models_dir.iterdir() if p.is_dir()):
        model = read_saved_model(folder)
        if model is not None:
            found[model.id] = model
    return found
