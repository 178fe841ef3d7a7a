"""A shard's Slurm job (hpscan.backends.slurm.script): names, the job script and the slurmrestd request body, and
the site block's checks."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from hpscan.api.sites import Site
from hpscan.api.spec import HPScanSpec
from hpscan.backends.base import ScanRef
from hpscan.backends.slurm.script import (
    JobName,
    job_environment,
    job_request,
    job_script,
    memory_megabytes,
    shard_command,
    shard_folder,
    slurm_of,
)

SITE = {
    "name": "hpc",
    "env": [{"name": "NCCL_DEBUG", "value": "WARN"}],
    "slurm": {
        "restUrl": "https://slurm.example.org:6820",
        "user": "alice",
        "spool": "/scratch/alice/hpscan",
        "partition": "gpu",
        "account": "atlas",
        "qos": "normal",
        "timeLimitMinutes": 120,
        "constraint": "a100",
        "cpus": 4,
        "memory": "16G",
        "runner": "/cvmfs/sw/hpscan/bin/hpscan",
        "setup": ["module load cuda/12"],
    },
}


def spec(gpus: int = 1, site: dict | None = None) -> HPScanSpec:
    return HPScanSpec.model_validate(
        {
            "parameters": [{"name": "x", "values": [1, 2]}],
            "sharding": {"shards": 1},
            "gpu": {"count": gpus, "required": gpus > 0},
            "payload": {
                "image": "registry.example.org/dl1:1",
                "command": ["dl1", "train-shard"],
                "env": [{"name": "NCCL_DEBUG", "value": "INFO"}, {"name": "TF_CPP_MIN_LOG_LEVEL", "value": "2"}],
            },
            "sites": [site or SITE],
        }
    )


def test_job_names_say_which_scan_shard_move_and_attempt_and_are_read_back():
    name = JobName("u1", 3, moves=1, attempt=2)
    assert str(name) == "hpscan.u1.3.1.2"
    assert JobName.parse(str(name)) == name
    probe = JobName("u1", None, probe="hpc", probe_round=4)
    assert JobName.parse(str(probe)) == probe
    assert JobName.parse("somebody-elses-job") is None


def test_the_request_carries_the_sites_resources_and_gpus_as_gres():
    scan_spec = spec()
    site = scan_spec.sites[0]
    folder = shard_folder(site, ScanRef("demo", "physics", "u1"), 0)
    assert folder == Path("/scratch/alice/hpscan/physics/demo-u1/shard-000")
    body = job_request(scan_spec, site, JobName("u1", 0), "#!/bin/bash\n", folder, {"PATH": "/bin"})
    job = body["job"]
    assert job["partition"] == "gpu" and job["account"] == "atlas" and job["qos"] == "normal"
    assert (job["time_limit"], job["constraints"], job["cpus_per_task"]) == (120, "a100", 4)
    assert (job["memory_per_node"], job["gres"], job["requeue"]) == (16384, "gpu:1", True)
    assert job["name"] == "hpscan.u1.0.0.1"
    assert job["standard_error"] == f"{folder}/stderr-%j.txt" and job["current_working_directory"] == str(folder)


def test_a_cpu_scan_asks_no_gres_and_a_sites_gres_wins():
    cpu = spec(gpus=0)
    assert "gres" not in job_request(cpu, cpu.sites[0], JobName("u", 0), "", Path("/s"), {})["job"]
    typed_site = {**SITE, "slurm": {**SITE["slurm"], "gres": "gpu:a100:2"}}
    typed = spec(site=typed_site)
    assert job_request(typed, typed.sites[0], JobName("u", 0), "", Path("/s"), {})["job"]["gres"] == "gpu:a100:2"


def test_unset_settings_are_left_to_the_centres_defaults():
    bare_site = {"name": "hpc", "slurm": {"restUrl": "http://h:6820", "user": "bob", "spool": "/s"}}
    bare = spec(site=bare_site)
    job = job_request(bare, bare.sites[0], JobName("u", 0), "", Path("/s"), {})["job"]
    assert not {"partition", "account", "qos", "time_limit", "constraints"} & set(job)


def test_the_sites_env_wins_over_the_payloads():
    scan_spec = spec()
    env = job_environment(scan_spec, scan_spec.sites[0])
    assert env == {"PATH": "/usr/local/bin:/usr/bin:/bin", "NCCL_DEBUG": "WARN", "TF_CPP_MIN_LOG_LEVEL": "2"}


def test_the_job_script_runs_the_shard_runner_and_leaves_its_exit_code(tmp_path):
    """The script, run by bash as Slurm runs it: the command's exit code is the job's and is left in exit-<id>."""
    settings = slurm_of(spec().sites[0]).model_copy(update={"setup": ["export GREETING=hi"]})
    script = job_script(settings, ["sh", "-c", 'echo "$GREETING" > said.txt; exit 3'], tmp_path)
    path = tmp_path / "job.sh"
    path.write_text(script)
    done = subprocess.run(["bash", str(path)], env={"SLURM_JOB_ID": "42", "PATH": "/usr/bin:/bin"}, check=False)
    assert done.returncode == 3
    assert (tmp_path / "exit-42").read_text().strip() == "3"
    assert (tmp_path / "said.txt").read_text().strip() == "hi"


def test_the_job_script_outlives_its_command_through_a_sigterm_and_passes_it_on(tmp_path):
    """Slurm's SIGTERM (scancel, preemption) must not end the batch shell before the runner: while the runner
    records the combination in training, the job must still read running, or the shard's next attempt trains that
    combination again. The shell passes the signal on, waits, and ends with the runner's code, leaving no exit file."""
    runner = 'trap "sleep 1; echo finished > finished.txt; exit 7" TERM; touch started; while :; do sleep 0.1; done'
    script = job_script(slurm_of(spec().sites[0]).model_copy(update={"setup": []}), ["sh", "-c", runner], tmp_path)
    (tmp_path / "job.sh").write_text(script)
    env = {"SLURM_JOB_ID": "42", "PATH": "/usr/bin:/bin"}
    shell = subprocess.Popen(["bash", str(tmp_path / "job.sh")], env=env)
    deadline = time.monotonic() + 30
    while not (tmp_path / "started").exists():
        assert time.monotonic() < deadline and shell.poll() is None, "the runner never started"
        time.sleep(0.05)
    shell.send_signal(signal.SIGTERM)  # to the shell alone, as `scancel --batch` sends it
    time.sleep(0.3)
    assert shell.poll() is None, "the batch shell ended while its runner was still recording"
    assert shell.wait(timeout=30) == 7
    assert (tmp_path / "finished.txt").read_text().strip() == "finished"
    assert not (tmp_path / "exit-42").exists()  # stopped by Slurm: its state says why (a requeued job keeps its id)


