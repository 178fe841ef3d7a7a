"""Pruning without a round trip at the HTCondor pool (the condor_pool fixture): a TPE + ASHA scan of the real dl1
payload whose epochs take a fraction of a second on the slot's core. A stop request takes seconds to reach a job
(an edit of its ad, then the job's next chirp read: docs/htcondor.md), longer than a whole trial here; ASHA's rung
thresholds travel in the same attribute as the trials (HPScanTrials, ``{"rungs": ...}`` lines), and the job stops a
trial at the rung's epoch itself."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
from test_htcondor_adaptive import run_command

from hpscan.job.chirp import value_lines
from support.rung_pruning import EPOCHS, FAST, RUNG, assert_pruned_at_rungs, rung_lines

pytestmark = pytest.mark.slow

SAMPLES = 30
STRATEGY = "qmc"
"""Thirty quasi-random trials where the local test has 14 of TPE: a job reads its ad's new thresholds seconds late
(the operator's next step, then the job's next read of its ad), later still on a loaded machine, so the first
trials pass their rung before any threshold arrives; and TPE's later trials are mostly good ones, which no rung
stops. Measured with TPE: 14 trials gave 3 stopped at the rung, 20 gave 2, and none in one CI run of the four
groups side by side (ci-14); before the thresholds travelled, 14 gave none pruned at all. Quasi-random trials
spread over the space, so about two of three that start after the thresholds arrived are stopped at the rung."""


def rungs_sent(pool: Any, status: dict[str, Any]) -> dict[int, list[dict[str, Any]]]:
    """The rungs lines each worker's job ad carried (HPScanTrials), from the schedd's history."""
    clusters = sorted({s["job"].split(".")[0] for s in status["shards"]})
    schedd, constraint = pool.schedd(), f"member(ClusterId, {{{', '.join(clusters)}}})"
    ads = pool.wait(
        lambda: (
            (found := list(schedd.history(constraint, ["HPScanTrials", "HPScanShard"], match=10)))
            and len(found) >= 2
            and found
        ),
        60,
        "the two jobs in the schedd's history",
    )
    return {int(ad["HPScanShard"]): rung_lines(value_lines(ad.get("HPScanTrials"))) for ad in ads}


def test_a_scan_of_sub_second_epochs_prunes_trials_at_their_rung_at_the_pool(condor_pool, tmp_path):
    command = [*run_command(condor_pool, tmp_path, SAMPLES, FAST), "--set", f"sampling.strategy={STRATEGY}"]
    run = subprocess.run(command, env=condor_pool.env(), capture_output=True, text=True, timeout=900, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    status = json.loads((tmp_path / "status.json").read_text())
    counts = status["combinations"]
    assert status["phase"] == "Succeeded" and counts["suggested"] == counts["total"] == SAMPLES, counts
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len({r["id"] for r in records}) == len(records) == SAMPLES
    per_epoch = sorted(r["durationSeconds"] / r["epochs"] for r in records)
    assert per_epoch[len(per_epoch) // 2] < 1.0, per_epoch  # the median trial's epochs took under a second
    assert_pruned_at_rungs(records, rungs_sent(condor_pool, status), at_least=1)
    saved = sum(r["maxEpochs"] - r["epochs"] for r in records if r["status"] == "pruned")
    assert status["training"]["epochsSaved"] == saved >= EPOCHS - RUNG
