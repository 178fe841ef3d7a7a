"""`hpscan report`: the paper's figures from a run folder.

``build_report(run_dir)`` writes ``run_dir/report/``: parallel-coordinates.png/.html (Figure 3), index.html and
metrics.json; with ``retrain=True`` also roc.png and rejection-vs-fc.png (Figure 4) from retraining the best, the
median and the worst combination with the dl1 payload, compared against a BDT. Plots need the ``report`` extra;
retraining needs the ``payload`` and ``tf-cpu`` extras (or a TensorFlow of your own).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hpscan.report.rundir import ReportError, ScanRun, load_run

__all__ = ["ReportError", "ScanRun", "build_report", "load_run"]

Progress = Callable[[str, int, int], None]
"""Told (what is being done, steps done, steps in all) before each step of a report."""


def _quiet(description: str, done: int, total: int) -> None:
    return None


def _require(module: str, extra: str) -> None:
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        raise ReportError(f"the report needs the Python package {module!r}: pip install 'hpscan[{extra}]'") from None


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
    }


def build_report(run_dir: Path, retrain: bool = False, top: int = 10, progress: Progress | None = None) -> Path:
    """Write run_dir/report/ and return the path of its index.html.

    Without ``retrain`` this takes seconds at any scan size; with it, three trainings and a BDT on the scan's data.
    Raises ReportError (an HPScanError) for a missing or empty run folder and for missing optional packages.
    """
    from hpscan import __version__

    tell = progress or _quiet
    started = time.monotonic()
    run_dir = Path(run_dir)
    total = 4 + (6 if retrain else 0)
    tell("reading the run folder", 0, total)
    run = load_run(run_dir)
    if not run.ranked:
        raise ReportError(f"{run_dir / 'results.jsonl'}: no combination succeeded; nothing to report")
    _require("matplotlib", "report")
    _require("plotly", "report")
    report_dir = run_dir / "report"
    report_dir.mkdir(parents=True, exist_ok=True)

    from hpscan.report.parallel import draw_html, draw_png

    tell("drawing parallel-coordinates.png", 1, total)
    draw_png(run, report_dir / "parallel-coordinates.png")
    tell("writing parallel-coordinates.html", 2, total)
    draw_html(run, report_dir / "parallel-coordinates.html")

    metrics: dict[str, Any] = {
        "generatedAt": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "hpscanVersion": __version__,
        "scan": scan_summary(run, top),
        "files": {
            "parallelCoordinates": ["parallel-coordinates.png", "parallel-coordinates.html"],
        },
        "retrain": None,
    }
    if retrain:
        _require("puma", "report")
        _require("sklearn", "report")
        from hpscan.report.comparison import compare

        def step(description: str, done: int) -> None:
            tell(description, 3 + done, total)

        metrics["retrain"] = compare(run, report_dir, step)
        metrics["files"]["retrain"] = ["roc.png", "rejection-vs-fc.png"]

    tell("writing index.html and metrics.json", total - 1, total)
    metrics["seconds"] = round(time.monotonic() - started, 1)
    (report_dir / "metrics.json").write_text(json.dumps(metrics, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    from hpscan.report.page import write_page

    page = write_page(run, report_dir, metrics, top)
    tell("done", total, total)
    return page