def test_the_shard_command_runs_the_sites_runner_with_the_slurm_channel():
    scan_spec = spec()
    settings = slurm_of(scan_spec.sites[0])
    command = shard_command(settings, scan_spec, 2, Path("/s/shard-002"))
    assert command == [
        "/cvmfs/sw/hpscan/bin/hpscan", "shard-run", "--channel", "slurm", "/s/shard-002/shard-002.json",
        "--out", "/s/shard-002", "--", "dl1", "train-shard",
    ]  # fmt: skip


@pytest.mark.parametrize(("memory", "mib"), [("512", 512), ("512M", 512), ("2G", 2048), ("1T", 1048576), ("4096K", 4)])
def test_memory_in_slurms_units(memory, mib):
    assert memory_megabytes(memory) == mib


@pytest.mark.parametrize(
    ("field", "value"),
    [("restUrl", "slurm.example.org"), ("spool", "relative/path"), ("memory", "8GB"), ("user", "Alice Smith")],
)
def test_a_bad_site_block_is_refused_naming_the_field(field, value):
    with pytest.raises(ValidationError) as error:
        Site.model_validate({"name": "hpc", "slurm": {**SITE["slurm"], field: value}})
    assert f"slurm.{field}" in str(error.value)


def test_the_crd_describes_the_slurm_block_from_the_backends_own_model():
    """The registry imports SlurmSite from the backend package on use; the CRD (make crds) carries its docs."""
    import yaml

    crd = yaml.safe_load((Path(__file__).resolve().parents[4] / "crds" / "hpscan.io_hpscans.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    site = schema["properties"]["spec"]["properties"]["sites"]["items"]
    block = site["properties"]["slurm"]
    assert block["required"] == ["user", "spool"]  # restUrl only with interface rest: the block's CEL rule
    assert "has(self.restUrl)" in block["x-kubernetes-validations"][0]["rule"]
    assert "shared file system" in block["properties"]["spool"]["description"]
    assert "has(self.slurm)" in site["x-kubernetes-validations"][0]["rule"]
