"""The report of a multi-objective scan: the Pareto front figure, the set in metrics.json and on the page, the
Pareto trials marked in the parallel coordinates, ties within errors said as such, picks by the first objective."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from hpscan.core.ranking import pareto_ids
from hpscan.report import ReportError, ScanRun, build_report, load_run
from hpscan.report.parallel import figure
from hpscan.report.pareto import ReferencePoint, _front_figure, draw_front, reference_points
from support.report_runs import physics_run


def test_the_report_draws_the_front_lists_its_members_and_picks_by_the_first_objective(tmp_path: Path):
    run_dir = physics_run(tmp_path / "run", error_fraction=0.001)
    page = build_report(run_dir)
    report = run_dir / "report"
    assert (report / "pareto-front.png").stat().st_size > 10_000
    with Image.open(report / "pareto-front.png") as image:
        shown = json.loads(image.text["hpscan"])
    assert shown["references"] == []  # no comparison, no plugin's reference
    run = load_run(run_dir)
    records = {r.id: r.record.metrics for r in run.ranked}
    expected = pareto_ids({i: [m["light_rejection_77"], m["c_rejection_77"]] for i, m in records.items()},
                          ["maximize", "maximize"])  # fmt: skip
    assert list(run.pareto) == expected and 1 < len(expected) < len(records)
    assert sorted(shown["pareto"]) == sorted(expected)  # the figure joins the non-dominated
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


BDT = ReferencePoint("BDT", {"light_rejection_77": 180.0, "c_rejection_77": 6.5}, {"light_rejection_77": 9.0})


def _legend(run: ScanRun, references: list[ReferencePoint]) -> tuple[list[str], dict[str, list[str]]]:
    import matplotlib.pyplot as plt

    fig, shown = _front_figure(run, references)
    texts = [" ".join(t.get_text().split()) for t in fig.axes[0].get_legend().get_texts()]  # lines unwrapped
    plt.close(fig)
    return texts, shown


def test_a_comparable_reference_is_a_labelled_point_on_the_front(tmp_path: Path):
    run = load_run(physics_run(tmp_path / "run"))
    texts, shown = _legend(run, [BDT])
    assert "BDT" in texts and shown["references"] == ["BDT"]
    figure = draw_front(run, tmp_path / "front.png", [BDT])
    with Image.open(figure) as image:
        assert json.loads(image.text["hpscan"]) == {"pareto": shown["pareto"], "references": ["BDT"]}
    assert sorted(shown["pareto"]) == sorted(run.pareto)


def test_a_reference_that_is_not_comparable_is_named_in_the_legend_not_drawn(tmp_path: Path):
    run = load_run(physics_run(tmp_path / "run"))
    other_fc = ReferencePoint("BDT", BDT.values, BDT.errors, note="the scan's f_c = 0.08")
    texts, shown = _legend(run, [other_fc])
    assert shown["references"] == [] and "BDT: not drawn (the scan's f_c = 0.08)" in texts
    other_metrics = ReferencePoint("BDT", {"light_rejection_70": 300.0}, {})
    texts, shown = _legend(run, [other_metrics])
    assert shown["references"] == [] and "BDT: not drawn (it has no light_rejection_77 or c_rejection_77)" in texts


def test_a_malformed_reference_from_a_plugin_is_a_clear_error():
    assert reference_points(None) == [] and reference_points({"mode": "kept models"}) == []
    assert reference_points({"referencePoints": [{"label": "BDT", "values": {"a": 1}}]})[0].values == {"a": 1.0}
    with pytest.raises(ReportError, match=r"referencePoints\[0\] is malformed.*needs a label and values"):
        reference_points({"referencePoints": [{"values": {"a": 1}}]})
