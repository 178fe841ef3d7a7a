"""The personal HTCondor pool (cluster/condor/) does what hpscan's HTCondor backend relies on, through the
htcondor2 bindings directly: GPU matchmaking on simulated GPUs, sandbox transfer both ways, spool and retrieve,
retries, holds, chirp from inside a running job, and IDTOKEN authentication with a token the pool issued.

Each test bounds its waits; the pool negotiates every 2 s, so a job starts within a few seconds.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import classad2
import htcondor2
import pytest

from support.condor_pool import CondorPool

IDLE, RUNNING, REMOVED, COMPLETED, HELD = 1, 2, 3, 4, 5
TIMEOUT = 60.0

pytestmark = pytest.mark.timeout(180)  # a hung daemon fails the test, never the session


def write_script(directory: Path, name: str, body: str) -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body).lstrip())
    path.chmod(0o755)
    return path


def job(directory: Path, executable: Path, **commands: Any) -> htcondor2.Submit:
    """A vanilla-universe job in ``directory`` with its output, error and event log there."""
    description = {
        "universe": "vanilla",
        "executable": str(executable),
        "initialdir": str(directory),
        "output": "out.$(ProcId).txt",
        "error": "err.$(ProcId).txt",
        "log": "job.log",
        "should_transfer_files": "YES",
        "when_to_transfer_output": "ON_EXIT",
        "request_cpus": "1",
        "request_memory": "64MB",
        "request_disk": "10MB",
        "environment": '"PATH=/usr/local/bin:/usr/bin:/bin"',
    }
    description.update({key: str(value) for key, value in commands.items()})
    return htcondor2.Submit(description)


def submit(pool: CondorPool, description: htcondor2.Submit, count: int = 1, spool: bool = False) -> int:
    schedd = pool.schedd()
    result = schedd.submit(description, count=count, spool=spool)
    if spool:
        schedd.spool(result)
    return int(result.cluster())


def job_ads(pool: CondorPool, cluster: int, projection: list[str] | None = None) -> list[classad2.ClassAd]:
    """The cluster's jobs, from the queue or (once they left it) from the history, by ProcId."""
    schedd = pool.schedd()
    constraint = f"ClusterId == {cluster}"
    projection = [*projection, "ProcId"] if projection else []
    found = {int(ad["ProcId"]): ad for ad in schedd.query(constraint, projection)}
    for ad in schedd.history(constraint, projection):
        found.setdefault(int(ad["ProcId"]), ad)
    return [found[proc] for proc in sorted(found)]


def wait_status(pool: CondorPool, cluster: int, status: int, count: int = 1, timeout: float = TIMEOUT) -> list[Any]:
    """Wait until ``count`` jobs of the cluster have JobStatus ``status`` (in the queue or the history)."""

    def reached() -> list[Any] | None:
        ads = job_ads(pool, cluster)
        return ads if len([ad for ad in ads if ad.get("JobStatus") == status]) >= count else None

    try:
        return pool.wait(reached, timeout, f"{count} job(s) of cluster {cluster} in status {status}")
    except TimeoutError as error:
        states = [(ad.get("ProcId"), ad.get("JobStatus"), ad.get("HoldReason")) for ad in job_ads(pool, cluster)]
        raise TimeoutError(f"{error}; jobs (proc, status, hold reason): {states}") from None


def remove(pool: CondorPool, cluster: int) -> None:
    pool.schedd().act(htcondor2.JobAction.Remove, f"ClusterId == {cluster}")


def slot_type(remote_host: str) -> int:
    """1 for the GPU partitionable slot's dynamic slots (slot1_N@...), 2 for the CPU-only one."""
    return int(remote_host.split("@")[0].removeprefix("slot").split("_")[0])


# --- matchmaking on simulated GPUs -------------------------------------------------------------------------------


def test_pool_advertises_a_gpu_slot_and_a_cpu_slot(condor_pool):
    slots = htcondor2.Collector(condor_pool.collector).query(
        htcondor2.AdType.Startd, "PartitionableSlot", ["Name", "TotalSlotGPUs", "GPUs_Capability", "TotalSlotCpus"]
    )
    by_type = {slot_type(str(ad["Name"])): ad for ad in slots}
    assert set(by_type) == {1, 2}
    assert by_type[1]["TotalSlotGPUs"] == 2
    assert float(by_type[1]["GPUs_Capability"]) == condor_pool.gpu_capability
    assert by_type[2].get("TotalSlotGPUs", 0) == 0


