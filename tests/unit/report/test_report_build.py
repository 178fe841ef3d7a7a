"""`hpscan report DIR` without retraining: the run folder read back, the files written, clear errors."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hpscan.cli import app
from hpscan.report import ReportError, build_report, load_run
from support.report_runs import EXAMPLES, write_fake_run, write_status

runner = CliRunner()


def test_report_writes_the_plots_the_page_and_the_numbers(tmp_path: Path):
    run_dir = write_fake_run(tmp_path / "run", failed_every=6)
    write_status(run_dir, "Succeeded")
    steps: list[tuple[str, int, int]] = []
    page = build_report(run_dir, top=5, progress=lambda what, done, total: steps.append((what, done, total)))
    report = run_dir / "report"
    assert page == report / "index.html"
    for name in ("parallel-coordinates.png", "parallel-coordinates.html", "index.html", "metrics.json"):
        assert (report / name).stat().st_size > 0, name
    assert not (report / "roc.png").exists()
    assert steps[-1][1] == steps[-1][2]  # progress ends complete

    metrics = json.loads((report / "metrics.json").read_text())
    scan = metrics["scan"]
    assert scan["name"] == "quickstart" and scan["phase"] == "Succeeded"
    assert scan["combinations"] == {"total": 24, "succeeded": 20, "failed": 4, "notRun": 0}
    assert scan["best"]["rank"] == 1 and scan["worst"]["rank"] == 20 and scan["median"]["rank"] == 10
    assert scan["best"]["value"] <= scan["median"]["value"] <= scan["worst"]["value"]
    assert len(scan["top"]) == 5
    assert metrics["retrain"] is None

    html = page.read_text()
    assert "<h1>HPScan <code>quickstart</code></h1>" in html
    assert html.count('<tr class="best">') == 1 and scan["best"]["id"] in html
    assert "data:image/png;base64," in html  # the plot travels inside the page
    assert not re.search(r'(src|href)="https?://', html)  # nothing fetched from the network
    assert 'href="parallel-coordinates.html"' in html
    assert "--retrain" in html  # says how to get the ROC curves


def test_median_and_worst_follow_the_goal(tmp_path: Path):
    run_dir = write_fake_run(tmp_path)
    scan = (run_dir / "scan.yaml").read_text().replace("goal: minimize", "goal: maximize")
    (run_dir / "scan.yaml").write_text(scan)
    run = load_run(run_dir)
    picks = run.picks()
    assert picks["best"].value == max(r.value for r in run.ranked)
    assert picks["worst"].value == min(r.value for r in run.ranked)
    assert picks["median"].rank == 11


def test_duplicate_records_count_once_and_keep_their_best_value(tmp_path: Path):
    run_dir = write_fake_run(tmp_path)
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    first["metrics"]["val_loss"] = 0.01  # the retried shard did better
    failed_again = dict(json.loads(lines[1]), status="failed", metrics={})
    (run_dir / "results.jsonl").write_text("\n".join([*lines, json.dumps(first), json.dumps(failed_again)]) + "\n")
    run = load_run(run_dir)
    assert len(run.ranked) == 24 and not run.failed
    assert run.best.id == first["id"] and run.best.value == 0.01


def test_a_partial_run_is_reported_with_what_finished(tmp_path: Path):
    run_dir = write_fake_run(tmp_path, limit=10)
    build_report(run_dir)
    metrics = json.loads((run_dir / "report" / "metrics.json").read_text())
    assert metrics["scan"]["combinations"]["notRun"] == 14
    assert metrics["scan"]["phase"] == "Unknown"  # no status.json: the runner never finished


@pytest.mark.parametrize(
    ("prepare", "message"),
    [
        (lambda d: None, "no such run folder"),
        (lambda d: d.mkdir(), "no scan.yaml"),
        (lambda d: (d.mkdir(), shutil.copy(EXAMPLES / "quickstart.yaml", d / "scan.yaml")), "no result records yet"),
    ],
)
def test_missing_pieces_are_one_clear_error(tmp_path: Path, prepare, message):
    run_dir = tmp_path / "run"
    prepare(run_dir)
    with pytest.raises(ReportError, match=message):
        build_report(run_dir)


def test_a_run_where_everything_failed_is_an_error(tmp_path: Path):
    run_dir = write_fake_run(tmp_path, failed_every=1)
    with pytest.raises(ReportError, match="no combination succeeded"):
        build_report(run_dir)


def test_cli_writes_the_report(tmp_path: Path):
    run_dir = write_fake_run(tmp_path / "run")
    result = runner.invoke(app, ["report", str(run_dir), "--top", "3"])
    assert result.exit_code == 0, result.output
    assert "report written to" in result.output
    assert (run_dir / "report" / "index.html").exists()


def test_cli_error_is_one_line_without_traceback(tmp_path: Path):
    result = runner.invoke(app, ["report", str(tmp_path / "nowhere")])
    assert result.exit_code == ReportError.exit_code
    assert "no such run folder" in result.output
    assert "Traceback" not in result.output
