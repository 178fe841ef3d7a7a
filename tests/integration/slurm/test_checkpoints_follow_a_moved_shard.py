"""Issue 26: a shard moved between sites of different kinds resumes its trials in flight at their last epoch, the
operator carrying their checkpoints through the scan's store (backends/sandbox_checkpoints.py; docs/checkpoints.md,
"Moves between sites"). On real parts: a dl1 scan through the engine's step, as the operator drives it, over the
Slurm test cluster (slurm_cluster) and the personal HTCondor pool (condor_pool), with a real S3 server (versitygw).

Both ways. Slurm to HTCondor: the shard starts on the Slurm site; once a trial's checkpoint of epoch 2 or later is
in its folder on the shared spool, the scan is suspended (its job scancelled: the operator uploads the folder's
checkpoints) and resumed with the Slurm site drained (maxRunning 0), so the shard moves to the pool: the operator
restores the stored checkpoints into the job's sandbox, which carries them as input, and each trial in flight
resumes at its stored epoch. HTCondor to Slurm: the job removed by the suspend (condor_rm: no output transfer) sends
its checkpoints to its sandbox through chirp as it stops (job/chirp.send_folders), the operator uploads them, and
restores them into the shard's folder at the Slurm site before its sbatch."""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from hpscan.api.spec import HPScanSpec
from hpscan.api.status import TERMINAL_SCAN_PHASES, HPScanStatus
from hpscan.api.store import ModelStoreLocation
from hpscan.backends.base import ScanRef
from support.checkpoint_files import saved_epochs, stored_epochs

pytestmark = [pytest.mark.integration, pytest.mark.slow]
pytest.importorskip("tensorflow")

EPOCHS = 12
KEPT_EPOCH = 2  # the move comes once a trial saved this epoch or a later one
log = logging.getLogger(__name__)  # what moved when: --log-cli-level=INFO shows it
ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")}


def _env(**variables: str) -> list[dict[str, str]]:
    return [
        {"name": name, "value": value} for name, value in {"MPLCONFIGDIR": "/tmp", **ONE_THREAD, **variables}.items()
    ]


def moving_spec(
    pool: Any, slurm: Any, spool: Path, store: dict[str, Any], first: str = "hpc", drained: bool = False
) -> HPScanSpec:
    """Two dl1 trials fused in one shard (both in flight at once), no early stopping; the ``first`` site listed
    first, so the shard starts there, and with no room once ``drained``."""
    grid = {"universe": "vanilla", "executable": "/usr/bin/env", "requestMemory": "1536MB", "requestDisk": "1GB"}
    sites = [
        {"name": "hpc", "env": _env(), "slurm": slurm.site(spool, partition="cpu", memory="1536M")},
        {"name": "grid", "env": _env(PATH=f"{pool.job_bin()}:/usr/bin:/bin"), "htcondor": {**pool.site(), **grid}},
    ]
    sites.sort(key=lambda site: site["name"] != first)
    sites[0]["maxRunning"] = 0 if drained else 1
    return HPScanSpec.model_validate(
        {
            "objective": {"metric": "val_loss", "goal": "minimize"},
            "parameters": [{"name": "learning_rate", "values": [0.001, 0.003]}],
            "sharding": {"shards": 1},
            "retries": 0,
            "gpu": {"count": 0, "required": False},
            "artifacts": {"keep": "none", "store": {"s3": store}},
            "payload": {
                "image": "unused-at-batch-sites",
                "settings": {"epochs": EPOCHS, "patience": 0, "batch_size": 100, "fuse": 2,
                             "data": {"synthetic": {"jets": 60000, "seed": 1}}},
            },
            "sites": sites,
        }
    )  # fmt: skip