def test_gpu_job_lands_on_the_gpu_slot_and_sees_its_gpu(condor_pool):
    directory = condor_pool.job_dir("gpu")
    probe = write_script(directory, "probe.sh", 'echo "CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES"\n')
    cluster = submit(condor_pool, job(directory, probe, request_gpus=1))
    (ad,) = wait_status(condor_pool, cluster, COMPLETED)
    assert ad["ExitCode"] == 0
    assert slot_type(str(ad["LastRemoteHost"])) == 1
    output = (directory / "out.0.txt").read_text()
    visible = output.strip().removeprefix("CUDA_VISIBLE_DEVICES=")
    assert "," not in visible, output  # one GPU: the slot's other one is not visible
    # CUDA's full UUID of the simulated A100 whose short id (GPU-xxxxxxxx) the slot assigned
    assert visible.startswith(f"{ad['AssignedGPUs']}-"), (output, ad["AssignedGPUs"])


def test_capability_above_the_simulated_gpus_stays_idle(condor_pool):
    directory = condor_pool.job_dir("capability")
    probe = write_script(directory, "probe.sh", "exit 0\n")
    too_new = submit(condor_pool, job(directory, probe, request_gpus=1, gpus_minimum_capability=9.0))
    fits = submit(condor_pool, job(directory, probe, request_gpus=1, gpus_minimum_capability=8.0))
    try:
        wait_status(condor_pool, fits, COMPLETED)  # several negotiation cycles have passed meanwhile
        (ad,) = job_ads(condor_pool, too_new, ["JobStatus", "NumJobStarts", "NumJobMatches"])
        assert ad["JobStatus"] == IDLE
        assert ad.get("NumJobStarts", 0) == 0
    finally:
        remove(condor_pool, too_new)


def test_jobs_without_gpus_stay_off_the_gpu_slot(condor_pool):
    directory = condor_pool.job_dir("cpu")
    probe = write_script(directory, "probe.sh", "sleep 1\n")
    cluster = submit(condor_pool, job(directory, probe), count=3)  # the CPU slot has 2 cores: one waits
    wait_status(condor_pool, cluster, COMPLETED, count=3)

    def placed() -> list[Any] | None:
        # A job just completed may still be in the queue without LastRemoteHost (the history's ad has it).
        ads = job_ads(condor_pool, cluster)
        return ads if all("LastRemoteHost" in ad for ad in ads) else None

    ads = condor_pool.wait(placed, TIMEOUT, "the completed jobs' LastRemoteHost")
    assert [slot_type(str(ad["LastRemoteHost"])) for ad in ads] == [2, 2, 2]


# --- sandboxes ---------------------------------------------------------------------------------------------------


def test_input_sandbox_in_and_output_file_back(condor_pool):
    directory = condor_pool.job_dir("sandbox")
    (directory / "shard.json").write_text(json.dumps({"x": [1, 2, 3]}))
    script = write_script(
        directory,
        "sum.sh",
        """
        test -f shard.json || exit 3
        tr -c '0-9\\n' ' ' < shard.json | wc -w > result.txt
        """,
    )
    cluster = submit(
        condor_pool,
        job(directory, script, transfer_input_files="shard.json", transfer_output_files="result.txt"),
    )
    (ad,) = wait_status(condor_pool, cluster, COMPLETED)
    assert ad["ExitCode"] == 0, (directory / "err.0.txt").read_text()
    assert (directory / "result.txt").read_text().strip() == "3"


def test_spool_then_retrieve_and_condor_transfer_data(condor_pool):
    directory = condor_pool.job_dir("spool")
    (directory / "input.txt").write_text("spooled input\n")
    script = write_script(directory, "copy.sh", 'cat input.txt > "result.$1.txt"\n')
    description = job(
        directory,
        script,
        arguments="$(ProcId)",
        transfer_input_files="input.txt",
        transfer_output_files="result.$(ProcId).txt",
    )
    cluster = submit(condor_pool, description, count=2, spool=True)
    try:
        wait_status(condor_pool, cluster, COMPLETED, count=2)
        assert not list(directory.glob("result.*.txt"))  # the output waits in the spool
        (queued,) = condor_pool.schedd().query(f"ClusterId == {cluster} && ProcId == 0", ["JobStatus"])
        assert queued["JobStatus"] == COMPLETED  # spooled jobs stay until their output is fetched
        condor_pool.schedd().retrieve(f"ClusterId == {cluster} && ProcId == 0")
        assert (directory / "result.0.txt").read_text() == "spooled input\n"
        condor_pool.tool("condor_transfer_data", f"{cluster}.1")
        assert (directory / "result.1.txt").read_text() == "spooled input\n"
    finally:
        remove(condor_pool, cluster)


