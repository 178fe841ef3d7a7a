"""The Slurm backend on the Slurm test cluster's real daemons (the slurm_cluster fixture; docs/slurm.md): GPUs as
gres/gpu on the GPU partition, Slurm's pending reasons, the site probe, the quickstart through `hpscan run
--site`, and a scan over the HTCondor pool and the Slurm site that goes on while slurmctld is stopped. The backend
contract runs in test_backend_contract.py."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from hpscan.api.spec import HPScanSpec
from hpscan.api.status import HPScanStatus, ShardPhase
from hpscan.backends.base import ScanRef, ShardLaunch
from hpscan.backends.slurm.backend import SlurmBackend
from hpscan.backends.slurm.rest import SlurmRest
from hpscan.core.planning import plan
from support import CONTRACT_PAYLOAD
from support.operator_support import GPU_NODES
from support.slurm_cluster import run_script

REPO = Path(__file__).resolve().parents[3]
PAYLOAD = str(CONTRACT_PAYLOAD)
COMBINATIONS = 24  # examples/quickstart.yaml: 2 x 2 x 3 x 2


def contract_spec(cluster: Any, spool: Path, knobs: dict[str, Any], gpus: int = 1, **site: Any) -> HPScanSpec:
    """Two shards of the stand-in payload at one site of the cluster (the GPU partition unless told)."""
    block = cluster.site(spool, partition="gpu" if gpus else "cpu")
    python = str(Path(str(block["runner"])).parent / "python")
    return HPScanSpec.model_validate(
        {
            "parameters": [{"name": "x", "values": [1, 2, 3, 4]}],
            "sharding": {"shards": 2},
            "retries": 0,
            "gpu": {"count": gpus, "required": gpus > 0},
            "payload": {
                "image": "registry.example.org/contract-payload:1",
                "command": [python, PAYLOAD],
                "gpuCheck": [python, PAYLOAD, "gpu-check"],
                "settings": {"contractPayload": {**knobs, "trainedLog": str(spool / "trained.log")}},
            },
            "sites": [{"name": "hpc", **site, "slurm": block}],
        }
    )


def backend_for(cluster: Any) -> SlurmBackend:
    return SlurmBackend(environ={"SLURM_JWT": cluster.token}, max_age_seconds=0)


def run_job(cluster: Any, spool: Path, partition: str, gres: str | None) -> str:
    """A job through slurmrestd that prints its user and CUDA_VISIBLE_DEVICES; its output once it ended."""
    job: dict[str, Any] = {
        "name": f"probe-{partition}",
        "partition": partition,
        "memory_per_node": 64,
        "current_working_directory": str(spool),
        "standard_output": str(spool / f"{partition}.out"),
        "environment": {"PATH": "/usr/bin:/bin"},
    }
    if gres:
        job["gres"] = gres
    script = '#!/bin/bash\necho "user=$(id -un) uid=$(id -u) cvd=${CUDA_VISIBLE_DEVICES-unset}"\n'
    rest = SlurmRest(cluster.rest_url, cluster.user, cluster.token)
    job_id = rest.submit({"script": script, "job": job})
    cluster.wait(lambda: (j := rest.job(job_id)) is not None and j.state == "COMPLETED", 60, f"job {job_id}")
    return (spool / f"{partition}.out").read_text().strip()


def test_gpu_jobs_get_their_gres_and_cpu_jobs_none_as_an_unprivileged_user(slurm_cluster):
    spool = slurm_cluster.spool("gres")
    gpu = run_job(slurm_cluster, spool, "gpu", "gpu:2")
    assert gpu.startswith(f"user={slurm_cluster.user} ") and " uid=0 " not in gpu
    assert gpu.endswith("cvd=0,1"), gpu  # both stand-in GPUs of gpu1, set by Slurm's gres/gpu plugin
    assert run_job(slurm_cluster, spool, "cpu", None).endswith("cvd=unset")


def test_a_shard_on_a_drained_partition_is_unschedulable_with_slurms_words_and_runs_when_the_node_returns(
    slurm_cluster,
):
    spool = slurm_cluster.spool("drained")
    spec = contract_spec(slurm_cluster, spool, {})
    ref = ScanRef("drained", "physics", "u-drained-" + secrets.token_hex(3))
    planned = plan("drained", spec)
    backend = backend_for(slurm_cluster)
    slurm_cluster.tool("scontrol", "update", "NodeName=gpu1", "State=DRAIN", "Reason=maintenance")
    try:
        backend.submit(ref, spec, [ShardLaunch(f, spec.sites[0]) for f in planned.shard_files()])
        states = slurm_cluster.wait(
            lambda: (s := backend.poll(ref)) and all(x.reason == "Unschedulable" for x in s.values()) and s,
            30,
            "Unschedulable shards",
        )
        assert {s.phase for s in states.values()} == {ShardPhase.PENDING}
        # Slurm's words: "Resources (Nodes required for job are DOWN, DRAINED ...)" until its next scheduling pass,
        # "ReqNodeNotAvail, UnavailableNodes:gpu1" after it.
        message = states[0].message or ""
        assert message.startswith("Slurm: ") and ("UnavailableNodes:gpu1" in message or "DRAINED" in message), message
    finally:
        slurm_cluster.tool("scontrol", "update", "NodeName=gpu1", "State=RESUME")
    try:
        done = slurm_cluster.wait(
            lambda: (s := backend.poll(ref)) and all(x.phase == ShardPhase.SUCCEEDED for x in s.values()) and s,
            90,
            "the shards to succeed",
        )
        assert {s.attempts for s in done.values()} == {1}
        assert len(backend.fetch_records(ref)) == planned.total
    finally:
        backend.forget(ref)


def test_the_site_probe_runs_on_the_gpu_partition_and_a_site_without_a_usable_gpu_fails_it(slurm_cluster):
    spool = slurm_cluster.spool("probe")
    backend = backend_for(slurm_cluster)
    for env, expected, words in [([], 0, "1 GPU usable"), ([{"name": "CONTRACT_GPU_CHECK_EXIT", "value": "3"}], 3, "no usable GPU")]:  # fmt: skip
        spec = contract_spec(slurm_cluster, spool, {}, env=env)
        ref = ScanRef("probe", "physics", "u-probe-" + secrets.token_hex(3))
        site = spec.sites[0]
        assert backend.probe(ref, spec, site).message == "probe sent"
        outcome = slurm_cluster.wait(lambda: (o := backend.probe(ref, spec, site)).ended and o, 60, "the probe")  # noqa: B023
        assert (outcome.exit_code, words in outcome.message) == (expected, True), outcome
        backend.end_probe(ref, site)
        assert backend.probe(ref, spec, site).message == "probe sent"  # ended: a later probe is a new round
        backend.end_probe(ref, site)


@pytest.mark.slow
def test_quickstart_through_hpscan_run_at_the_slurm_site_with_gpus_as_gres(slurm_cluster, tmp_path):
    """`hpscan run --site` with the quickstart manifest, each shard asking one GPU (not required: the stand-ins
    are files, TensorFlow trains on the CPU): every shard a job on the GPU partition with gres/gpu allocated, which
    Slurm shows the job as CUDA_VISIBLE_DEVICES (the site's setup line prints it)."""
    spool = slurm_cluster.spool("quickstart")
    block = slurm_cluster.site(spool, partition="gpu", memory="1536M")
    block["setup"] = ['echo "hpscan-test: CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-unset}"']
    one = {name: "1" for name in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")}
    env = [{"name": name, "value": value} for name, value in {"MPLCONFIGDIR": "/tmp", **one}.items()]
    sites = [{"name": "hpc", "env": env, "slurm": block}]
    command = [
        str(Path(sys.executable).parent / "hpscan"), "run", str(REPO / "examples" / "quickstart.yaml"),
        "--out", str(tmp_path), "--plain", "--site", "hpc",
        "--set", f"sites={json.dumps(sites)}", "--set", 'gpu={"count": 1, "required": false}',
    ]  # fmt: skip
    run = subprocess.run(
        command, env=slurm_cluster.env(SLURM_JWT=slurm_cluster.token), capture_output=True, text=True, timeout=1500
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["phase"] == "Succeeded" and status["progress"] == f"{COMBINATIONS}/{COMBINATIONS}", status
    assert {s["site"] for s in status["shards"]} == {"hpc"}
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len({r["id"] for r in records}) == COMBINATIONS and all(r["status"] == "succeeded" for r in records)
    outputs = sorted(spool.glob("*/*/shard-*/stdout-*.txt"))
    assert len(outputs) == len(status["shards"]) == 4
    for output in outputs:
        said = [line for line in output.read_text().splitlines() if line.startswith("hpscan-test:")]
        assert said in (["hpscan-test: CUDA_VISIBLE_DEVICES=0"], ["hpscan-test: CUDA_VISIBLE_DEVICES=1"]), output


@pytest.mark.slow
def test_a_scan_over_kubernetes_the_pool_and_the_slurm_site_goes_on_while_slurmctld_is_stopped(
    slurm_cluster, condor_pool, cluster, k8s, new_namespace
):
    """Three batch systems in one scan, and fault isolation on real parts: the local control plane's Jobs (its
    node agent), the HTCondor pool and the Slurm site; slurmctld stopped (by its pid) while the scan runs: only the
    Slurm site is Unreachable, the others' shards go on; slurmctld started again, the scan succeeds with shards on
    all three."""
    from kubernetes import client

    from hpscan.api.spec import API_VERSION, GROUP, PLURAL, VERSION
    from hpscan.backends.htcondor import HTCondorBackend
    from hpscan.backends.kubernetes import KubernetesBackend
    from hpscan.core.brokering import Target
    from hpscan.core.results import Aggregate
    from hpscan.engine import StepInput, step

    spool = slurm_cluster.spool("outage")
    bin_dir = slurm_cluster.job_bin()
    grid = {"universe": "vanilla", "executable": "/usr/bin/env", "requestMemory": "256MB", "requestDisk": "64MB"}
    spec = HPScanSpec.model_validate(
        {
            "parameters": [{"name": "x", "values": list(range(12))}],
            "sharding": {"shards": 6},
            "retries": 0,
            "gpu": {"count": 1, "required": False},
            "payload": {
                "image": "registry.example.org/contract-payload:1",
                "command": ["python", PAYLOAD],  # each site's own Python, from its PATH
                "settings": {"contractPayload": {"sleep": 2}},
            },
            "sites": [
                {"name": "cluster", "maxRunning": 1, "kubernetes": GPU_NODES},
                {
                    "name": "grid",
                    "maxRunning": 1,
                    "env": [{"name": "PATH", "value": f"{condor_pool.job_bin()}:/usr/bin:/bin"}],
                    "htcondor": {**condor_pool.site(), **grid},
                },
                {"name": "hpc", "slurm": slurm_cluster.site(spool, partition="gpu", path=f"{bin_dir}:/usr/bin:/bin")},
            ],
        }
    )
    # The HPScan object exists (its Jobs are owned by it, as the operator makes them); no operator watches it here.
    namespace = new_namespace()
    cluster.kubectl("apply", "-f", str(REPO / "crds" / "hpscan.io_hpscans.yaml"))
    cluster.kubectl("wait", "--for=condition=Established", "crd/hpscans.hpscan.io", "--timeout=60s")
    body = {"apiVersion": API_VERSION, "kind": "HPScan", "metadata": {"name": "outage"}, "spec": spec.to_wire()}
    created = client.CustomObjectsApi(k8s).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    ref = ScanRef(name="outage", namespace=namespace, uid=created["metadata"]["uid"])
    backends = {
        "kubernetes": KubernetesBackend(k8s),
        "htcondor": HTCondorBackend(condor_pool.job_dir("outage"), max_age_seconds=0),
        "slurm": SlurmBackend(environ={"SLURM_JWT": slurm_cluster.token}, max_age_seconds=1),
    }
    agg = Aggregate(plan("outage", spec))
    targets = [Target.of(site) for site in spec.sites]
    controller = slurm_cluster.pid("slurmctld")
    subprocess.run(["kill", "-TERM", str(controller)], check=True)
    status: HPScanStatus | None = None
    seen_down: HPScanStatus | None = None
    try:
        deadline = time.monotonic() + 300
        while status is None or status.phase not in {"Succeeded", "Failed"}:
            assert time.monotonic() < deadline, f"the scan did not end in 300 s; last status: {status}"
            status = step(StepInput(ref, spec, agg, targets, previous=status), backends).status
            if seen_down is None and agg.recorded >= 1:  # the pool reported while slurmctld was down
                seen_down = status
                run_script("up.sh")  # starts slurmctld again (the other daemons run on)
            time.sleep(1)
    finally:
        run_script("up.sh")
        backends["htcondor"].forget(ref, delete_sandboxes=True)
        backends["slurm"].forget(ref)
    assert seen_down is not None
    cluster_site, grid_site, hpc_site = seen_down.sites
    assert (cluster_site.state, grid_site.state) == ("Usable", "Usable")
    assert (hpc_site.state, hpc_site.reason) == ("Unreachable", "SiteUnreachable")
    assert "slurmrestd" in (hpc_site.message or "")
    assert status.phase == "Succeeded" and status.progress == "12/12", status.message
    assert status.sites[2].state == "Usable" and status.sites[2].succeeded >= 1  # back, and given shards
    assert {s.site for s in status.shards} == {"cluster", "grid", "hpc"}


def test_a_token_the_centre_did_not_sign_makes_only_that_site_unreachable_naming_slurmrestd(slurm_cluster):
    spool = slurm_cluster.spool("badtoken")
    spec = contract_spec(slurm_cluster, spool, {})
    ref = ScanRef("badtoken", "physics", "u-bad-" + secrets.token_hex(3))
    header, claims, _signature = slurm_cluster.token.split(".")
    backend = SlurmBackend(environ={"SLURM_JWT": f"{header}.{claims}.c2lnbmVkLWJ5LXNvbWVib2R5LWVsc2U"})
    backend.track(ref, spec)
    assert backend.poll(ref) == {}
    outages = backend.outages(ref)
    assert set(outages) == {"hpc"} and slurm_cluster.rest_url in outages["hpc"], outages


@pytest.mark.slow
def test_quickstart_through_the_operator_at_the_slurm_site(slurm_cluster, cluster, k8s, new_namespace):
    """The operator on the local control plane sends the quickstart to the Slurm site, authenticated by the job
    user's JWT handed over in the scan's namespace as a Secret (the site's tokenSecret); jobs run as that user on
    the GPU partition; deleting the scan cancels nothing that ended and keeps the spool's results."""
    import yaml
    from kubernetes import client

    from hpscan.api.spec import GROUP, PLURAL, VERSION
    from support.operator_support import Operator, create, wait_phase

    namespace = new_namespace()
    cluster.kubectl("apply", "-f", str(REPO / "crds" / "hpscan.io_hpscans.yaml"))
    cluster.kubectl("wait", "--for=condition=Established", "crd/hpscans.hpscan.io", "--timeout=60s")
    client.CoreV1Api(k8s).create_namespaced_secret(
        namespace, {"metadata": {"name": "hpc-token"}, "stringData": {"token": slurm_cluster.token}}
    )
    spool = slurm_cluster.spool("operator")
    block = {**slurm_cluster.site(spool, partition="gpu", memory="1536M"), "tokenSecret": {"name": "hpc-token"}}
    one = {name: "1" for name in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")}
    env = [{"name": name, "value": value} for name, value in {"MPLCONFIGDIR": "/tmp", **one}.items()]
    body = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    body["spec"]["sites"] = [{"name": "hpc", "env": env, "slurm": block}]
    body["spec"]["gpu"] = {"count": 1, "required": False}
    log = spool / "operator.log"
    operator = Operator(cluster, log, namespace, env=slurm_cluster.env())  # no SLURM_JWT: the Secret's
    operator.start()
    try:
        created = create(k8s, namespace, body)
        scan = wait_phase(cluster, k8s, namespace, "quickstart", {"Succeeded", "Failed"}, 1200)
        status = scan["status"]
        assert status["phase"] == "Succeeded", (status, log.read_text()[-3000:])
        assert status["progress"] == f"{COMBINATIONS}/{COMBINATIONS}"
        assert {s["site"] for s in status["shards"]} == {"hpc"}
        rest = SlurmRest(slurm_cluster.rest_url, slurm_cluster.user, slurm_cluster.token)
        uid = created["metadata"]["uid"]
        jobs = [job for job in rest.jobs() if job.name.startswith(f"hpscan.{uid}.")]
        assert (
            len(jobs) == 4 and {job.state for job in jobs} == {"COMPLETED"} and {job.node for job in jobs} == {"gpu1"}
        )
        scans = client.CustomObjectsApi(k8s)
        scans.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "quickstart")
        cluster.wait(lambda: not scans.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"], 60)
        results = list(spool.glob(f"{namespace}/quickstart-{uid}/shard-*/results.jsonl"))
        assert sum(len(path.read_text().splitlines()) for path in results) == COMBINATIONS  # kept on the centre
    finally:
        operator.stop()


def test_models_the_payload_saves_on_the_shared_file_system_reach_the_scans_store(slurm_cluster, s3):
    """spec.artifacts.store with the Slurm site: the payload writes models/<id>/ in the shard's folder, the
    backend uploads them when it reads their records (as HTCondor's returned sandboxes) and frees the folder."""
    from hpscan.api.store import ModelStoreLocation, S3Store
    from hpscan.job.store import ModelStore

    bucket = s3.create_bucket(f"models-{secrets.token_hex(3)}")
    store = {"endpoint": s3.endpoint, "bucket": bucket, "prefix": "hpc", "secretRef": {"name": "s3"}}
    spool = slurm_cluster.spool("models")
    wire = contract_spec(slurm_cluster, spool, {}).to_wire()
    wire["artifacts"] = {"keep": "all", "store": {"s3": store}}
    spec = HPScanSpec.model_validate(wire)
    ref = ScanRef("models", "physics", "u-models-" + secrets.token_hex(3))
    keys = {"accessKeyId": s3.access_key, "secretAccessKey": s3.secret_key}
    backend = SlurmBackend(
        read_secret=lambda namespace, name, key: keys[key] if (namespace, name) == ("physics", "s3") else "",
        environ={"SLURM_JWT": slurm_cluster.token},
        max_age_seconds=0,
    )
    planned = plan("models", spec)
    backend.submit(ref, spec, [ShardLaunch(f, spec.sites[0]) for f in planned.shard_files()])
    records: list = []
    try:
        slurm_cluster.wait(
            lambda: (s := backend.poll(ref)) and all(x.phase == ShardPhase.SUCCEEDED for x in s.values()),
            90,
            "the shards to succeed",
        )
        records += backend.fetch_records(ref)
    finally:
        backend.forget(ref)
    assert len(records) == planned.total and backend.models.pending(ref) == 0
    stored = ModelStore(
        ModelStoreLocation.of(S3Store.model_validate(store), "physics", "models"), s3.access_key, s3.secret_key
    )
    assert set(stored.models()) == {record.id for record in records}
    assert not list(spool.glob("*/*/shard-*/models/*"))  # uploaded, then freed on the centre


@pytest.mark.slow
def test_a_job_requeued_mid_trial_resumes_its_trials_from_their_checkpoints_on_the_shared_file_system(
    slurm_cluster, tmp_path
):
    """A preemption at an HPC centre requeues the job (`scontrol requeue`, as an admin or PreemptMode=REQUEUE
    does): the same job starts again and its payload resumes each trial in flight at the epoch of its last
    checkpoint, which lives in the shard's folder on the shared file system (OUT/checkpoints/, hpscan run --site)."""
    import yaml

    from support.checkpoint_files import saved_epochs

    spool = slurm_cluster.spool("requeue")
    block = slurm_cluster.site(spool, partition="cpu", memory="1536M")
    one = {name: "1" for name in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")}
    env = [{"name": name, "value": value} for name, value in {"MPLCONFIGDIR": "/tmp", **one}.items()]
    manifest = {
        "apiVersion": "hpscan.io/v1alpha1",
        "kind": "HPScan",
        "metadata": {"name": "requeue"},
        "spec": {
            "parameters": [{"name": "layer1", "values": [16, 24]}],
            "sharding": {"shards": 1},
            "retries": 1,
            "gpu": {"count": 0, "required": False},
            "payload": {
                "image": "local",
                # epochs of a few seconds each (2,000 jets trained in 1.5 s a trial): time to requeue mid-trial
                "settings": {"epochs": 10, "patience": 0, "batch_size": 100, "data": {"synthetic": {"jets": 40000}}},
            },
            "sites": [{"name": "hpc", "env": env, "slurm": block}],
        },
    }
    (tmp_path / "scan.yaml").write_text(yaml.safe_dump(manifest))
    command = [
        str(Path(sys.executable).parent / "hpscan"), "run", str(tmp_path / "scan.yaml"),
        "--out", str(tmp_path / "run"), "--plain", "--site", "hpc",
    ]  # fmt: skip
    run = subprocess.Popen(
        command, env=slurm_cluster.env(SLURM_JWT=slurm_cluster.token), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )

    def saved() -> dict[str, int]:
        return saved_epochs(spool.rglob("checkpoints/*/state.npz"))

    try:

        def at_epoch_3() -> bool:
            assert run.poll() is None, f"hpscan run ended before a checkpoint at epoch 3: {run.communicate()[0]!r}"
            return max(saved().values(), default=0) >= 3

        slurm_cluster.wait(at_epoch_3, 400, "a trial's checkpoint at epoch 3", interval=0.1)
        rest = SlurmRest(slurm_cluster.rest_url, slurm_cluster.user, slurm_cluster.token)
        (job,) = slurm_cluster.wait(
            lambda: [j for j in rest.jobs() if j.name.startswith("hpscan.") and j.state == "RUNNING"], 60, "the job"
        )
        in_flight = saved()  # the job may save another epoch before the requeue stops it: resumed at that or later
        assert in_flight, "no trial was in flight when the job was requeued"
        slurm_cluster.tool("scontrol", "requeue", str(job.job_id))
        output, _ = run.communicate(timeout=900)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, output.decode()[-3000:]
    records = {r["id"]: r for r in map(json.loads, (tmp_path / "run" / "results.jsonl").read_text().splitlines())}
    assert len(records) == 2 and all(r["status"] == "succeeded" and r["epochs"] == 10 for r in records.values())
    said = "".join(p.read_text(errors="replace") for p in spool.rglob("*.txt"))
    for trial_id, epoch in in_flight.items():
        (resumed,) = records[trial_id]["resumedFrom"]  # once, at the epoch of its last checkpoint
        assert epoch <= resumed < 10, (trial_id, epoch, resumed)
        assert f"resuming {trial_id} at epoch {resumed} from its checkpoint" in said, said[-3000:]
