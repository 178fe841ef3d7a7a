"""A multi-objective scan end to end on this CPU: examples/multi-objective.yaml (light against c rejection at 77%,
Optuna's multi-objective TPE, workers that pull) through the real dl1 payload, reduced with --set; its status holds
the Pareto set, `hpscan status` lists it and the report draws the front."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from support.multi_objective import OBJECTIVES, front_of, points_of

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.integration
def test_a_two_objective_scan_runs_and_its_status_and_report_show_the_front(tmp_path):
    hpscan = Path(sys.executable).parent / "hpscan"
    reduced = ["--set", "payload.settings.epochs=3", "--set", "sampling.samples=6", "--set", "artifacts.keep=none",
               "--set", "payload.settings.data.synthetic.jets=48000"]  # fmt: skip
    run = subprocess.run(
        [str(hpscan), "run", str(REPO / "examples" / "multi-objective.yaml"), "--out", str(tmp_path), "--plain",
         *reduced],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(records) == 6 and all(r["status"] == "succeeded" for r in records)
    points, expected = points_of(records), front_of(records)

    status = json.loads((tmp_path / "status.json").read_text())
    assert status["phase"] == "Succeeded" and status["paretoSize"] == len(expected)
    assert [m["id"] for m in status["pareto"]] == expected
    assert all(set(m["values"]) == set(OBJECTIVES) and set(m["errors"]) == set(OBJECTIVES) for m in status["pareto"])
    assert status["best"]["id"] == max(points, key=lambda i: points[i][0])  # ranked by the first objective
    assert f"Pareto set ({len(expected)})" in run.stdout

    shown = subprocess.run([str(hpscan), "status", str(tmp_path)], capture_output=True, text=True, check=True,
                           env={"COLUMNS": "200", "PATH": str(hpscan.parent)})  # fmt: skip
    assert f"Pareto set ({len(expected)})" in shown.stdout and expected[0] in shown.stdout

    subprocess.run([str(hpscan), "report", str(tmp_path)], capture_output=True, text=True, timeout=300, check=True)
    report = tmp_path / "report"
    assert (report / "pareto-front.png").stat().st_size > 10_000
    summary = json.loads((report / "metrics.json").read_text())["scan"]
    assert [m["id"] for m in summary["pareto"]["members"]] == expected
    assert f"Pareto front: {len(expected)} combinations" in (report / "index.html").read_text()
