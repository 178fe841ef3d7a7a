"""The report of a multi-objective scan: the Pareto front figure, the set in metrics.json and on the page, the
Pareto trials marked in the parallel coordinates, ties within errors said as such, picks by the first objective."""

from __future__ import annotations

import json
from pathlib import Path

from hpscan.core.ranking import pareto_ids
from hpscan.report import build_report, load_run
from hpscan.report.parallel import figure
from support.report_runs import physics_run


def test_the_report_draws_the_front_lists_its_members_and_picks_by_the_first_objective(tmp_path: Path):
    run_dir = physics_run(tmp_path / "run", error_fraction=0.001)
    page = build_report(run_dir)
    report = run_dir / "report"
    assert (report / "pareto-front.png").stat().st_size > 10_000
    run = load_run(run_dir)
    records = {r.id: r.record.metrics for r in run.ranked}
    expected = pareto_ids({i: [m["light_rejection_77"], m["c_rejection_77"]] for i, m in records.items()},
                          ["maximize", "maximize"])  # fmt: skip
    assert list(run.pareto) == expected and 1 < len(expected) < len(records)
    scan = json.loads((report / "metrics.json").read_text())["scan"]
    assert [m["id"] for m in scan["pareto"]["members"]] == expected
    first = scan["pareto"]["members"][0]
    assert first["errors"]["light_rejection_77"] == records[first["id"]]["light_rejection_77"] * 0.001
    assert scan["best"]["id"] == max(records, key=lambda i: records[i]["light_rejection_77"])
    html = page.read_text()
    assert f"Pareto front: {len(expected)} combinations" in html and "pareto-front.png" not in html  # inlined
    assert "several objectives: the first ranks the table and picks the best, median and worst" in html
    assert "tied within errors" not in html  # 0.1% errors: the leaders stand apart


def test_the_parallel_coordinates_mark_the_pareto_set(tmp_path: Path):
    run = load_run(physics_run(tmp_path / "run"))
    dimensions = figure(run)["data"][0]["dimensions"]
    marked = dimensions[-1]
    assert marked["label"] == "in the Pareto set" and marked["ticktext"] == ["no", "yes"]
    ordered = list(reversed(run.ranked))  # the figure's line order: worst first
    assert [r.id for r, on in zip(ordered, marked["values"], strict=True) if on] == sorted(
        run.pareto, key=lambda i: [r.id for r in ordered].index(i)
    )


def test_leaders_within_errors_are_called_tied_on_the_page(tmp_path: Path):
    run_dir = physics_run(tmp_path / "run", error_fraction=0.2)  # 20% errors: the leaders overlap
    run = load_run(run_dir)
    assert len(run.tied) > 1 and run.tied[0] == run.best.id
    html = build_report(run_dir).read_text()
    assert "tied within errors" in html and "names no single winner" in html
