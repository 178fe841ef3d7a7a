"""HTCondor's self-checkpointing on the personal pool, with the real dl1 payload: the shard runner ends with 85
after a checkpoint, HTCondor keeps OUT/checkpoints/ at the access point and starts it again, and a job vacated
mid-trial (condor_vacate_job, as a preempting site does) starts again from that checkpoint: its trials resume at
epoch k, as the job's log and the records show. (A record's resumedFrom lists the resumes of the state that
survived: those of the training an eviction threw away go with it.)"""

from __future__ import annotations

import json
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


def scan(pool) -> dict:
    sites = condor_sites(pool)
    sites[0]["env"].append({"name": "HPSCAN_CHECKPOINT_SECONDS", "value": str(CHECKPOINT_SECONDS)})
    return {
        "apiVersion": "hpscan.io/v1alpha1",
        "kind": "HPScan",
        "metadata": {"name": "evicted"},
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


def test_a_vacated_job_resumes_its_trials_from_the_checkpoint_htcondor_kept(condor_pool, tmp_path):
    manifest = tmp_path / "scan.yaml"
    manifest.write_text(yaml.safe_dump(scan(condor_pool)))
    run_dir = tmp_path / "run"
    command = [str(Path(sys.executable).parent / "hpscan"), "run", str(manifest), "--out", str(run_dir), "--plain"]
    command += ["--site", "pool"]
    run = subprocess.Popen(command, env=condor_pool.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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
        condor_pool.tool("condor_vacate_job", job)  # evicted mid-trial, as a preempting site does
        kept = kept_epochs(condor_pool, job)
        output = run.communicate(timeout=600)[0]
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 0, output[-3000:]
    records = {r["id"]: r for r in map(json.loads, (run_dir / "results.jsonl").read_text().splitlines())}
    assert len(records) == 2 and all(r["status"] == "succeeded" and r["epochs"] == EPOCHS for r in records.values())
    where = f"ClusterId == {job.split('.')[0]}"
    (ad,) = schedd.query(where, ["NumJobStarts"]) or list(schedd.history(where, ["NumJobStarts"], match=1))
    assert ad["NumJobStarts"] >= 2  # evicted, and started again (an exit with 85 is not a new start)
    (log,) = run_dir.glob("condor/*/*/shard-000/stderr.txt")  # every start's output, in order
    said = log.read_text()
    assert "hpscan shard-run: checkpoint saved, ending with 85" in said
    for trial, epoch in kept.items():
        assert 0 < epoch < EPOCHS
        # the start after the eviction (on whatever slot) resumed at the kept epoch k, and the record says so
        assert f"resuming {trial} at epoch {epoch} from its checkpoint" in said, said[-3000:]
        assert epoch in records[trial]["resumedFrom"], (records[trial], kept)
    status = json.loads((run_dir / "status.json").read_text())
    assert status["training"]["epochsResumed"] == sum(sum(r["resumedFrom"]) for r in records.values())
