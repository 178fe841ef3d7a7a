"""Every record a running HTCondor job chirped comes back to a restarted operator: the job keeps its records in
numbered pages (HPScanRecords0, 1, ...), each within one chirp line, and the backend reads them all. Against the
schedd STAND-IN, whose chirp refuses a line longer than htchirp sends (CHIRP_LINE_MAX), so about ten dl1 records
fit a page as on a real pool."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from hpscan.api.contract import RESULTS_FILE, ResultRecord, parse_records, shard_name
from hpscan.api.spec import HPScanSpec
from hpscan.backends.base import ScanRef, ShardLaunch
from hpscan.backends.htcondor import HTCondorBackend
from hpscan.core.planning import plan
from hpscan.errors import SchedulerUnavailable
from hpscan.job.chirp import ChirpChannel, record_page_attr
from hpscan.testing.condor import JobChirp, ScheddStandIn

SCAN = ScanRef(name="tpe", namespace="atlas", uid="uid-records")


def make_spec() -> HPScanSpec:
    return HPScanSpec.model_validate(
        {
            "parameters": [{"name": "layer1", "values": [8, 16, 32, 64]}, {"name": "lr", "values": [0.1, 0.01]}],
            "sampling": {"strategy": "tpe", "samples": 64, "seed": 3, "trialsPerWorker": 2},
            "sharding": {"shards": 2},
            "gpu": {"count": 0, "required": False},
            "payload": {"image": "img:1"},
            "sites": [{"name": "grid", "htcondor": {}}],
        }
    )


def dl1_record(i: int, shard: int = 0) -> ResultRecord:
    """A record the size dl1 writes (six parameters, its metrics, times, device, epochs)."""
    return ResultRecord(
        id=f"c{i}-{i:012x}",
        shard=shard,
        parameters={
            "layer1": 256,
            "layer2": 128,
            "layer3": 60,
            "learning_rate": 0.000316227766,
            "activation": "relu",
            "batch_size": 3000,
        },
        metrics={"val_loss": 0.61234567 + i / 1000, "loss": 0.60123456, "val_accuracy": 0.71234567},
        status="succeeded",
        started_at=datetime(2026, 5, 1, 12, 0, i % 60, tzinfo=UTC),
        finished_at=datetime(2026, 5, 1, 12, 1, i % 60, tzinfo=UTC),
        duration_seconds=61.234567,
        device="GPU:0 NVIDIA A100-SXM4-40GB",
        epochs=1,
        max_epochs=1,
    )


@pytest.fixture
def setup(tmp_path: Path):
    schedd = ScheddStandIn()
    backend = HTCondorBackend(tmp_path / "work", schedd_factory=lambda site: schedd, max_age_seconds=0)
    spec = make_spec()
    planned = plan(SCAN.name, spec)
    backend.submit(SCAN, spec, [ShardLaunch(planned.shard_file(s), spec.sites[0]) for s in range(2)])
    return schedd, backend, spec


def restarted(tmp_path: Path, schedd: ScheddStandIn, spec: HPScanSpec) -> HTCondorBackend:
    again = HTCondorBackend(tmp_path / "work", schedd_factory=lambda site: schedd, max_age_seconds=0)
    again.track(SCAN, spec)
    return again


def test_a_restarted_operator_gets_back_every_record_a_running_job_chirped(setup, tmp_path, capsys):
    """The pool's stall (issue 22): 14 records per job, and a restarted operator saw only the last ten or so."""
    schedd, backend, spec = setup
    job = schedd.job_of(SCAN.uid, 0)
    schedd.start(job)
    channel = ChirpChannel(spec.objective, client=lambda: JobChirp(schedd, job))
    records = [dl1_record(i) for i in range(32)]
    seen = []
    for record in records:
        channel.publish([record])
        seen += backend.fetch_records(SCAN)
    assert "chirp unavailable" not in capsys.readouterr().err  # every line within chirp's limit
    assert [r.id for r in seen] == [r.id for r in records]  # live, once each

    again = restarted(tmp_path, schedd, spec)
    assert sorted(r.id for r in again.fetch_records(SCAN)) == sorted(r.id for r in records)
    assert again.fetch_records(SCAN) == []  # handed over once


def page_queries(schedd: ScheddStandIn) -> list[list[str]]:
    """The projections of the queries that read record pages, in order."""
    pages = {record_page_attr(page) for page in range(100)}
    queries = [projection for name, (_, projection) in schedd.calls if name == "query"]
    return [projection for projection in queries if pages & set(projection)]


