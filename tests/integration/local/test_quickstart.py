"""The README's first command, end to end on this CPU: the quickstart scan through the real dl1 payload
(TensorFlow), then the report from the models the scan kept; a re-run is served from the report's cache."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.integration
@pytest.mark.slow
def test_quickstart_runs_to_succeeded_with_the_papers_plots(tmp_path):
    hpscan = Path(sys.executable).parent / "hpscan"
    run = subprocess.run(
        [str(hpscan), "run", str(REPO / "examples" / "quickstart.yaml"), "--out", str(tmp_path), "--report", "--plain"],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["phase"] == "Succeeded" and status["progress"] == "24/24"
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(records) == 24 == len({r["id"] for r in records})
    assert all(r["status"] == "succeeded" and r["device"] for r in records)
    values = sorted(r["metrics"]["val_loss"] for r in records)
    assert values[-1] - values[0] > 0.02  # the hyperparameters matter: the scan is not flat
    report = tmp_path / "report"
    for name in (
        "parallel-coordinates.png",
        "parallel-coordinates.html",
        "roc.png",
        "rejection-vs-fc.png",
        "c-tagging.png",
        "index.html",
    ):
        assert (report / name).stat().st_size > 10_000, name
    metrics = json.loads((report / "metrics.json").read_text())["retrain"]
    assert metrics["mode"] == "kept models" and metrics["testSet"]["jets"] == 500_000
    best_77 = metrics["taggers"]["best"]["workingPoints"]["77"]
    assert best_77["ujetsError"] / best_77["ujets"] < 0.04  # statistics that mean something
    kept = sorted(p.name for p in (tmp_path / "models").iterdir())
    assert 3 <= len(kept) <= 5 and metrics["taggers"]["best"]["combination"]["id"] in kept
    assert "<script" in (report / "parallel-coordinates.html").read_text()[:2_000_000]  # self-contained
    assert "report:" in run.stdout and "index.html" in run.stdout

    rerun = subprocess.run(
        [str(hpscan), "run", str(REPO / "examples" / "quickstart.yaml"), "--out", str(tmp_path), "--plain", "--report"],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    assert "24 already recorded" in rerun.stdout
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 24  # nothing trained twice
    assert "report: evaluating the kept best model" in rerun.stderr  # it says what it does
    again = json.loads((report / "metrics.json").read_text())["retrain"]
    assert set(again["cache"]["hits"]) >= {"test jets", "best scores", "BDT"}
    assert again["taggers"]["best"]["workingPoints"] == metrics["taggers"]["best"]["workingPoints"]
