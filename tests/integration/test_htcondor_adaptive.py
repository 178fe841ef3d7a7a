"""An adaptive scan (Optuna's TPE, ASHA early stopping) of the real dl1 payload through the HTCondor backend on the
personal pool (the condor_pool fixture): two jobs are workers that pull their trials from job attributes the
operator edits at the schedd (HPScanTrials, HPScanStops) and report per-epoch losses back through chirp
(HPScanProgress); neither job is ever called into. `hpscan run --site` drives it, as in test_htcondor_payload.py."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
from operator_support import REPO
from test_htcondor_payload import condor_sites

from hpscan.job.chirp import value_lines

pytestmark = pytest.mark.slow

SAMPLES = 12  # TPE suggests from the 11th on (its 10 start-up trials are random)
EPOCHS = 6
# Epochs of about a second and a half on the slot's one core (tiny nets train fast: many small batches), so a stop request (a few seconds to arrive, see docs/htcondor.md)
# reaches a trial before its last epoch.
SETTINGS = {
    "epochs": EPOCHS,
    "patience": EPOCHS,
    "fuse": 1,
    "batch_size": 2,
    "data": {"synthetic": {"jets": 60000, "seed": 1}},
}


def position(trial_id: str) -> int:
    return int(trial_id[1:].split("-")[0])


def test_tpe_with_asha_through_htcondor_workers_that_pull(condor_pool, tmp_path):
    command = [
        str(Path(sys.executable).parent / "hpscan"), "run", str(REPO / "examples" / "adaptive.yaml"),
        "--out", str(tmp_path), "--plain", "--site", "pool",
        "--set", f"sites={json.dumps(condor_sites(condor_pool))}",
        "--set", f"sampling.samples={SAMPLES}",
        "--set", f"payload.settings={json.dumps(SETTINGS)}",
        "--set", "artifacts.keep=none",
    ]  # fmt: skip
    run = subprocess.run(command, env=condor_pool.env(), capture_output=True, text=True, timeout=900, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    status = json.loads((tmp_path / "status.json").read_text())
    counts = status["combinations"]
    assert status["phase"] == "Succeeded", status.get("message")
    assert counts["suggested"] == counts["total"] == SAMPLES and counts["pending"] == 0, counts

    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    ids = Counter(r["id"] for r in records)
    assert len(ids) == SAMPLES and max(ids.values()) == 1, ids  # the budget exactly, every trial recorded once
    by_status = Counter(r["status"] for r in records)
    assert by_status["pruned"] == counts["pruned"] > 0, by_status  # stops reached the jobs through their ads
    pruned = [r for r in records if r["status"] == "pruned"]
    assert all(2 <= r["epochs"] < r["maxEpochs"] == EPOCHS for r in pruned), pruned
    assert {r["shard"] for r in records} == {0, 1}  # both jobs pulled trials

    # Every trial was handed to one worker, as the jobs' ads say (released at the end, they move to the history).
    clusters = sorted({s["job"].split(".")[0] for s in status["shards"]})
    schedd, constraint = condor_pool.schedd(), f"member(ClusterId, {{{', '.join(clusters)}}})"
    ads = condor_pool.wait(
        lambda: (found := list(schedd.history(constraint, ["HPScanTrials"], match=10))) and len(found) >= 2 and found,
        60,
        "the two jobs in the schedd's history",
    )
    handed: Counter = Counter()
    for ad in ads:
        for line in value_lines(ad.get("HPScanTrials")):
            entry = json.loads(line)
            if "trial" in entry:
                handed[entry["trial"]["id"]] += 1
            elif "withdraw" in entry:
                handed[entry["withdraw"]] -= 1
    assert +handed == Counter(set(ids)), handed

    # Reports arrive late from the grid, and the sampler does not wait for them: trials the sampler suggested
    # started (so were handed out) while earlier trials of the scan had no record yet.
    started = {r["id"]: datetime.fromisoformat(r["startedAt"]) for r in records}
    finished = {r["id"]: datetime.fromisoformat(r["finishedAt"]) for r in records}
    blind = [
        later
        for later in ids
        if position(later) >= 10 and any(position(q) < position(later) and finished[q] > started[later] for q in ids)
    ]
    assert blind, (started, finished)
