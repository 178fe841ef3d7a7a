"""HTCondor's self-checkpointing on the personal pool, with the real dl1 payload: the shard runner ends with 85
after a checkpoint, HTCondor keeps OUT/checkpoints/ at the access point and starts it again there, its trials
resuming at the kept epoch; and a job vacated mid-trial (condor_vacate_job, as a preempting site does) takes the
newest checkpoint in its sandbox to the access point (its output, ON_EXIT_OR_EVICT) and from there to its next slot,
with or without an exit with 85 before: its trials resume at the epoch they reached, as the job's log and the
records show. (A record's resumedFrom lists the resumes of the state that survived.)"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_htcondor_payload import condor_sites

from hpscan.job.chirp import classad_string

pytestmark = pytest.mark.slow

EPOCHS = 60
CHECKPOINT_SECONDS = 2  # of training between the runner's checkpoint exits (default: 30 minutes)


def scan(pool, checkpoint_seconds: int = CHECKPOINT_SECONDS, name: str = "evicted") -> dict:
    """Two DL1r trials on the pool, as scan ``name`` (what the tests look its jobs up by)."""
    sites = condor_sites(pool)
    sites[0]["env"].append({"name": "HPSCAN_CHECKPOINT_SECONDS", "value": str(checkpoint_seconds)})
    return {
        "apiVersion": "hpscan.io/v1alpha1",
        "kind": "HPScan",
        "metadata": {"name": name},
        "spec": {
            "parameters": [{"name": "learning_rate", "values": [0.001, 0.003]}],  # DL1r's layers, fused by 2
            "sharding": {"shards": 1},
            "gpu": {"count": 0, "required": False},
            "payload": {
                "image": "local",
                "settings": {
                    "epochs": EPOCHS,
                    "patience": 0,
                    "batch_size": 100,
                    "data": {"synthetic": {"jets": 20000, "seed": 1}},
                },
            },
            "sites": sites,
        },
    }


def epochs_in(folders) -> dict[str, int]:
    """The epoch of each trial's checkpoint in these checkpoint folders."""
    import numpy as np

    epochs = {}
    for folder in folders:
        for path in folder.glob("*/state.npz"):
            try:
                with np.load(path) as stored:
                    epochs[path.parent.name] = json.loads(str(stored["meta"]))["epoch"]
            except (OSError, ValueError, KeyError):
                continue  # replaced while read
    return epochs


def kept_epochs(pool, job: str) -> dict[str, int]:
    """The checkpoint HTCondor keeps for the job at the access point (its spool, from the last exit with 85)."""
    cluster, proc = job.split(".")
    return epochs_in(pool.state_dir.glob(f"spool/*/*/cluster{cluster}.proc{proc}.subproc0/checkpoints"))


def sandbox_epochs(pool) -> dict[str, int]:
    """The checkpoints in the running job's sandbox on the execute side (the pool runs one job here)."""
    return epochs_in(pool.state_dir.glob("execute/dir_*/scratch/checkpoints"))


