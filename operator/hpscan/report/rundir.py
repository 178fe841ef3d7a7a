"""A finished (or partly finished) run folder read back: the manifest as run, its plan, its records and status."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from hpscan.api.contract import MODELS_DIR, LineProblem, ResultRecord
from hpscan.api.spec import HPScan
from hpscan.api.status import HPScanStatus
from hpscan.core.artifacts import RankedRecord, pick_ranks, rank_records, saved_models
from hpscan.core.manifest import load_scan
from hpscan.core.planning import Plan, plan, position_of
from hpscan.core.ranking import pareto_ids, tied_with_best
from hpscan.core.results import error_of, read_records
from hpscan.errors import HPScanError


class ReportError(HPScanError):
    """A run folder that cannot be reported on (missing, no manifest, no results), or a report step that failed."""

    exit_code = 2
    reason = "ReportFailed"


Ranked = RankedRecord
"""A succeeded combination with its objective value and its rank (0 = best)."""


@dataclass(frozen=True)
class ScanRun:
    """Everything a report needs from a run folder. Records are de-duplicated: one per combination."""

    run_dir: Path
    scan: HPScan
    plan: Plan
    ranked: list[Ranked]
    """Succeeded combinations, best first (ties broken by id, as the aggregator does)."""
    failed: list[ResultRecord]
    """Combinations with no objective value (failed, or a succeeded record without the metric)."""
    pruned: list[ResultRecord]
    """Trials stopped early as hopeless (spec.earlyStopping), with the metrics of their last epoch."""
    status: HPScanStatus | None
    problems: list[LineProblem]
    foreign: int
    """Records that do not belong to this plan (another scan's file mixed in); ignored."""
    models: dict[str, Path]
    """Kept trained models (run_dir/models/<id>/, spec.artifacts), by combination id."""
    pareto: tuple[str, ...] = ()
    """A multi-objective scan's Pareto set (ids, by the first objective, better first); empty for one objective."""
    tied: tuple[str, ...] = ()
    """Ids of the top spec.topK combinations tied with the best within errors (the best's included), else empty."""

    @property
    def name(self) -> str:
        return self.scan.metadata.name

    @property
    def recorded(self) -> int:
        return len(self.ranked) + len(self.failed) + len(self.pruned)

    @property
    def phase(self) -> str:
        """The phase the runner wrote, or one inferred from the records when status.json is missing."""
        if self.status is not None:
            return str(self.status.phase.value)
        return "Succeeded" if self.recorded == self.plan.total and self.ranked else "Unknown"

    @property
    def best(self) -> Ranked:
        return self.ranked[0]

    def picks(self) -> dict[str, Ranked]:
        """The best, the median and the worst succeeded combination (the paper's three retrained networks)."""
        if not self.ranked:
            raise ReportError(f"{self.run_dir}: no combination succeeded, nothing to pick for retraining")
        return {key: self.ranked[rank] for key, rank in pick_ranks(len(self.ranked)).items()}

    def picked_models(self) -> dict[str, Path] | None:
        """The kept model of each picked combination by pick (best, median, worst), or None when one is missing."""
        picks = self.picks()
        if not all(ranked.id in self.models for ranked in picks.values()):
            return None
        return {key: self.models[ranked.id] for key, ranked in picks.items()}


def _load_status(path: Path) -> HPScanStatus | None:
    if not path.exists():
        return None
    try:
        return HPScanStatus.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, ValidationError, OSError):
        return None  # the status is a summary of the records; the report stands on the records alone


def pareto_of(scan: HPScan, ranked: list[Ranked]) -> tuple[str, ...]:
    """The Pareto set of the ranked records (each combination's best record) by the scan's objectives; records
    without a finite value of every objective are left out. Empty for a scan with one objective."""
    if not scan.spec.multi_objective:
        return ()
    goals = scan.spec.goals
    values = {r.id: [r.record.objective_value(g) for g in goals] for r in ranked}
    points = {i: [v for v in vs if v is not None] for i, vs in values.items() if None not in vs}
    return tuple(pareto_ids(points, [g.goal for g in goals]))


def tied_of(scan: HPScan, ranked: list[Ranked]) -> tuple[str, ...]:
    """The top combinations tied with the best within errors (hpscan.core.ranking.tied_with_best)."""
    metric = scan.spec.objective.metric
    top = ranked[: scan.spec.top_k]
    return tuple(tied_with_best([(r.id, r.value, error_of(r.record, metric)) for r in top]))


def load_run(run_dir: Path) -> ScanRun:
    """Read a run folder written by `hpscan run` (or collected from a cluster); ReportError says what is missing."""
    if not run_dir.exists():
        raise ReportError(f"{run_dir}: no such run folder")
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: not a folder; give the run folder (the --out of hpscan run)")
    manifest = run_dir / "scan.yaml"
    if not manifest.exists():
        raise ReportError(f"{run_dir}: no scan.yaml; is this the output folder of hpscan run?")
    scan = load_scan(manifest)
    planned = plan(scan.metadata.name, scan.spec)
    records, problems = read_records(run_dir / "results.jsonl")
    owned = [r for r in records if planned.owns(r.id, r.parameters)]
    return scan_run(run_dir, scan, planned, owned, len(records) - len(owned), problems)


def scan_run(
    run_dir: Path,
    scan: HPScan,
    planned: Plan,
    owned: list[ResultRecord],
    foreign: int,
    problems: list[LineProblem],
) -> ScanRun:
    """The run from records already read: ``owned``, those of ``planned`` (Plan.owns), and the count of the
    others. The dashboard keeps them as results.jsonl grows and calls this alone (no re-reading, no re-planning)."""
    if not owned and not foreign:
        detail = f" ({len(problems)} unreadable lines)" if problems else ""
        raise ReportError(f"{run_dir / 'results.jsonl'}: no result records yet{detail}; run the scan first")
    ranked = rank_records(owned, scan.spec.objective)
    ranked_ids = {r.id for r in ranked}
    failed_of: dict[str, ResultRecord] = {}
    for record in owned:
        if record.id not in ranked_ids:
            failed_of.setdefault(record.id, record)
    failed = sorted(failed_of.values(), key=lambda r: position_of(r.id))
    pruned = [r for r in failed if r.status == "pruned"]
    failed = [r for r in failed if r.status != "pruned"]
    return ScanRun(
        run_dir=run_dir,
        scan=scan,
        plan=planned,
        ranked=ranked,
        failed=failed,
        pruned=pruned,
        status=_load_status(run_dir / "status.json"),
        problems=problems,
        foreign=foreign,
        models={model_id: model.path for model_id, model in saved_models(run_dir / MODELS_DIR).items()},
        pareto=pareto_of(scan, ranked),
        tied=tied_of(scan, ranked),
    )
