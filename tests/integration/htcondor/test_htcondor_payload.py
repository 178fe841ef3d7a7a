"""The real payload on the grid path: DL1 trained by TensorFlow in vanilla-universe jobs on the personal HTCondor
pool (the condor_pool fixture), followed by `hpscan run --site` and by the operator on the local control plane,
to Succeeded with every record.

The site is remote-style (the pool's collector and schedd named: input spooled, output retrieved), as a grid
site is. Its jobs run as the pool's submitting user with the pool's job Python (cluster/condor/job-python.sh),
as a site would provide hpscan and dl1 on CVMFS; the container universe cannot run here (no container runtime
the startd could use: docs/htcondor.md).
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from hpscan.api.spec import GROUP, PLURAL, VERSION
from support.operator_support import REPO, Operator, create, wait_phase

pytestmark = pytest.mark.slow

COMBINATIONS = 24  # examples/quickstart.yaml: 2 x 2 x 3 x 2


def condor_sites(pool: Any, **extra: Any) -> list[dict[str, Any]]:
    """One htcondor site for the pool: 1 CPU and 1.5 GB a shard (the pool's CPU slot has 2 cores and 4 GB), and
    the site's software area (the job Python) on the jobs' PATH, as a site admin would set it."""
    block = {"universe": "vanilla", "executable": "/usr/bin/env", "requestMemory": "1536MB", "requestDisk": "1GB"}
    return [{"name": "pool", "env": job_env(pool), "htcondor": {**pool.site(), **block, **extra}}]


def job_env(pool: Any) -> list[dict[str, str]]:
    """The payload's environment in the job: the job Python first on PATH, TensorFlow on the one core it asked for."""
    one = {name: "1" for name in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")}
    variables = {"PATH": f"{pool.job_bin()}:/usr/bin:/bin", "MPLCONFIGDIR": "/tmp", **one}
    return [{"name": name, "value": value} for name, value in variables.items()]


def assert_every_record(records: list[dict[str, Any]]) -> None:
    assert len(records) == COMBINATIONS == len({r["id"] for r in records})
    assert all(r["status"] == "succeeded" and r["device"] for r in records)
    values = sorted(r["metrics"]["val_loss"] for r in records)
    assert values[-1] - values[0] > 0.02  # trained for real: the hyperparameters matter


def test_quickstart_through_hpscan_run_at_an_htcondor_site(condor_pool, tmp_path):
    """`hpscan run --site` with the quickstart manifest and the site given by --set, as a user would reduce a
    grid scan: every shard a job on the pool, records in the run folder, the jobs gone from the queue at the end."""
    command = [
        str(Path(sys.executable).parent / "hpscan"), "run", str(REPO / "examples" / "quickstart.yaml"),
        "--out", str(tmp_path), "--plain", "--site", "pool",
        "--set", f"sites={json.dumps(condor_sites(condor_pool))}",
    ]  # fmt: skip
    run = subprocess.run(command, env=condor_pool.env(), capture_output=True, text=True, timeout=1200, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["phase"] == "Succeeded" and status["progress"] == f"{COMBINATIONS}/{COMBINATIONS}", status
    assert {s["site"] for s in status["shards"]} == {"pool"}
    assert_every_record([json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()])
    uid = json.loads((tmp_path / "status.json").read_text())["shards"][0]["job"]
    assert uid and not condor_pool.schedd().query(  # completed jobs were released from the queue (leave_in_queue)
        f"ClusterId == {uid.split('.')[0]} && HPScanReleased =!= true", ["ClusterId"]
    )


def test_quickstart_through_the_operator_at_an_htcondor_site(condor_pool, cluster, k8s, new_namespace):
    """The operator on the local control plane sends the quickstart to the pool, authenticated by an IDTOKEN the
    pool issued, handed over in the scan's namespace as a Secret (the site's tokenSecret)."""
    namespace = new_namespace()
    cluster.kubectl("apply", "-f", str(REPO / "crds" / "hpscan.io_hpscans.yaml"))
    cluster.kubectl("wait", "--for=condition=Established", "crd/hpscans.hpscan.io", "--timeout=60s")
    token = condor_pool.token(authz=["READ", "WRITE"])
    client.CoreV1Api(k8s).create_namespaced_secret(
        namespace, {"metadata": {"name": "pool-token"}, "stringData": {"token": token}}
    )
    body = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    body["spec"]["sites"] = condor_sites(condor_pool, tokenSecret={"name": "pool-token"})

    work = condor_pool.job_dir("operator")
    log = work / "operator.log"
    env = {**condor_pool.env(), "HPSCAN_CONDOR_DIR": str(work / "condor")}
    env.pop("_CONDOR_SEC_TOKEN_DIRECTORY", None)  # the Secret's token, not the pool's
    operator = Operator(cluster, log, namespace, env=env)
    operator.start()
    try:
        created = create(k8s, namespace, body)
        scan = wait_phase(cluster, k8s, namespace, "quickstart", {"Succeeded", "Failed"}, 1200)
        status = scan["status"]
        assert status["phase"] == "Succeeded", (status, log.read_text()[-3000:])
        assert status["progress"] == f"{COMBINATIONS}/{COMBINATIONS}"
        assert status["best"]["value"] < 0.7
        assert status["combinations"]["succeeded"] == COMBINATIONS
        uid = created["metadata"]["uid"]
        jobs = condor_pool.schedd().query(f'HPScanUid == "{uid}"', ["HPScanSite", "AuthTokenSubject"])
        assert jobs and {(ad["HPScanSite"], ad["AuthTokenSubject"]) for ad in jobs} == {("pool", condor_pool.identity)}
        # The Secret's token, alone in the private folder of its credential's worker process (0700)
        (folder,) = (work / "condor" / "tokens").iterdir()
        assert [p.name for p in folder.iterdir()] == ["token"] and (folder / "token").read_text().strip() == token
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        scans = client.CustomObjectsApi(k8s)
        scans.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "quickstart")
        cluster.wait(lambda: not scans.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"], 60)
        assert not condor_pool.schedd().query(f'HPScanUid == "{uid}" && HPScanReleased =!= true', ["ClusterId"])
        assert not folder.exists()  # the deleted scan's worker stopped and its token is gone
    finally:
        operator.stop()
