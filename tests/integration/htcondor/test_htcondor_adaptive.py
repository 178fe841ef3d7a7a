"""An adaptive scan (Optuna's TPE, ASHA early stopping) of the real dl1 payload through the HTCondor backend on the
personal pool (the condor_pool fixture): two jobs are workers that pull their trials from job attributes the
operator edits at the schedd (HPScanTrials, HPScanStops) and report per-epoch losses back through chirp
(HPScanProgress); neither job is ever called into. `hpscan run --site` drives it, as in test_htcondor_payload.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from test_htcondor_payload import condor_sites

from hpscan.job.chirp import value_lines
from support.operator_support import REPO

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


def run_command(pool: Any, out: Path, samples: int = SAMPLES, settings: dict[str, Any] = SETTINGS) -> list[str]:
    return [
        str(Path(sys.executable).parent / "hpscan"), "run", str(REPO / "examples" / "adaptive.yaml"),
        "--out", str(out), "--plain", "--site", "pool",
        "--set", f"sites={json.dumps(condor_sites(pool))}",
        "--set", f"sampling.samples={samples}",
        "--set", f"payload.settings={json.dumps(settings)}",
        "--set", "artifacts.keep=none",
    ]  # fmt: skip


def recorded(results: Path) -> int:
    return len(results.read_text().splitlines()) if results.exists() else 0


def handed_out(pool: Any, status: dict[str, Any]) -> Counter:
    """How often each trial was handed to a worker and not taken back, as the scan's job ads say (released at the
    end, the jobs move to the schedd's history)."""
    clusters = sorted({s["job"].split(".")[0] for s in status["shards"]})
    schedd, constraint = pool.schedd(), f"member(ClusterId, {{{', '.join(clusters)}}})"
    ads = pool.wait(
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
    return +handed


def test_tpe_with_asha_through_htcondor_workers_that_pull(condor_pool, tmp_path):
    command = run_command(condor_pool, tmp_path)
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
    # stopped after the first rung (2 epochs); a stop may arrive late, in the last epoch, and saves nothing then
    assert all(2 <= r["epochs"] < r["maxEpochs"] == EPOCHS for r in pruned), pruned  # stopped before the end
    assert {r["shard"] for r in records} == {0, 1}  # both jobs pulled trials

    assert handed_out(condor_pool, status) == Counter(set(ids))  # every trial handed to one worker, once

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


def test_kill_9_of_hpscan_mid_scan_the_rerun_rebuilds_from_the_job_ads(condor_pool, tmp_path):
    """The jobs train on while hpscan is gone; the re-run finds them (same manifest, same uid), rebuilds its study
    from what their ads say they were handed, and completes the budget exactly: no trial lost, none run twice."""
    samples = 8
    command = run_command(condor_pool, tmp_path, samples)
    first = subprocess.Popen(command, env=condor_pool.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = tmp_path / "results.jsonl"
    try:
        condor_pool.wait(
            lambda: first.poll() is not None or (results.exists() and len(results.read_text().splitlines()) >= 3),
            600,
            "three records",
        )
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    before = [json.loads(line)["id"] for line in results.read_text().splitlines()]
    assert 3 <= len(before) < samples

    again = subprocess.run(command, env=condor_pool.env(), capture_output=True, text=True, timeout=900, check=False)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["phase"] == "Succeeded" and status["combinations"]["suggested"] == samples, status["combinations"]
    ids = Counter(json.loads(line)["id"] for line in results.read_text().splitlines())
    assert len(ids) == samples and max(ids.values()) == 1, ids  # the budget exactly, nothing recorded twice
    assert set(before) <= set(ids)
    assert handed_out(condor_pool, status) == Counter(set(ids))  # each trial handed out once over both runs


KILLS = (15, 30, 45)
"""Records in the run folder when hpscan is killed: each time, every job has recorded more than one record page
holds (about ten dl1 records, HPScanRecords<N>)."""


def test_kill_9_of_hpscan_three_times_in_a_long_scan_every_page_read_back(condor_pool, tmp_path):
    """Two workers record over 25 trials each while hpscan is killed three times: each re-run rebuilds its study
    from the jobs' ads, every record page of every job included. Before the pages, a job's chirped records held
    only the newest that fit one chirp line: the older trials looked open for ever, top-ups handed that worker
    nothing, and the scan stalled (issue 22, defect 1). The budget is spent exactly, no trial lost or run twice."""
    samples = 60
    settings = {**SETTINGS, "epochs": 1, "patience": 1}  # restarts are what this tests: one epoch keeps it short
    command = run_command(condor_pool, tmp_path, samples, settings)
    results = tmp_path / "results.jsonl"
    started = time.monotonic()
    seen: list[set[str]] = []
    for kill, after in enumerate(KILLS):
        with (tmp_path / f"run-{kill}.log").open("w") as log:
            shell = subprocess.Popen(command, env=condor_pool.env(), stdout=log, stderr=subprocess.STDOUT)
        try:
            condor_pool.wait(
                lambda shell=shell, after=after: shell.poll() is not None or recorded(results) >= after,
                300,
                f"{after} records after {kill} kill(s) (a stalled rebuild never gets there)",
            )
        finally:
            os.kill(shell.pid, signal.SIGKILL)
            shell.wait()
        log_tail = (tmp_path / f"run-{kill}.log").read_text()[-3000:]
        assert shell.returncode == -signal.SIGKILL, log_tail  # killed mid-scan, not ended
        seen.append({json.loads(line)["id"] for line in results.read_text().splitlines() if line.endswith("}")})
        print(f"kill -9 #{kill + 1} at {recorded(results)} records, {time.monotonic() - started:.0f} s in")
        assert recorded(results) < samples

    final = subprocess.run(command, env=condor_pool.env(), capture_output=True, text=True, timeout=900, check=False)
    print(f"{samples} trials through three kills in {time.monotonic() - started:.0f} s")
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
    status = json.loads((tmp_path / "status.json").read_text())
    counts = status["combinations"]
    assert status["phase"] == "Succeeded", status.get("message")
    assert counts["suggested"] == counts["total"] == samples and counts["pending"] == 0, counts
    records = [json.loads(line) for line in results.read_text().splitlines()]
    ids = Counter(r["id"] for r in records)
    assert len(ids) == samples and max(ids.values()) == 1, ids  # the budget exactly, every trial recorded once
    assert all(before <= set(ids) for before in seen)
    per_worker = Counter(r["shard"] for r in records)
    assert sorted(per_worker) == [0, 1] and min(per_worker.values()) >= 25, per_worker  # many pages per job
    assert handed_out(condor_pool, status) == Counter(set(ids))  # each trial handed to one worker, once, over 4 runs
