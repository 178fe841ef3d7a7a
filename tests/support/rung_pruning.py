"""A TPE + ASHA scan of dl1 whose epochs take a fraction of a second, and how to tell its trials were stopped at the
rung's own epoch: shared by the local and the HTCondor tests of pruning without a round trip."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

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