def test_missing_input_file_puts_the_job_on_hold(condor_pool):
    directory = condor_pool.job_dir("missing")
    script = write_script(directory, "noop.sh", "exit 0\n")
    description = job(directory, script, transfer_input_files="not-there.json", skip_filechecks="true")
    cluster = submit(condor_pool, description)
    try:
        (ad,) = wait_status(condor_pool, cluster, HELD)
        assert "not-there.json" in str(ad["HoldReason"]), ad["HoldReason"]
        assert ad["HoldReasonCode"] == 13  # TransferInputError
    finally:
        remove(condor_pool, cluster)


# --- retries and chirp -------------------------------------------------------------------------------------------


def test_max_retries_reruns_a_failing_job(condor_pool):
    directory = condor_pool.job_dir("retries")
    script = write_script(directory, "fail.sh", "exit 7\n")
    cluster = submit(condor_pool, job(directory, script, max_retries=2))
    (ad,) = wait_status(condor_pool, cluster, COMPLETED, timeout=90)
    assert ad["ExitCode"] == 7
    assert ad["NumJobCompletions"] == 3  # the first run and two retries


def test_chirp_set_job_attr_is_visible_while_the_job_runs(condor_pool):
    directory = condor_pool.job_dir("chirp")
    chirp = condor_pool.release / "libexec" / "condor_chirp"
    script = write_script(
        directory,
        "chirp.sh",
        """
        "$1" set_job_attr HPScanProbe 42 || exit 2
        "$1" set_job_attr HPScanNote '"from inside"' || exit 2
        sleep 60
        """,
    )
    cluster = submit(condor_pool, job(directory, script, arguments=str(chirp), **{"+WantIOProxy": "true"}))
    try:

        def chirped() -> classad2.ClassAd | None:
            ads = condor_pool.schedd().query(f"ClusterId == {cluster}", ["JobStatus", "HPScanProbe", "HPScanNote"])
            return ads[0] if ads and ads[0].get("HPScanNote") is not None else None

        ad = condor_pool.wait(chirped, TIMEOUT, "chirped attributes in the queue")
        assert ad["JobStatus"] == RUNNING
        assert ad["HPScanProbe"] == 42
        assert ad["HPScanNote"] == "from inside"
    finally:
        remove(condor_pool, cluster)


# --- authentication ----------------------------------------------------------------------------------------------

SUBMIT_WITH_TOKEN = """
import sys, htcondor2
result = htcondor2.Schedd().submit(htcondor2.Submit({
    "executable": "/bin/true", "initialdir": sys.argv[1], "log": "job.log",
    "request_cpus": "1", "request_memory": "16MB", "request_disk": "1MB", "hold": "true",
}))
print(result.cluster())
"""


def submit_with_token_dir(pool: CondorPool, token_dir: Path, directory: Path) -> subprocess.CompletedProcess[str]:
    """Submit from a fresh process that may authenticate only with the IDTOKEN(s) in ``token_dir``."""
    env = pool.env(_CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS="IDTOKENS", _CONDOR_SEC_TOKEN_DIRECTORY=str(token_dir))
    command = [sys.executable, "-c", SUBMIT_WITH_TOKEN, str(directory)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_submit_authenticated_with_a_pool_issued_idtoken(condor_pool, tmp_path):
    directory = condor_pool.job_dir("token")
    token = condor_pool.token(authz=["READ", "WRITE"], lifetime_s=600)
    result = submit_with_token_dir(condor_pool, condor_pool.token_dir(token, tmp_path), directory)
    assert result.returncode == 0, result.stderr
    cluster = int(result.stdout.split()[-1])
    try:
        (ad,) = condor_pool.schedd().query(f"ClusterId == {cluster}", ["Owner", "User", "AuthTokenSubject"])
        assert ad["Owner"] == condor_pool.submit_user
        assert ad["AuthTokenSubject"] == condor_pool.identity
    finally:
        remove(condor_pool, cluster)


def test_a_token_the_pool_did_not_sign_is_refused(condor_pool, tmp_path):
    header, claims, _ = condor_pool.token().split(".")
    forged = f"{header}.{claims}.{base64.urlsafe_b64encode(b'x' * 32).decode().rstrip('=')}"
    result = submit_with_token_dir(condor_pool, condor_pool.token_dir(forged, tmp_path), condor_pool.job_dir("forged"))
    assert result.returncode != 0
    assert "AUTHENTICATE" in result.stderr.upper() or "authentic" in result.stderr.lower(), result.stderr
