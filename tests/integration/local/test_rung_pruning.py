"""Pruning without a round trip, locally: a TPE + ASHA scan of the real dl1 payload whose epochs take a fraction of
a second. A stop request from hpscan's study arrives an epoch or more late (a poll step, then the worker's next
read), so before the workers judged rungs themselves such a scan pruned its trials at whatever epoch the request
caught them, or not at all. Now ASHA's rung thresholds travel in the workers' trials.jsonl (``{"rungs": ...}``
lines) and a worker stops a trial at the rung's own epoch (2: examples/adaptive.yaml's minEpochs)."""

from __future__ import annotations

import json
import subprocess

import pytest

from support.rung_pruning import EPOCHS, RUNG, SAMPLES, assert_pruned_at_rungs, fast_scan, rung_lines


@pytest.mark.integration
def test_a_scan_of_sub_second_epochs_prunes_trials_at_their_rung_locally(tmp_path):
    run = subprocess.run(fast_scan(tmp_path), capture_output=True, text=True, timeout=900, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    status = json.loads((tmp_path / "status.json").read_text())
    counts = status["combinations"]
    assert status["phase"] == "Succeeded" and counts["suggested"] == counts["total"] == SAMPLES, counts
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len({r["id"] for r in records}) == len(records) == SAMPLES
    durations = sorted(r["durationSeconds"] / r["epochs"] for r in records)
    assert durations[len(durations) // 2] < 1.0, durations  # the median trial's epochs took under a second
    sent = {
        int(path.parent.name.split("-")[1]): rung_lines(path.read_text().splitlines())
        for path in (tmp_path / "work").glob("shard-*/trials.jsonl")
    }
    assert all(sent.values()), sent  # both workers got thresholds while they ran
    assert_pruned_at_rungs(records, sent, at_least=2)  # 5 of 14 here, 1 before the thresholds travelled
    saved = sum(r["maxEpochs"] - r["epochs"] for r in records if r["status"] == "pruned")
    assert status["training"]["epochsSaved"] == saved >= 2 * (EPOCHS - RUNG)  # the ledger counts what they saved
    assert counts["pruned"] == sum(r["status"] == "pruned" for r in records)
