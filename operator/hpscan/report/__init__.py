"""`hpscan report`: the paper's figures from a run folder.

``build_report(run_dir)`` writes ``run_dir/report/``: parallel-coordinates.png/.html (Figure 3), for a
multi-objective scan pareto-front.png (hpscan.report.pareto), index.html and metrics.json. When the scan kept the models of its best, median and worst combination (spec.artifacts), the
payload's report plugin (hpscan.report.plugin, found through the entry point group ``hpscan.report``) compares them
and adds its plots and section; with ``retrain=True`` it trains them again instead (for scans that kept none). The
dl1 payload's plugin (in the dl1 package) draws roc.png, rejection-vs-fc.png (Figure 4) and c-tagging.png.
Plots need the ``report`` extra; dl1's retraining also needs the ``payload`` and ``tf-cpu`` extras.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hpscan.api.spec import HPScanSpec
from hpscan.core.manifest import load_scan
from hpscan.errors import HPScanError
from hpscan.report.plugin import ENTRY_POINT_GROUP, ReportPlugin, find_plugin, payload_name, require
from hpscan.report.rundir import Ranked, ReportError, ScanRun, load_run

__all__ = ["ENTRY_POINT_GROUP", "Ranked", "ReportError", "ReportPlugin", "ScanRun", "build_report", "load_run"]

Progress = Callable[[str, int, int], None]
"""Told (what is being done, steps done, steps in all) before each step of a report."""


def _quiet(description: str, done: int, total: int) -> None:
    return None


def scan_summary(run: ScanRun, top: int = 10) -> dict[str, Any]:
    """The numbers behind the parallel-coordinates plot and the top table, JSON-ready."""
    spec = run.scan.spec

    def entry(key: str) -> dict[str, Any]:
        ranked = run.picks()[key]
        return {"id": ranked.id, "rank": ranked.rank + 1, "value": ranked.value, "parameters": ranked.record.parameters}

    return {
        "name": run.name,
        "phase": run.phase,
        "objective": {"metric": spec.objective.metric, "goal": spec.objective.goal},
        "parameters": run.plan.parameter_names,
        "combinations": {
            "total": run.plan.total,
            "succeeded": len(run.ranked),
            "failed": len(run.failed),
            "notRun": run.plan.total - run.recorded,
        },
        "best": entry("best"),
        "median": entry("median"),
        "worst": entry("worst"),
        "top": [{"id": r.id, "value": r.value, "parameters": r.record.parameters} for r in run.ranked[:top]],
        "tied": list(run.tied),
        "pareto": _pareto_summary(run),
    }


def _pareto_summary(run: ScanRun) -> dict[str, Any] | None:
    """A multi-objective scan's objectives and Pareto set (values and errors), JSON-ready; None for one objective."""
    if not run.scan.spec.multi_objective:
        return None
    from hpscan.report.pareto import front_points

    goals = run.scan.spec.goals
    by_id = {point.id: point for point in front_points(run)}
    members = [
        {
            "id": member,
            "values": dict(zip((g.metric for g in goals), by_id[member].values, strict=True)),
            "errors": {g.metric: e for g, e in zip(goals, by_id[member].errors, strict=True) if e is not None},
        }
        for member in run.pareto
    ]
    return {"objectives": [{"metric": g.metric, "goal": g.goal} for g in goals], "members": members}


def _plugin(spec: HPScanSpec, retrain: bool) -> ReportPlugin | None:
    """The scan's report plugin: required with ``retrain``, else looked for only to say what --retrain would do."""
    payload = payload_name(spec)
    if not retrain:
        try:
            return find_plugin(payload)
        except ReportError:
            return None
    plugin = find_plugin(payload)
    if plugin is None:
        raise ReportError(
            f"--retrain: the payload {payload!r} has no report plugin: no installed package registers an entry "
            f"point named {payload!r} in the group {ENTRY_POINT_GROUP!r}; without one, only the "
            "parallel-coordinates report can be made (leave out --retrain)"
        )
    return plugin


def _peek_plugin(run_dir: Path) -> ReportPlugin | None:
    """With ``retrain``, the plugin from scan.yaml alone, so that the first progress step already counts the
    plugin's steps; None when scan.yaml cannot be read (load_run then says why)."""
    try:
        scan = load_scan(run_dir / "scan.yaml")
    except (HPScanError, OSError):
        return None
    return _plugin(scan.spec, retrain=True)


def build_report(run_dir: Path, retrain: bool | None = False, top: int = 10, progress: Progress | None = None) -> Path:
    """Write run_dir/report/ and return the path of its index.html.

    ``retrain``: False compares the kept models when the scan kept the picked ones (else the page says how to get
    the comparison); True retrains the picks; None does whichever is possible (kept models first). Without a
    comparison this takes seconds at any scan size; with one, whatever the payload's report plugin does (dl1:
    evaluating three networks and a cached BDT; retraining: three trainings). Raises ReportError (an HPScanError)
    for a missing or empty run folder, for missing optional packages, and for ``retrain`` when the payload has no
    report plugin.
    """
    from hpscan import __version__

    tell = progress or _quiet
    started = time.monotonic()
    run_dir = Path(run_dir)
    plugin = _peek_plugin(run_dir) if retrain else None
    total = 4 + (plugin.steps if plugin is not None else 0)
    tell("reading the run folder", 0, total)
    run = load_run(run_dir)
    if not run.ranked:
        raise ReportError(f"{run_dir / 'results.jsonl'}: no combination succeeded; nothing to report")
    kept = run.picked_models() is not None
    if retrain is None:
        retrain = not kept
    if plugin is None:
        plugin = _plugin(run.scan.spec, retrain)
    compare = plugin is not None and (retrain or kept)
    total = 4 + (plugin.steps if compare and plugin is not None else 0)
    require("matplotlib", "report")
    require("plotly", "report")
    report_dir = run_dir / "report"
    report_dir.mkdir(parents=True, exist_ok=True)

    from hpscan.report.parallel import draw_html
    from hpscan.report.parallel_png import draw_png

    tell("drawing parallel-coordinates.png", 1, total)
    draw_png(run, report_dir / "parallel-coordinates.png")
    tell("writing parallel-coordinates.html", 2, total)
    draw_html(run, report_dir / "parallel-coordinates.html")
    files = ["parallel-coordinates.png", "parallel-coordinates.html"]

    metrics: dict[str, Any] = {
        "generatedAt": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "hpscanVersion": __version__,
        "scan": scan_summary(run, top),
        "files": {
            "parallelCoordinates": files,
            **({"paretoFront": ["pareto-front.png"]} if run.scan.spec.multi_objective else {}),
        },
        "retrain": None,
    }
    if compare and plugin is not None:

        def step(description: str, done: int) -> None:
            tell(description, 3 + done, total)

        metrics["retrain"] = plugin.compare(run, report_dir, step, retrain=bool(retrain))
        metrics["files"]["retrain"] = list(plugin.files)
    if run.scan.spec.multi_objective:
        from hpscan.report.pareto import draw_front, reference_points

        # after the comparison: its reference taggers (dl1: the BDT) join the front
        draw_front(run, report_dir / "pareto-front.png", reference_points(metrics["retrain"]))

    tell("writing index.html and metrics.json", total - 1, total)
    metrics["seconds"] = round(time.monotonic() - started, 1)
    (report_dir / "metrics.json").write_text(json.dumps(metrics, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    from hpscan.report.page import write_page

    page = write_page(run, report_dir, metrics, top, plugin, payload_name(run.scan.spec))
    tell("done", total, total)
    return page