def test_pages_are_read_only_from_jobs_that_chirped_and_from_their_newest_page_read(setup):
    schedd, backend, spec = setup
    job = schedd.job_of(SCAN.uid, 0)
    schedd.start(job)
    channel = ChirpChannel(spec.objective, client=lambda: JobChirp(schedd, job))
    channel.publish([dl1_record(i) for i in range(25)])  # three pages
    assert len(backend.fetch_records(SCAN)) == 25
    assert page_queries(schedd)[-1] == ["ClusterId", "ProcId", "HPScanRecords0", "HPScanRecords1", "HPScanRecords2"]
    backend.fetch_records(SCAN)  # nothing new: no page read
    assert len(page_queries(schedd)) == 1
    channel.publish([dl1_record(25)])
    assert [r.id for r in backend.fetch_records(SCAN)] == [dl1_record(25).id]
    assert page_queries(schedd)[-1] == ["ClusterId", "ProcId", "HPScanRecords2"]  # the newest page read on


def test_a_schedd_that_does_not_answer_the_page_read_loses_no_record(setup, tmp_path):
    schedd, backend, spec = setup
    job = schedd.job_of(SCAN.uid, 0)
    schedd.start(job)
    ChirpChannel(spec.objective, client=lambda: JobChirp(schedd, job)).publish([dl1_record(i) for i in range(15)])
    backend.refresh()
    schedd.down = "connection refused"
    backend.max_age_seconds = 3600  # the poll cycle above is fresh: only the page read meets the outage
    with pytest.raises(SchedulerUnavailable):
        backend.fetch_records(SCAN)
    schedd.down = None
    assert len(backend.fetch_records(SCAN)) == 15


def test_a_suspended_shard_keeps_every_record_its_job_chirped(setup, tmp_path):
    """cancel reads all pages before removing the job: the next attempt carries every record in."""
    schedd, _, spec = setup
    job = schedd.job_of(SCAN.uid, 1)
    schedd.start(job)
    records = [dl1_record(i, shard=1) for i in range(23)]
    ChirpChannel(spec.objective, client=lambda: JobChirp(schedd, job)).publish(records)
    again = restarted(tmp_path, schedd, spec)  # it never fetched them
    again.cancel(SCAN, [1])
    results = next((tmp_path / "work").rglob(f"{shard_name(1)}/{RESULTS_FILE}"))
    assert {r.id for r in parse_records(results.read_bytes().splitlines())[0]} == {r.id for r in records}


def test_a_retried_job_and_a_restarted_operator_keep_every_attempts_records(setup, tmp_path):
    schedd, _, spec = setup
    job = schedd.job_of(SCAN.uid, 0)
    schedd.start(job)
    ChirpChannel(spec.objective, client=lambda: JobChirp(schedd, job)).publish([dl1_record(i) for i in range(12)])
    schedd.set(job, JobStatus=1)  # the attempt failed; the schedd retries the same job: same ad
    schedd.start(job)
    second = ChirpChannel(spec.objective, client=lambda: JobChirp(schedd, job))
    assert len(second.recorded()) == 12
    second.publish([dl1_record(i) for i in range(12, 20)])
    assert sorted(r.id for r in restarted(tmp_path, schedd, spec).fetch_records(SCAN)) == sorted(
        dl1_record(i).id for i in range(20)
    )


def test_a_job_removed_by_an_operator_that_stopped_before_reading_it_is_read_and_released(setup, tmp_path):
    """STAND-IN: the operator removed a running job and stopped before it read the records the job chirped while
    stopping (leave_in_queue keeps such a job): the next operator hands them over, keeps them for the shard's next
    attempt, and releases the job so it leaves the queue."""
    schedd, _, spec = setup
    job = schedd.job_of(SCAN.uid, 1)
    schedd.start(job)
    records = [dl1_record(i, shard=1) for i in range(3)]
    ChirpChannel(spec.objective, client=lambda: JobChirp(schedd, job)).publish(records)
    schedd.edit(job, "HPScanCancelled", "true")
    del schedd.jobs[job]["RemoteHost"]  # its shadow ended after the removal
    schedd.set(job, JobStatus=3, RemoveReason="hpscan: scan suspended or deleted")
    assert job in schedd.jobs  # kept: nobody read it yet
    again = restarted(tmp_path, schedd, spec)
    assert {r.id for r in again.fetch_records(SCAN)} == {r.id for r in records}
    assert job not in schedd.jobs  # released
    results = next((tmp_path / "work").rglob(f"{shard_name(1)}/{RESULTS_FILE}"))
    assert {r.id for r in parse_records(results.read_bytes().splitlines())[0]} == {r.id for r in records}