def start(pool, tmp_path: Path, manifest: dict) -> tuple[subprocess.Popen, Path]:
    """``hpscan run`` of the manifest on the pool, and its run folder."""
    path = tmp_path / "scan.yaml"
    path.write_text(yaml.safe_dump(manifest))
    run_dir = tmp_path / "run"
    command = [str(Path(sys.executable).parent / "hpscan"), "run", str(path), "--out", str(run_dir), "--plain"]
    command += ["--site", "pool"]
    run = subprocess.Popen(command, env=pool.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return run, run_dir


def finish(run: subprocess.Popen, run_dir: Path) -> tuple[dict[str, dict], str]:
    """The run's records, all succeeded after every epoch, and every start's output of its one job, in order."""
    output = run.communicate(timeout=600)[0]
    assert run.returncode == 0, output[-3000:]
    records = {r["id"]: r for r in map(json.loads, (run_dir / "results.jsonl").read_text().splitlines())}
    assert len(records) == 2 and all(r["status"] == "succeeded" and r["epochs"] == EPOCHS for r in records.values())
    status = json.loads((run_dir / "status.json").read_text())
    assert status["training"]["epochsResumed"] == sum(sum(r.get("resumedFrom", [])) for r in records.values())
    (log,) = run_dir.glob("condor/*/*/shard-000/stderr.txt")
    return records, log.read_text()


def test_a_job_that_ends_for_a_checkpoint_resumes_from_the_one_htcondor_kept(condor_pool, tmp_path):
    run, run_dir = start(condor_pool, tmp_path, scan(condor_pool))
    schedd = condor_pool.schedd()
    attributes = ["ClusterId", "ProcId", "JobStatus", "Environment"]

    def running_with_a_kept_checkpoint() -> tuple[str, str] | None:
        assert run.poll() is None, run.communicate()[0][-3000:]
        for ad in schedd.query('HPScanName == "evicted" && JobStatus == 2', attributes):
            job = f"{ad['ClusterId']}.{ad['ProcId']}"
            if kept_epochs(condor_pool, job):  # it ended with 85 once: HTCondor keeps that checkpoint
                return job, str(ad["Environment"])
        return None

    try:
        job, environment = condor_pool.wait(running_with_a_kept_checkpoint, timeout=400, what="a kept checkpoint")
        # the start after the eviction trains to the end without exits for checkpoints (bounded on a loaded machine)
        calm = environment.replace(f"HPSCAN_CHECKPOINT_SECONDS={CHECKPOINT_SECONDS}", "HPSCAN_CHECKPOINT_SECONDS=3600")
        schedd.edit(job, "Environment", classad_string(calm))
        kept = kept_epochs(condor_pool, job)  # the last exit with 85's, before the eviction's replaces it
        condor_pool.tool("condor_vacate_job", job)  # evicted mid-trial, as a preempting site does
        records, said = finish(run, run_dir)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    where = f"ClusterId == {job.split('.')[0]}"
    (ad,) = schedd.query(where, ["NumJobStarts"]) or list(schedd.history(where, ["NumJobStarts"], match=1))
    assert ad["NumJobStarts"] >= 2  # evicted, and started again (an exit with 85 is not a new start)
    assert "hpscan shard-run: checkpoint saved, ending with 85" in said
    for trial, epoch in kept.items():
        assert 0 < epoch < EPOCHS
        # the start after the exit with 85 resumed at the kept epoch k; the one after the eviction at k or later
        assert f"resuming {trial} at epoch {epoch} from its checkpoint" in said, said[-3000:]
        assert max(records[trial].get("resumedFrom", [0])) >= epoch, (records[trial], kept)


def hold_and_release(pool, job: str) -> None:
    """An admin's hold (the job is stopped as an eviction stops it), and the user's release once it is held."""
    import htcondor2

    schedd = pool.schedd()
    schedd.act(htcondor2.JobAction.Hold, job, reason="hpscan test: held mid-trial")
    pool.wait(lambda: schedd.query(f"ClusterId == {job.split('.')[0]} && JobStatus == 5", ["ClusterId"]), 60, "held")
    schedd.act(htcondor2.JobAction.Release, job)


STOPS = {
    "vacated": lambda pool, job: pool.tool("condor_vacate_job", job),  # as a preempting site does
    "held and released": hold_and_release,
}


@pytest.mark.parametrize("stop", STOPS)
def test_a_job_stopped_mid_trial_takes_its_newest_checkpoint_to_the_next_slot(condor_pool, tmp_path, stop):
    name = "vacated" if stop == "vacated" else "held"
    run, run_dir = start(condor_pool, tmp_path, scan(condor_pool, 3600, name))  # 3600: no exit with 85
    schedd = condor_pool.schedd()

    def running_at_epoch_3() -> str | None:
        assert run.poll() is None, run.communicate()[0][-3000:]
        for ad in schedd.query(f'HPScanName == "{name}" && JobStatus == 2', ["ClusterId", "ProcId"]):
            if len(reached := sandbox_epochs(condor_pool)) == 2 and min(reached.values()) >= 3:
                return f"{ad['ClusterId']}.{ad['ProcId']}"
        return None

    try:
        job = condor_pool.wait(running_at_epoch_3, timeout=400, what="a job whose trials passed epoch 3")
        reached = sandbox_epochs(condor_pool)
        STOPS[stop](condor_pool, job)  # nothing kept at the access point before this
        records, said = finish(run, run_dir)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert "ending with 85" not in said
    for trial, epoch in reached.items():
        # the start on the next slot resumed at the epoch the evicted one had saved (or the one it saved after we
        # looked, before the SIGTERM reached it), and the record says so
        resumed = [int(k) for k in re.findall(rf"resuming {trial} at epoch (\d+) from its checkpoint", said)]
        assert resumed and epoch <= resumed[0] <= epoch + 3, (said[-3000:], reached)
        assert records[trial].get("resumedFrom") == resumed[:1], (records[trial], reached)
