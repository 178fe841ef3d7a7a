"""Pruning without a round trip, locally: a TPE + ASHA scan of the real dl1 payload whose epochs take a fraction of
a second. A stop request from hpscan's study arrives an epoch or more late (a poll step, then the worker's next
read), so before the workers judged rungs themselves such a scan pruned its trials at whatever epoch the request
caught them, or not at all. Now ASHA's rung thresholds travel in the workers' trials.jsonl (``{"rungs": ...}``
lines) and a worker stops a trial at the rung's own epoch (2: examples/adaptive.yaml's minEpochs)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
HPSCAN = Path(sys.executable).parent / "hpscan"
EXAMPLE = REPO / "examples" / "adaptive.yaml"

SAMPLES = 14
EPOCHS = 6
RUNG = 2  # examples/adaptive.yaml: minEpochs 2, reductionFactor 3 (the next rung, 6, is the last epoch)
FAST = {  # a quarter of a second an epoch on one core
    "epochs": EPOCHS,
    "patience": EPOCHS,
    "fuse": 1,
    "batch_size": 500,
    "data": {"synthetic": {"jets": 20000, "seed": 1}},
}


def fast_scan(out: Path, *extra: str) -> list[str]:
    return [
        str(HPSCAN), "run", str(EXAMPLE), "--out", str(out), "--plain",
        "--set", f"sampling.samples={SAMPLES}",
        "--set", f"payload.settings={json.dumps(FAST)}",
        "--set", "artifacts.keep=none",
        *extra,
    ]  # fmt: skip


def rung_lines(trials_jsonl: list[str]) -> list[dict[str, Any]]:
    return [entry["rungs"] for entry in map(json.loads, trials_jsonl) if "rungs" in entry]


def assert_pruned_at_rungs(records: list[dict[str, Any]], sent: dict[int, list[dict[str, Any]]], at_least: int) -> None:
    """Trials were stopped at the rung's epoch, each worse than a threshold for that rung its worker was sent."""
    pruned = [r for r in records if r["status"] == "pruned"]
    at_rung = [r for r in pruned if r["epochs"] == RUNG]
    assert len(at_rung) >= at_least, Counter(r["epochs"] for r in pruned)
    for record in at_rung:
        thresholds = [
            rung["threshold"] for line in sent[record["shard"]] for rung in line["rungs"] if rung["epoch"] == RUNG
        ]
        assert any(record["metrics"]["val_loss"] > t for t in thresholds), (record, thresholds)


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
