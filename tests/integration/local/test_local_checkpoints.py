"""`hpscan run` with the real dl1 payload: a killed run, or a killed shard process, resumes each trial in flight from
its last checkpoint in the run folder (RUN/work/shard-NNN/checkpoints/), and the status counts the epochs resuming
saved beside those pruning saved."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from support import checkpoint_files

pytestmark = pytest.mark.integration
pytest.importorskip("tensorflow")

HPSCAN = checkpoint_files.HPSCAN
SCAN = checkpoint_files.resume_scan("local", epochs=8, batch_size=250, jets=3000, retries=1)


def saved_epochs(run: Path) -> dict[str, int]:
    return checkpoint_files.saved_epochs(run.glob("work/shard-*/checkpoints/*/state.npz"))


def start(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    manifest = tmp_path / "scan.yaml"
    manifest.write_text(yaml.safe_dump(SCAN))
    run = tmp_path / "run"
    command = [HPSCAN, "run", str(manifest), "--out", str(run), "--plain"]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), run


def wait_for_epoch(process: subprocess.Popen, run: Path, epoch: int) -> None:
    deadline = time.monotonic() + 300
    while max(saved_epochs(run).values(), default=0) < epoch:
        assert process.poll() is None, "hpscan run ended before any trial reached the epoch"
        assert time.monotonic() < deadline
        time.sleep(0.05)


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def gone(pid: int, seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def finish(run: Path, in_flight: dict[str, int]) -> dict:
    """The run's records after it finished: those in flight resumed at their checkpoint's epoch."""
    records = {r["id"]: r for r in map(json.loads, (run / "results.jsonl").read_text().splitlines())}
    assert len(records) == 3 and all(r["status"] == "succeeded" and r["epochs"] == 8 for r in records.values())
    for trial_id, epoch in in_flight.items():
        assert records[trial_id]["resumedFrom"] == [epoch]
    assert all("resumedFrom" not in r for i, r in records.items() if i not in in_flight)
    status = json.loads((run / "status.json").read_text())
    assert status["training"] == {"epochs": 24, "epochsSaved": 0, "epochsResumed": sum(in_flight.values())}
    assert not list(run.glob("work/shard-*/checkpoints/*"))
    return records


def test_a_killed_hpscan_run_run_again_resumes_its_trials_from_their_checkpoints(tmp_path):
    process, run = start(tmp_path)
    wait_for_epoch(process, run, 3)
    payloads = children(process.pid)
    process.kill()  # as kill -9: the payload goes with it (PR_SET_PDEATHSIG)
    process.communicate()
    assert payloads and all(gone(pid) for pid in payloads)
    in_flight = saved_epochs(run)
    assert in_flight and max(in_flight.values()) >= 3
    again = subprocess.run(
        [HPSCAN, "run", str(tmp_path / "scan.yaml"), "--out", str(run), "--plain"], capture_output=True, text=True
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    finish(run, in_flight)
    assert f"checkpoints: interrupted trials resumed, {sum(in_flight.values())} epochs" in again.stdout
    log = (run / "work" / "shard-000" / "payload.log").read_text()
    assert all(f"resuming {i} at epoch {e} from its checkpoint" in log for i, e in in_flight.items())


def test_a_killed_shard_process_is_retried_and_resumes_from_its_checkpoints(tmp_path):
    process, run = start(tmp_path)
    wait_for_epoch(process, run, 3)
    (payload,) = children(process.pid)
    os.kill(payload, signal.SIGKILL)  # a worker lost mid-trial: the local backend retries it in its folder
    assert gone(payload)
    in_flight = saved_epochs(run)
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]
    finish(run, in_flight)
    log = (run / "work" / "shard-000" / "payload.log").read_text()
    assert "--- attempt 2 ---" in log
    assert all(f"resuming {i} at epoch {e} from its checkpoint" in log for i, e in in_flight.items())
