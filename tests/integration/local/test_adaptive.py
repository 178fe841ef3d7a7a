"""Adaptive search on this CPU with the real dl1 payload (TensorFlow): Optuna's TPE suggests, ASHA stops hopeless
trials at an epoch boundary, two workers pull trials; and a `kill -9` of hpscan mid-scan loses and repeats
nothing: the re-run completes the budget exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
HPSCAN = Path(sys.executable).parent / "hpscan"
EXAMPLE = REPO / "examples" / "adaptive.yaml"


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]


def handed_out(run_dir: Path) -> Counter:
    """How often each trial id was handed to a worker and not taken back (over all workers' trials.jsonl)."""
    held: Counter = Counter()
    for path in (run_dir / "work").glob("shard-*/trials.jsonl"):
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            if "trial" in entry:
                held[entry["trial"]["id"]] += 1
            elif "withdraw" in entry:
                held[entry["withdraw"]] -= 1
    return +held


@pytest.mark.integration
def test_tpe_with_asha_runs_to_succeeded_with_pruned_trials_in_status_and_records(tmp_path):
    run = subprocess.run(
        [str(HPSCAN), "run", str(EXAMPLE), "--out", str(tmp_path), "--plain"],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    status = json.loads((tmp_path / "status.json").read_text())
    counts = status["combinations"]
    assert status["phase"] == "Succeeded", status["message"]
    assert counts["suggested"] == counts["total"] == 24 and counts["pending"] == 0
    got = records(tmp_path)
    assert len(got) == 24 == len({r["id"] for r in got})  # every trial once
    by_status = Counter(r["status"] for r in got)
    assert by_status["pruned"] == counts["pruned"] > 0 and by_status["succeeded"] == counts["succeeded"] > 0
    pruned = [r for r in got if r["status"] == "pruned"]
    # stopped at an epoch boundary after the first rung, before the end, with the metrics of that epoch
    assert all(2 <= r["epochs"] < r["maxEpochs"] == 15 and "val_loss" in r["metrics"] for r in pruned)
    saved = sum(r["maxEpochs"] - r["epochs"] for r in pruned)
    assert status["training"] == {"epochs": sum(r["epochs"] for r in got), "epochsSaved": saved, "epochsResumed": 0}
    assert f"{counts['pruned']} pruned" in run.stdout and "early stopping:" in run.stdout
    assert status["best"]["id"] in {r["id"] for r in got if r["status"] == "succeeded"}
    shown = subprocess.run([str(HPSCAN), "status", str(tmp_path)], capture_output=True, text=True, check=True).stdout
    assert f"{counts['pruned']} pruned" in shown and f"pruning saved {saved}" in shown
    # each worker got trials while it ran (both pulled; neither got a fixed list)
    assert all(s["total"] >= 3 for s in status["shards"]), status["shards"]


@pytest.mark.integration
def test_kill_9_of_hpscan_mid_scan_loses_and_repeats_no_trial(tmp_path):
    command = [str(HPSCAN), "run", str(EXAMPLE), "--out", str(tmp_path), "--plain", "--set", "sampling.samples=14"]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = tmp_path / "results.jsonl"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and first.poll() is None:
        if results.exists() and len(results.read_text().splitlines()) >= 5:
            break
        time.sleep(0.2)
    assert first.poll() is None, "the scan ended before it could be killed"
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    before = records(tmp_path)
    assert 5 <= len(before) < 14
    time.sleep(2)  # the payloads got SIGTERM with their parent (PR_SET_PDEATHSIG): nobody writes any more
    settled = results.read_text()
    time.sleep(2)
    assert results.read_text() == settled

    again = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["phase"] == "Succeeded" and status["combinations"]["suggested"] == 14
    got = records(tmp_path)
    ids = Counter(r["id"] for r in got)
    assert len(ids) == 14 and max(ids.values()) == 1, ids  # the budget exactly, nothing recorded twice
    assert {r["id"] for r in before} <= set(ids)  # nothing recorded is lost
    assert set(handed_out(tmp_path)) == set(ids) and max(handed_out(tmp_path).values()) == 1
