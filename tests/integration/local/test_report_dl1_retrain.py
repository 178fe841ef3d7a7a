"""`hpscan report --retrain` with the real dl1 payload and TensorFlow, on tiny synthetic data (about a minute)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hpscan.cli import app
from support.report_runs import write_fake_run

pytestmark = pytest.mark.integration

TINY = {"epochs": 2, "patience": 1, "batch_size": 500, "data": {"synthetic": {"jets": 12000, "seed": 3}}}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def reported(tmp_path_factory) -> Path:
    pytest.importorskip("tensorflow")
    pytest.importorskip("dl1.train")
    run_dir = write_fake_run(tmp_path_factory.mktemp("report") / "run", failed_every=6, settings=TINY)
    result = CliRunner().invoke(app, ["report", str(run_dir), "--retrain", "--top", "4"])
    assert result.exit_code == 0, result.output
    return run_dir / "report"


def test_all_plots_and_the_page_are_written(reported: Path):
    for name in ("parallel-coordinates.png", "roc.png", "rejection-vs-fc.png", "c-tagging.png"):
        assert (reported / name).read_bytes()[:8] == PNG_MAGIC, name
    html = (reported / "index.html").read_text()
    assert html.count("data:image/png;base64,") == 4
    assert "stand-in for MV2c10" in html
    assert "Retrained: best, median and worst" in html and "c-tagging from the same networks" in html


def test_metrics_hold_the_three_networks_and_the_bdt(reported: Path):
    metrics = json.loads((reported / "metrics.json").read_text())
    retrained = metrics["retrain"]
    taggers = retrained["taggers"]
    assert list(taggers) == ["best", "median", "worst", "bdt"]
    for key in ("best", "median", "worst"):
        tagger = taggers[key]
        assert tagger["combination"]["id"] == metrics["scan"][key]["id"]
        assert 1 <= tagger["epochs"] <= TINY["epochs"]
        assert 0 < tagger["testLoss"] < 1.5  # better than guessing among three classes (ln 3 = 1.1) or close
        light_77 = tagger["workingPoints"]["77"]["ujets"]
        assert light_77 is None or light_77 > 2  # a trained tagger rejects light jets
    # The test set is the payload's held-out sixth of the jets.
    assert retrained["testSet"]["jets"] == pytest.approx(TINY["data"]["synthetic"]["jets"] / 6, rel=0.1)
    assert taggers["bdt"]["fcScan"] is None
    assert taggers["bdt"]["workingPoints"]["77"]["ujets"] > 2
    assert taggers["bdt"]["iterations"] < 2000  # its own early stopping ended it: converged, not capped
    assert taggers["best"]["workingPoints"]["77"]["ujetsError"] > 0
    assert taggers["best"]["cTagging"]["workingPoints"]["30"]["ujets"] > 1
