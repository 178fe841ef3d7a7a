"""hpscan.backends.slurm.commands' pure parts: slurmrestd's job description as sbatch's options, the environment as
exports, sbatch's answer; and the site block's interface rule."""

from __future__ import annotations

import subprocess

import pytest
from pydantic import ValidationError

from hpscan.backends.slurm.commands import sbatch_arguments, submitted_id, with_environment
from hpscan.backends.slurm.site import SlurmSite
from hpscan.errors import BackendError


def test_every_field_the_request_body_writes_becomes_an_sbatch_option():
    job = {
        "name": "hpscan.u1.0.1", "comment": "hpscan scan u1 shard 0 attempt 1", "current_working_directory": "/s/0",
        "standard_output": "/s/0/stdout-%j.txt", "standard_error": "/s/0/stderr-%j.txt", "cpus_per_task": 2,
        "memory_per_node": 1536, "requeue": False, "partition": "gpu", "account": "atlas", "qos": "normal",
        "time_limit": 90, "gres": "gpu:a100:1", "constraints": "a100", "environment": {"A": "1"},
    }  # fmt: skip
    assert sbatch_arguments(job) == [
        "--parsable", "--export=NONE", "--job-name=hpscan.u1.0.1", "--comment=hpscan scan u1 shard 0 attempt 1",
        "--chdir=/s/0", "--output=/s/0/stdout-%j.txt", "--error=/s/0/stderr-%j.txt", "--cpus-per-task=2",
        "--mem=1536M", "--no-requeue", "--partition=gpu", "--account=atlas", "--qos=normal", "--time=90",
        "--gres=gpu:a100:1", "--constraint=a100",
    ]  # fmt: skip
    assert "--requeue" in sbatch_arguments({"requeue": True})


def test_a_field_sbatch_cannot_take_is_refused_not_dropped():
    with pytest.raises(BackendError, match="no option for the job fields \\['nodes'\\]"):
        sbatch_arguments({"name": "x", "nodes": 2})


def test_the_environment_is_exported_by_the_script_whatever_its_values_hold():
    script = with_environment('#!/bin/bash\necho "$B"\n', {"B": "a,b c'd", "A": "$HOME"})
    assert script.splitlines()[:3] == ["#!/bin/bash", "export A='$HOME'", "export B='a,b c'\"'\"'d'"]
    said = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
    assert said == "a,b c'd\n"


def test_sbatch_parsable_answers_an_id_with_or_without_its_cluster():
    assert submitted_id("4242\n") == 4242 and submitted_id("4242;hpc\n") == 4242


def test_rest_needs_its_url_and_commands_do_not():
    base = {"user": "alice", "spool": "/p/scratch/alice/hpscan"}
    assert SlurmSite.model_validate({**base, "interface": "commands"}).rest_url is None
    with pytest.raises(ValidationError, match="restUrl is required with interface rest"):
        SlurmSite.model_validate(base)
    assert SlurmSite.model_validate({**base, "restUrl": "https://s:6820"}).interface == "rest"