@pytest.mark.parametrize(
    ("first", "then"), [("hpc", "grid"), ("grid", "hpc")], ids=["slurm-to-htcondor", "htcondor-to-slurm"]
)
def test_a_shard_moved_to_a_site_of_another_kind_resumes_its_trials_at_their_stored_epoch(
    slurm_cluster, condor_pool, s3, caplog, first, then
):
    from hpscan.backends.htcondor import HTCondorBackend
    from hpscan.backends.slurm.backend import SlurmBackend
    from hpscan.backends.slurm.script import shard_folder
    from hpscan.core.brokering import Target
    from hpscan.core.planning import plan
    from hpscan.core.results import Aggregate
    from hpscan.engine import StepInput, step

    bucket = s3.create_bucket(f"carry-{uuid.uuid4().hex[:6]}")
    store = {"endpoint": s3.endpoint, "bucket": bucket, "prefix": "scans", "secretRef": {"name": "s3"}}
    spool = slurm_cluster.spool("carry")
    spec = moving_spec(condor_pool, slurm_cluster, spool, store, first)
    ref = ScanRef(name="carry", namespace="physics", uid=f"carry-{uuid.uuid4().hex[:12]}")
    prefix = ModelStoreLocation.of(spec.artifacts.store.s3, ref.namespace, ref.name).checkpoints_prefix
    keys = {"accessKeyId": s3.access_key, "secretAccessKey": s3.secret_key}
    read_secret = lambda namespace, name, key: keys[key]  # noqa: E731 (the Secret "s3" of the scan's namespace)
    backends = {
        "slurm": SlurmBackend(read_secret, environ={"SLURM_JWT": slurm_cluster.token}, max_age_seconds=0),
        "htcondor": HTCondorBackend(condor_pool.job_dir("carry"), max_age_seconds=0, read_secret=read_secret),
    }
    agg = Aggregate(plan("carry", spec))
    status: HPScanStatus | None = None
    records: list[Any] = []

    def advance(spec: HPScanSpec) -> HPScanStatus:
        result = step(StepInput(ref, spec, agg, [Target.of(site) for site in spec.sites], previous=status), backends)
        records.extend(result.new_records)
        return result.status

    folder = shard_folder(next(site for site in spec.sites if site.name == "hpc"), ref, 0)
    sandbox = backends["htcondor"].scan_dir(ref) / "shard-000"
    # where the first site's job saves its checkpoints while it runs: the shared spool, or the pool's execute side
    caplog.set_level("INFO", logger="hpscan.backends.sandbox_checkpoints")
    started = time.monotonic()
    try:
        deadline = started + 600
        while not any(e >= KEPT_EPOCH for e in saved_epochs(saving(first, folder, condor_pool)).values()):
            assert time.monotonic() < deadline, f"no checkpoint of epoch {KEPT_EPOCH} at site {first}: {status}"
            status = advance(spec)
            assert not records, "the trials ended before the move: make the epochs longer"
            time.sleep(1)
        assert status is not None and status.shards[0].site == first
        status = advance(spec.model_copy(update={"suspend": True}))  # the job cancelled; the operator uploads
        in_flight = stored_epochs(s3, bucket, prefix)
        came_back = sorted(str(path.relative_to(sandbox)) for path in sandbox.rglob("*")) if first == "grid" else []
        assert in_flight and max(in_flight.values()) >= KEPT_EPOCH, (in_flight, came_back)
        assert all(epoch < EPOCHS for epoch in in_flight.values()), f"stopped too late to test a resume: {in_flight}"
        log.info("suspended after %.0f s, the epochs in flight in the store: %s", time.monotonic() - started, in_flight)
        drained = moving_spec(condor_pool, slurm_cluster, spool, store, first, drained=True)
        while status.phase not in TERMINAL_SCAN_PHASES:
            assert time.monotonic() < deadline + 300, f"the scan did not end; last status: {status}"
            status = advance(drained)  # the first site is full for good: the suspended shard moves to the other
            time.sleep(1)
        logs = [sandbox / "stderr.txt"] if then == "grid" else sorted(folder.glob("stderr-*.txt"))
        said = "".join(path.read_text() for path in logs if path.exists())
        left = s3.keys(bucket, prefix)
        log.info("the scan ended after %.0f s: %s", time.monotonic() - started, status.message)
    finally:
        backends["htcondor"].forget(ref, delete_sandboxes=True)
        backends["slurm"].forget(ref)
    assert status.phase == "Succeeded" and status.progress == "2/2", status.message
    (shard,) = status.shards
    assert (shard.site, shard.moves) == (then, 1), shard
    by_id = {record.id: record for record in records}
    assert len(by_id) == len(records) == 2, [record.id for record in records]  # every record, once
    for trial, epoch in in_flight.items():
        assert f"restored the checkpoint of {trial} from {prefix}{trial}/" in caplog.text, caplog.text[-3000:]
        assert f"resuming {trial} at epoch {epoch} from its checkpoint" in said, said[-3000:]
        assert by_id[trial].resumed_from == [epoch], by_id[trial]
        assert by_id[trial].epochs == EPOCHS and by_id[trial].status == "succeeded"
    assert status.training.epochs_resumed == sum(in_flight.values())
    assert left == [], f"stored checkpoints left after every record: {left}"  # pruned with their records
    assert sorted(by_id) == sorted(c.id for c in agg.plan.combinations())


def saving(site: str, folder: Path, pool: Any) -> Any:
    """The checkpoint files the shard's running job saves: in its folder on the shared spool (Slurm), or in its
    scratch on the pool's execute side (HTCondor: the sandbox holds them only once they come back)."""
    if site == "hpc":
        return folder.glob("checkpoints/*/state.npz")
    return pool.state_dir.glob("execute/dir_*/scratch/checkpoints/*/state.npz")
