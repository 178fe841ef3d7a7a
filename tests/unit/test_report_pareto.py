"""The report of a multi-objective scan: the Pareto front figure, the set in metrics.json and on the page, the
Pareto trials marked in the parallel coordinates, ties within errors said as such, picks by the first objective."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from report_runs import write_fake_run

from hpscan.api.contract import ResultRecord
from hpscan.core.ranking import pareto_ids
from hpscan.core.results import iter_record_lines, read_records
from hpscan.report import build_report, load_run
from hpscan.report.parallel import figure

OBJECTIVES = [{"metric": "light_rejection_77", "goal": "maximize"}, {"metric": "c_rejection_77", "goal": "maximize"}]


def physics_run(out: Path, error_fraction: float = 0.01) -> Path:
    """The quickstart's fake run made a two-objective scan: each record's light and c rejection trade off along
    its made-up loss (a network good at one is worse at the other), with errors of ``error_fraction``."""
    run_dir = write_fake_run(out)
    document = yaml.safe_load((run_dir / "scan.yaml").read_text())
    document["spec"].pop("objective")
    document["spec"]["objectives"] = OBJECTIVES
    (run_dir / "scan.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    records, _ = read_records(run_dir / "results.jsonl")
    physics: list[ResultRecord] = []
    for record in records:
        loss = record.metrics["val_loss"]
        position = int(record.id[1:].split("-")[0])
        light = 300.0 - 200.0 * loss + 10.0 * (position % 5)
        charm = 8.0 - 1.0 * (position % 5) - loss
        metrics = {"val_loss": loss, "light_rejection_77": light, "c_rejection_77": charm,
                   "light_rejection_77_err": light * error_fraction, "c_rejection_77_err": charm * error_fraction}  # fmt: skip
        physics.append(record.model_copy(update={"metrics": metrics}))
    (run_dir / "results.jsonl").write_text("".join(iter_record_lines(physics)), encoding="utf-8")
    return run_dir


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
