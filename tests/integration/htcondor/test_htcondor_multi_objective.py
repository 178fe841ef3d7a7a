"""A multi-objective scan at the HTCondor pool (the condor_pool fixture): examples/multi-objective.yaml (light against
c rejection at 77%, Optuna's multi-objective TPE) through the real dl1 payload on synthetic jets, its two jobs
workers that pull their trials from their job ads (HPScanTrials). The status holds the Pareto set of the records
that came back from the pool, and `hpscan report` on the run folder draws the front with those members."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_htcondor_payload import condor_sites

from support.multi_objective import OBJECTIVES, SAMPLES, SETTINGS, drawn_front, front_of, points_of
from support.operator_support import REPO

pytestmark = pytest.mark.slow


def test_a_two_objective_scan_at_the_pool_holds_the_pareto_set_and_its_report_draws_the_front(condor_pool, tmp_path):
    hpscan = Path(sys.executable).parent / "hpscan"
    command = [
        str(hpscan), "run", str(REPO / "examples" / "multi-objective.yaml"), "--out", str(tmp_path), "--plain",
        "--site", "pool",
        "--set", f"sites={json.dumps(condor_sites(condor_pool))}",
        "--set", f"sampling.samples={SAMPLES}",
        "--set", f"payload.settings={json.dumps(SETTINGS)}",
        "--set", "artifacts.keep=none",
    ]  # fmt: skip
    run = subprocess.run(command, env=condor_pool.env(), capture_output=True, text=True, timeout=900, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["phase"] == "Succeeded", status.get("message")
    assert all(s["job"] for s in status["shards"])  # each worker was a job at the pool
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len({r["id"] for r in records}) == len(records) == SAMPLES
    assert all(r["status"] == "succeeded" for r in records), [r["status"] for r in records]
    points, expected = points_of(records), front_of(records)  # the non-dominated, computed here from the records

    assert status["paretoSize"] == len(expected)
    assert [m["id"] for m in status["pareto"]] == expected
    for member in status["pareto"]:
        assert member["values"] == dict(zip(OBJECTIVES, points[member["id"]], strict=True))
        assert set(member["errors"]) == set(OBJECTIVES) and all(e > 0 for e in member["errors"].values())
    assert f"Pareto set ({len(expected)})" in run.stdout

    report = subprocess.run([str(hpscan), "report", str(tmp_path)], capture_output=True, text=True, timeout=300,
                            check=False)  # fmt: skip
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    figure = tmp_path / "report" / "pareto-front.png"
    assert figure.stat().st_size > 10_000
    assert drawn_front(figure) == sorted(expected)  # the figure joins exactly the non-dominated trials
    summary = json.loads((tmp_path / "report" / "metrics.json").read_text())["scan"]
    assert [m["id"] for m in summary["pareto"]["members"]] == expected
