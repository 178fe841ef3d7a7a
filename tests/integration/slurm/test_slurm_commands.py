"""The Slurm backend's commands interface (``slurm.interface: commands``; hpscan/backends/slurm/commands.py) at the
test cluster's real slurmctld: hpscan run by a user of the cluster, as on a login node, with no slurmrestd in the
site (sbatch, squeue --json and scancel, authenticated by munge as that user)."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from hpscan.backends.slurm.commands import SlurmCommands
from hpscan.errors import BackendError
from support import CONTRACT_PAYLOAD

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs hpscan as the cluster's job user (needs root)")


SAY_GPUS = 'echo "hpscan-test: CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-unset}"'


def commands_site(cluster: Any, spool: Path, **extra: Any) -> dict[str, Any]:
    block = cluster.site(spool, partition="gpu", **extra)
    del block["restUrl"]
    return {**block, "interface": "commands"}


def as_user(cluster: Any, folder: Path) -> None:
    user = pwd.getpwnam(cluster.user)
    os.chown(folder, user.pw_uid, user.pw_gid)


def test_a_scan_through_slurms_commands_as_the_login_nodes_user(slurm_cluster):
    """`hpscan run --site` by the cluster's user, the site without restUrl: every shard a job of that user on the
    GPU partition with its gres/gpu allocated, every combination recorded once, the scan Succeeded."""
    spool = slurm_cluster.spool("commands")
    job_bin = slurm_cluster.job_bin()
    python = str(job_bin / "python")
    out = spool / "run"  # the user's own folder on the shared file system (pytest's tmp_path is root's alone)
    out.mkdir()
    as_user(slurm_cluster, out)
    manifest = {
        "apiVersion": "hpscan.io/v1alpha1",
        "kind": "HPScan",
        "metadata": {"name": "by-commands"},
        "spec": {
            "parameters": [{"name": "x", "values": [1, 2, 3, 4, 5, 6]}],
            "sharding": {"shards": 2},
            "gpu": {"count": 1, "required": False},
            "payload": {
                "image": "registry.example.org/contract-payload:1",
                "command": [python, str(CONTRACT_PAYLOAD)],
                "settings": {"contractPayload": {"sleep": 0.2, "trainedLog": str(spool / "trained.log")}},
            },
            "sites": [{"name": "hpc", "slurm": commands_site(slurm_cluster, spool, setup=[SAY_GPUS])}],
        },
    }
    path = spool / "scan.yaml"
    path.write_text(yaml.safe_dump(manifest))
    path.chmod(0o644)
    env = {"PATH": f"{job_bin}:/usr/bin:/bin", "HOME": str(out), "SLURM_CONF": str(slurm_cluster.conf)}
    command = ["runuser", "-u", slurm_cluster.user, "--", "env", "-i", *(f"{k}={v}" for k, v in env.items()),
               str(job_bin / "hpscan"), "run", str(path), "--out", str(out), "--plain", "--site", "hpc"]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    status = json.loads((out / "status.json").read_text())
    assert status["phase"] == "Succeeded" and status["progress"] == "6/6", status
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in records) == sorted({r["id"] for r in records}) and len(records) == 6
    trained = (spool / "trained.log").read_text().split()
    assert len(trained) == len(set(trained)) == 6
    jobs = json.loads(slurm_cluster.tool("squeue", "--json").stdout)["jobs"]
    ours = [job for job in jobs if job["name"].startswith("hpscan.") and str(spool) in job["current_working_directory"]]
    assert len(ours) == 2 and {job["user_name"] for job in ours} == {slurm_cluster.user}
    assert {job["partition"] for job in ours} == {"gpu"}
    outputs = sorted(spool.glob("*/*/shard-*/stdout-*.txt"))
    assert len(outputs) == 2
    for output in outputs:
        said = [line for line in output.read_text().splitlines() if line.startswith("hpscan-test:")]
        assert said in (["hpscan-test: CUDA_VISIBLE_DEVICES=0"], ["hpscan-test: CUDA_VISIBLE_DEVICES=1"]), output


def test_a_job_slurm_refuses_names_slurms_words(slurm_cluster):
    """A partition the cluster does not have: sbatch's own words, as a BackendError (not a hang, not a retry)."""
    commands = SlurmCommands(environ=slurm_cluster.env())
    body = {"script": "#!/bin/bash\ntrue\n", "job": {"name": "refused", "partition": "nosuch", "environment": {}}}
    with pytest.raises(BackendError, match=r"Slurm refused submitting job refused: sbatch: .*[Ii]nvalid partition"):
        commands.submit(body)


def test_a_job_slurm_no_longer_holds_is_none_and_cancelling_it_is_no_error(slurm_cluster):
    commands = SlurmCommands(environ=slurm_cluster.env())
    assert commands.job(999_999_999) is None
    commands.cancel(999_999_999)
    assert commands.jobs()  # every job slurmctld holds: the earlier tests' at least
