"""`hpscan run` through the local backend, with a contract-honouring stand-in payload (no TensorFlow)."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from hpscan.api.spec import HPScan
from hpscan.api.status import ScanPhase
from hpscan.cli import app
from hpscan.core.planning import plan
from hpscan.engine import EngineSettings
from hpscan.local_scan import Machine, RunError, plan_resources, run_scan
from support import CONTRACT_PAYLOAD
from support.run_observers import Quiet

PAYLOAD = CONTRACT_PAYLOAD
FAST = EngineSettings(poll_seconds=0.05)  # a step every 50 ms: the stand-in payload is quick
CPU_ONLY = Machine(cpus=2, gpus=[])


def make_scan(knobs: dict | None = None, shards: int = 3, retries: int = 1, gpu: dict | None = None) -> HPScan:
    return HPScan.model_validate(
        {
            "apiVersion": "hpscan.io/v1alpha1",
            "kind": "HPScan",
            "metadata": {"name": "toy"},
            "spec": {
                "parameters": [{"name": "x", "values": [1, 2, 3, 4]}, {"name": "act", "values": ["relu", "elu"]}],
                "sharding": {"shards": shards},
                "retries": retries,
                "gpu": gpu or {"count": 0, "required": False},
                "payload": {
                    "image": "local",
                    "command": [sys.executable, str(PAYLOAD)],
                    "settings": {"contractPayload": knobs or {}},
                },
            },
        }
    )


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def trained_ids(run_dir: Path) -> Counter:
    return Counter(i for log in run_dir.glob("work/*/trained.log") for i in log.read_text().split())


def test_a_scan_runs_to_succeeded_with_one_record_per_combination(tmp_path):
    status = run_scan(make_scan(), tmp_path, Quiet(), machine=CPU_ONLY, settings=FAST)
    assert status.phase == ScanPhase.SUCCEEDED
    records = lines(tmp_path / "results.jsonl")
    assert len(records) == 8 == len({r["id"] for r in records})
    on_disk = json.loads((tmp_path / "status.json").read_text())
    assert on_disk["phase"] == "Succeeded" and on_disk["progress"] == "8/8"
    assert on_disk["best"]["parameters"]["x"] == 3  # the stand-in's loss is smallest at x=3
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == [
        "shard-000.json",
        "shard-001.json",
        "shard-002.json",
    ]


def test_a_crashed_shard_is_retried_and_resumes_where_it_stopped(tmp_path):
    status = run_scan(make_scan({"failAttempts": {"1": 1}}), tmp_path, Quiet(), machine=CPU_ONLY, settings=FAST)
    assert status.phase == ScanPhase.SUCCEEDED
    assert status.shards[1].attempts == 2
    assert max(trained_ids(tmp_path).values()) == 1  # the retry skipped what the first attempt recorded


def test_a_shard_failing_for_good_fails_the_scan_with_the_reason(tmp_path):
    result = CliRunner().invoke(
        app, ["run", "--plain", "--out", str(tmp_path), str(write_manifest(tmp_path, make_scan({"exitCode": 1})))]
    )
    assert result.exit_code == 1
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["phase"] == "Failed"
    assert "exit code 1" in status["message"] and "exiting with 1 as asked" in status["message"]
    assert "failed after 2 attempt(s)" in result.output


def test_gpu_unavailable_exit_is_not_retried_named_and_excludes_the_machine(tmp_path):
    scan = make_scan({"exitCode": 3}, retries=3)
    status = run_scan(scan, tmp_path, Quiet(), workers=1, machine=CPU_ONLY, settings=FAST)
    assert status.phase == ScanPhase.FAILED
    first, *rest = status.shards
    assert (first.reason, first.attempts) == ("GPUUnavailable", 1)
    assert all(s.attempts == 0 for s in rest)  # the machine is excluded: no other shard is sent to fail the same way
    [site] = status.sites
    assert (site.name, site.state, site.reason) == ("local", "Excluded", "GPUUnavailable")
    assert any(c.type == "Failed" and c.status == "True" and c.reason == "GPUUnavailable" for c in status.conditions)


def test_failed_combinations_are_counted_and_the_scan_still_succeeds(tmp_path):
    planned = plan("toy", make_scan().spec)
    bad = planned.combination(0).id
    status = run_scan(make_scan({"failIds": [bad]}), tmp_path, Quiet(), machine=CPU_ONLY, settings=FAST)
    assert status.phase == ScanPhase.SUCCEEDED
    assert (status.combinations.succeeded, status.combinations.failed) == (7, 1)


def test_interrupt_keeps_results_and_a_rerun_trains_nothing_twice(tmp_path):
    scan = make_scan({"sleep": 0.2}, shards=2)
    with pytest.raises(KeyboardInterrupt):
        run_scan(scan, tmp_path, Quiet(interrupt_after=2), machine=CPU_ONLY, settings=FAST)
    interrupted = json.loads((tmp_path / "status.json").read_text())
    assert interrupted["phase"] == "Suspended"
    kept = len(lines(tmp_path / "results.jsonl"))
    assert 2 <= kept < 8
    status = run_scan(scan, tmp_path, Quiet(), machine=CPU_ONLY, settings=FAST)
    assert status.phase == ScanPhase.SUCCEEDED
    assert len(lines(tmp_path / "results.jsonl")) == 8
    assert max(trained_ids(tmp_path).values()) == 1


def test_a_finished_run_rerun_starts_nothing(tmp_path):
    run_scan(make_scan(), tmp_path, Quiet(), machine=CPU_ONLY, settings=FAST)
    before = trained_ids(tmp_path)
    status = run_scan(make_scan(), tmp_path, Quiet(), machine=CPU_ONLY, settings=FAST)
    assert status.phase == ScanPhase.SUCCEEDED and trained_ids(tmp_path) == before


def test_a_folder_holding_another_scan_is_refused(tmp_path):
    run_scan(make_scan(), tmp_path, Quiet(), machine=CPU_ONLY, settings=FAST)
    other = make_scan(shards=2)
    with pytest.raises(RunError, match="different scan"):
        run_scan(other, tmp_path, Quiet(), machine=CPU_ONLY)


def test_required_gpu_without_gpu_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(RunError, match=r"gpu.required is true but no NVIDIA GPU"):
        run_scan(make_scan(gpu={"count": 1, "required": True}), tmp_path, Quiet(), machine=CPU_ONLY)
    assert not (tmp_path / "results.jsonl").exists()


def test_resources_one_shard_per_gpu_and_cpu_threads_shared():
    scan = make_scan(gpu={"count": 1, "required": True}, shards=3)
    planned = plan("toy", scan.spec)
    gpus = plan_resources(scan, planned, Machine(cpus=16, gpus=["0", "1"]), None)
    assert (gpus.workers, gpus.gpu_slots) == (2, ["0", "1"])
    cpu = plan_resources(make_scan(shards=3), planned, Machine(cpus=2, gpus=[]), None)
    assert (cpu.workers, cpu.threads_per_worker) == (2, 1)
    assert plan_resources(make_scan(shards=3), planned, Machine(cpus=2, gpus=[]), 1).threads_per_worker == 2


def write_manifest(tmp_path: Path, scan: HPScan) -> Path:
    path = tmp_path.parent / f"{tmp_path.name}-scan.yaml"
    path.write_text(yaml.safe_dump(scan.model_dump(mode="json", by_alias=True, exclude_none=True)))
    return path


def test_an_attempt_past_the_timeout_is_stopped_and_retried(tmp_path):
    """spec.payload.timeoutSeconds bounds each attempt (the schema's minimum is 60 s; the backend takes any)."""
    from hpscan.backends.base import ScanRef, ShardLaunch
    from hpscan.backends.local import LocalBackend
    from hpscan.core.shardfiles import write_shard_files

    scan = make_scan({"sleep": 5}, shards=1, retries=1)
    planned = plan(scan.metadata.name, scan.spec)
    write_shard_files(planned, tmp_path / "shards")
    backend = LocalBackend(tmp_path, retries=1, timeout_seconds=0.5)
    ref = ScanRef("timeout", "local")
    backend.submit(ref, scan.spec, [ShardLaunch(planned.shard_file(0), None)])
    deadline = time.monotonic() + 30
    while (state := backend.poll(ref)[0]).phase == "Running" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (state.phase, state.attempts) == ("Failed", 2), state
    assert "timeoutSeconds (0.5 s)" in state.message


def test_a_torn_line_in_results_jsonl_is_counted_in_the_status(tmp_path):
    scan = make_scan()
    run_scan(scan, tmp_path, Quiet(), machine=Machine(cpus=2, gpus=[]))
    with (tmp_path / "results.jsonl").open("a") as handle:
        handle.write('{"id": "c0-torn", "sha\n')
    status = run_scan(scan, tmp_path, Quiet(), machine=Machine(cpus=2, gpus=[]))
    assert status.phase == "Succeeded" and "1 unreadable record(s) skipped (results.jsonl)" in status.message
