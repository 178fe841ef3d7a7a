"""The HTCondor submit description, built and inspected with the real htcondor2.Submit (no daemons needed)."""

from __future__ import annotations

import time
from pathlib import Path

import classad2
import htcondor2
import pytest
from pydantic import ValidationError

from hpscan.api.sites import HTCondorSite, Site
from hpscan.api.spec import HPScanSpec
from hpscan.api.status import FINAL_EXITS
from hpscan.backends.base import ScanRef
from hpscan.backends.htcondor import (
    SubmitPlan,
    condor_arguments,
    container_image,
    submit_description,
)
from hpscan.core.planning import plan
from hpscan.errors import BackendError
from hpscan.job.chirp import classad_string

FOLDER = Path("/srv/hpscan/default/dl1-abc")
SCAN = ScanRef(name="dl1", namespace="atlas", uid="3f6c-uid")


def make_spec(gpu: dict | None = None, htcondor: dict | None = None, **extra) -> HPScanSpec:
    return HPScanSpec.model_validate(
        {
            "parameters": [
                {"name": "layer1", "values": [32, 64, 96]},
                {"name": "activation", "values": ["relu", "elu"]},
            ],
            "sharding": {"shards": 3},
            "retries": 2,
            "gpu": gpu if gpu is not None else {"count": 1, "minComputeCapability": "7.0"},
            "payload": {"image": "registry.example.org/hpscan/dl1-payload:0.1.0"},
            "sites": [{"name": "grid", "htcondor": htcondor if htcondor is not None else {}}],
            **extra,
        }
    )


def build(spec: HPScanSpec) -> SubmitPlan:
    planned = plan(SCAN.name, spec)
    return submit_description(SCAN, spec, spec.sites[0], list(planned.shard_files()), FOLDER)


def expand(description: htcondor2.Submit, key: str, shard: int, combinations: int = 2) -> str:
    """What the schedd would see for one job: the description with one itemdata row applied."""
    job = htcondor2.Submit(dict(description.items()))
    job["Shard"] = str(shard)
    job["Combinations"] = str(combinations)
    return job.expand(key)


def test_gpu_request_and_container_image():
    submit = build(make_spec(gpu={"count": 2, "minComputeCapability": "8.0", "minMemoryMb": 40000})).description
    assert isinstance(submit, htcondor2.Submit)
    assert submit.expand("request_gpus") == "2"
    assert submit.expand("gpus_minimum_capability") == "8.0"
    assert submit.expand("gpus_minimum_memory") == "40000"
    assert submit.expand("universe") == "container"
    assert submit.expand("container_image") == "docker://registry.example.org/hpscan/dl1-payload:0.1.0"


def test_cpu_only_scan_asks_for_no_gpu():
    submit = build(make_spec(gpu={"count": 0, "required": False})).description
    assert "request_gpus" not in submit
    assert "gpus_minimum_capability" not in submit


@pytest.mark.parametrize(
    ("configured", "expected"),
    [
        (None, "docker://registry.example.org/hpscan/dl1-payload:0.1.0"),
        ("docker://other/image:1", "docker://other/image:1"),
        ("/cvmfs/unpacked.cern.ch/dl1.sif", "/cvmfs/unpacked.cern.ch/dl1.sif"),
        ("images/dl1.sif", "images/dl1.sif"),
    ],
)
def test_container_image_forms(configured, expected):
    spec = make_spec()
    assert container_image(HTCondorSite(containerImage=configured), spec) == expected


def test_sandbox_retries_and_tags_per_job():
    result = build(make_spec())
    submit = result.description
    assert submit["transfer_input_files"] == "shard-$INT(Shard,%03d).json, results.jsonl, checkpoints"
    assert expand(submit, "transfer_input_files", 1) == "shard-001.json, results.jsonl, checkpoints"
    assert expand(submit, "initialdir", 1) == f"{FOLDER}/shard-001"
    assert submit.expand("transfer_output_files") == "results.jsonl, checkpoints"
    assert submit.expand("when_to_transfer_output") == "ON_EXIT_OR_EVICT"
    assert submit.expand("should_transfer_files") == "YES"
    assert submit.expand("max_retries") == "2"
    # +Attr lines are job attributes (MY.*), string values quoted as ClassAd strings.
    assert submit.expand("MY.WantIOProxy") == "true"
    assert submit.expand("MY.HPScanUid") == '"3f6c-uid"'
    assert submit.expand("MY.HPScanName") == '"dl1"'
    assert submit.expand("MY.HPScanSite") == '"grid"'
    assert expand(submit, "MY.HPScanShard", 2) == "2"
    assert expand(submit, "MY.HPScanTotal", 2, combinations=7) == "7"


def test_one_job_per_shard_in_the_itemdata():
    result = build(make_spec())
    assert result.itemdata == [
        {"Shard": "0", "Combinations": "2", "Moves": "0"},
        {"Shard": "1", "Combinations": "2", "Moves": "0"},
        {"Shard": "2", "Combinations": "2", "Moves": "0"},
    ]
    assert result.shards == [0, 1, 2]
    # The text form is a whole submit file that the real parser accepts, with the same items and commands.
    parsed = htcondor2.Submit(result.text())
    assert list(parsed.itemdata()) == result.itemdata
    assert parsed.getQArgs().startswith("Shard,Combinations,Moves from")
    assert dict(parsed.items()) == dict(result.description.items())


def test_the_job_runs_the_shard_runner_with_chirp_around_the_payload():
    submit = build(make_spec()).description
    assert submit.expand("executable") == "/usr/bin/env"
    assert submit.expand("transfer_executable") == "false"
    assert expand(submit, "arguments", 4) == (
        '"hpscan shard-run shard-004.json --out . --channel htcondor --checkpoint-exit-code 85 -- dl1 train-shard"'
    )


def test_an_evicted_job_restarts_from_its_checkpoint_on_any_slot():
    # HTCondor's self-checkpointing: the runner's exit 85 means "keep these files and start me again"; an evicted
    # job then starts from them wherever it is matched next, with the records of its attempts so far.
    submit = build(make_spec()).description
    assert submit.expand("checkpoint_exit_code") == "85"
    assert submit.expand("transfer_checkpoint_files") == "checkpoints, results.jsonl"
    assert "--checkpoint-exit-code 85" in submit.expand("arguments")
    assert submit.expand("when_to_transfer_output") == "ON_EXIT_OR_EVICT"  # a vacated job's records come back too
    assert 85 not in FINAL_EXITS  # never a reason to stop retrying


def test_vanilla_universe_runs_the_site_executable():
    site = {"universe": "vanilla", "executable": "/cvmfs/atlas.cern.ch/hpscan/run.sh", "transferExecutable": True}
    submit = build(make_spec(htcondor=site)).description
    assert submit.expand("universe") == "vanilla"
    assert submit.expand("executable") == "/cvmfs/atlas.cern.ch/hpscan/run.sh"
    assert submit.expand("transfer_executable") == "true"
    assert "container_image" not in submit


def test_site_resources_requirements_accounting_and_extra_commands():
    site = {
        "requestCpus": 4,
        "requestMemory": "16GB",
        "requestDisk": "20GB",
        "requirements": 'OpSysAndVer == "AlmaLinux9"',
        "accountingGroup": "group_atlas.ml",
        "extraSubmit": {"+SingularityBind": '"/cvmfs"', "request_gpus": "1", "priority": "5"},
        "maxRetries": 5,
    }
    submit = build(make_spec(gpu={"count": 2}, htcondor=site)).description
    assert submit.expand("request_cpus") == "4"
    assert submit.expand("request_memory") == "16GB"
    assert submit.expand("request_disk") == "20GB"
    assert submit.expand("requirements") == 'OpSysAndVer == "AlmaLinux9"'
    assert "MachineAttrMachine1" in submit.expand("rank")  # a retry prefers another node than the one that failed
    assert submit.expand("accounting_group") == "group_atlas.ml"
    assert submit.expand("MY.SingularityBind") == '"/cvmfs"'
    assert submit.expand("priority") == "5"
    assert submit.expand("request_gpus") == "1"  # extra commands come last, so a site may override
    assert submit.expand("max_retries") == "5"


def test_payload_env_and_timeout():
    spec = make_spec(
        payload={
            "image": "img:1",
            "env": [{"name": "TF_CPP_MIN_LOG_LEVEL", "value": "2"}, {"name": "NOTE", "value": "it's a test"}],
            "timeoutSeconds": 7200,
        }
    )
    submit = build(spec).description
    assert submit.expand("environment") == "\"TF_CPP_MIN_LOG_LEVEL=2 NOTE='it''s a test'\""
    assert submit.expand("allowed_execute_duration") == "7200"


def test_local_and_remote_schedds_differ_only_in_spooling():
    assert build(make_spec()).spool is False
    assert build(make_spec(htcondor={"schedd": "ce01.example.org", "pool": "cm.example.org:9618"})).spool is True
    assert build(make_spec(htcondor={"pool": "cm.example.org"})).spool is True


def test_arguments_and_strings_are_quoted_for_condor():
    assert condor_arguments(["a", "b c", "it's", 'say "hi"', ""]) == "\"a 'b c' 'it''s' 'say \"\"hi\"\"' ''\""
    assert classad_string('a "b" \\ c') == '"a \\"b\\" \\\\ c"'


def test_a_scan_without_uid_cannot_be_tagged():
    spec = make_spec()
    planned = plan("dl1", spec)
    with pytest.raises(BackendError, match="no uid"):
        submit_description(ScanRef(name="dl1"), spec, spec.sites[0], list(planned.shard_files()), FOLDER)


def test_a_kubernetes_site_is_refused():
    spec = make_spec()
    site = Site(name="k8s", kubernetes={})
    with pytest.raises(BackendError, match="not an htcondor site"):
        submit_description(SCAN, spec, site, list(plan("dl1", spec).shard_files()), FOLDER)


def test_site_settings_are_validated():
    with pytest.raises(ValidationError, match="executable is required"):
        HTCondorSite(universe="vanilla")
    with pytest.raises(ValidationError, match="set by hpscan"):
        HTCondorSite(extraSubmit={"+HPScanUid": '"x"'})
    with pytest.raises(ValidationError, match="set by hpscan"):
        HTCondorSite(extraSubmit={"transfer_output_files": "other"})
    with pytest.raises(ValidationError, match="set by hpscan"):
        HTCondorSite(extraSubmit={"checkpoint_exit_code": "0"})  # the shard runner's self-checkpointing exit
    with pytest.raises(ValidationError):
        HTCondorSite(requestMemory="a lot")


def test_job_ads_read_as_shard_states():
    """Pure: what the poller makes of an idle job the negotiator could not place, and of one that ran before."""
    from hpscan.backends.htcondor.ads import shard_status

    idle = {"JobStatus": 1, "HPScanShard": 2, "ClusterId": 7, "ProcId": 2, "HPScanTotal": 8}
    assert shard_status(idle, "grid").reason is None  # not negotiated yet
    rejected = shard_status({**idle, "LastRejMatchReason": "no match found"}, "grid")
    assert (rejected.phase, rejected.reason) == ("Pending", "Unschedulable")
    assert "compute capability" in (rejected.message or "") and "no match found" in (rejected.message or "")
    again = shard_status({**idle, "LastRejMatchReason": "no match found", "NumJobStarts": 1}, "grid")
    assert (again.reason, again.message) == ("Retrying", "attempt 2 waits for a slot")


def job_ad(submit: htcondor2.Submit, **attributes) -> classad2.ClassAd:
    """A job's ad as far as the policy expressions read it: the submit's AllowedExecuteDuration and these."""
    ad = classad2.ClassAd({"AllowedExecuteDuration": int(submit.expand("allowed_execute_duration"))})
    ad.update({"EnteredCurrentStatus": int(time.time()), **attributes})
    return ad


def holds(submit: htcondor2.Submit, command: str, ad: classad2.ClassAd) -> bool:
    return classad2.ExprTree(submit.expand(command)).eval(ad) is True


TIMED_OUT = {"JobStatus": 5, "HoldReasonCode": 47, "HoldReason": "The job exceeded allowed execute duration of 01:00"}


def test_an_attempt_past_its_timeout_is_released_for_a_retry_then_removed():
    """allowed_execute_duration holds a job (JobExecuteExceeded, 47), and max_retries acts only on exits: the
    periodic policy retries a timed-out attempt while retries are left (spec.retries = 2: three attempts) and
    removes the job after the last one, saying why."""
    submit = build(make_spec(payload={"image": "img:1", "timeoutSeconds": 3600})).description
    for starts, retried in [(1, True), (2, True), (3, False)]:
        ad = job_ad(submit, NumJobStarts=starts, **TIMED_OUT)
        assert holds(submit, "periodic_release", ad) is retried, starts
        assert holds(submit, "periodic_remove", ad) is not retried, starts
    ad = job_ad(submit, NumJobStarts=3, **TIMED_OUT)
    assert classad2.ExprTree(submit.expand("MY.PeriodicRemoveReason")).eval(ad) == (
        "the attempt ran past spec.payload.timeoutSeconds (3600 s) and was stopped; no retry left after 3 attempt(s)"
    )
    # Other holds are the site's and the hold timeout's business; running and idle jobs are left alone.
    others = [
        {"JobStatus": 5, "HoldReasonCode": code, "NumJobStarts": starts}
        for code in (13, 16, 26, 46)
        for starts in (1, 3)
    ]
    others += [{"JobStatus": status, "LastHoldReasonCode": 47, "NumJobStarts": 3} for status in (1, 2)]
    for attributes in others:
        ad = job_ad(submit, **attributes)
        assert not holds(submit, "periodic_release", ad) and not holds(submit, "periodic_remove", ad), attributes


def test_a_job_removed_after_its_last_timeout_stays_queued_for_the_poller():
    """Removed jobs leave the queue, and a shard with no job would be submitted again: the one removed by the
    timeout policy stays (as a completed job does) until the scan releases it; so do hpscan's own removals, until
    it read what they chirped while stopping; a site's removals leave."""
    submit = build(make_spec(payload={"image": "img:1", "timeoutSeconds": 3600})).description
    removed = {"JobStatus": 3, "LastHoldReasonCode": 47, "NumJobStarts": 3}
    assert holds(submit, "leave_in_queue", job_ad(submit, **removed))
    assert holds(submit, "leave_in_queue", job_ad(submit, JobStatus=4))
    assert not holds(submit, "leave_in_queue", job_ad(submit, **removed, HPScanReleased=True))
    assert holds(submit, "leave_in_queue", job_ad(submit, **removed, HPScanCancelled=True))  # hpscan's: until read
    assert not holds(submit, "leave_in_queue", job_ad(submit, **removed, HPScanCancelled=True, HPScanReleased=True))
    assert not holds(submit, "leave_in_queue", job_ad(submit, JobStatus=3, LastHoldReasonCode=13))  # a site's


def test_without_a_timeout_there_is_no_timeout_policy():
    submit = build(make_spec()).description
    assert "allowed_execute_duration" not in submit
    assert "periodic_release" not in submit and "periodic_remove" not in submit
    kept = submit.expand("leave_in_queue")
    assert kept.startswith(
        "(JobStatus == 4 || (JobStatus == 3 && HPScanCancelled =?= true)) && HPScanReleased =!= true"
    )
    assert "HoldReasonCode" not in kept  # no timed-out removals to keep


def test_a_site_periodic_policy_is_combined_with_the_timeout_policy():
    """A site's own periodic_release / periodic_remove (in any spelling) still act, and so do hpscan's."""
    extra = {"periodic_remove": "JobStatus == 1 && NumJobStarts > 5", "+PeriodicRelease": "HoldReasonCode =?= 13"}
    site = {"extraSubmit": extra, "maxRetries": 1}
    submit = build(make_spec(payload={"image": "img:1", "timeoutSeconds": 3600}, htcondor=site)).description
    assert "MY.PeriodicRelease" not in submit and "+PeriodicRelease" not in submit  # one expression, not two
    assert holds(submit, "periodic_release", job_ad(submit, NumJobStarts=1, **TIMED_OUT))
    assert holds(submit, "periodic_release", job_ad(submit, JobStatus=5, HoldReasonCode=13, NumJobStarts=9))
    assert holds(submit, "periodic_remove", job_ad(submit, NumJobStarts=2, **TIMED_OUT))  # maxRetries 1
    site_removes = job_ad(submit, JobStatus=1, NumJobStarts=6)
    assert holds(submit, "periodic_remove", site_removes)
    # the site's removal keeps HTCondor's own reason (ours is undefined), so it reads as a removal by the site
    assert classad2.ExprTree(submit.expand("MY.PeriodicRemoveReason")).eval(site_removes) is classad2.Value.Undefined


def test_a_job_removed_after_its_last_timeout_reads_as_a_failed_shard():
    from hpscan.backends.htcondor.ads import shard_status

    why = "the attempt ran past spec.payload.timeoutSeconds (600 s) and was stopped; no retry left after 2 attempt(s)"
    ad = {"JobStatus": 3, "HPScanShard": 1, "ClusterId": 7, "ProcId": 1, "NumJobStarts": 2, "RemoveReason": why}
    state = shard_status(ad, "grid")
    assert (state.phase, state.reason, state.message, state.attempts) == ("Failed", "PayloadFailed", why, 2)
    by_site = shard_status({**ad, "RemoveReason": "removed by the admin"}, "grid")
    assert (by_site.phase, by_site.reason) == ("Failed", "Removed")


def test_the_spooled_output_list_the_schedd_joins_wrongly_after_a_checkpoint_is_set_right():
    from hpscan.backends.htcondor.ads import spooled_output_repair

    job = {"TransferCheckpoint": "checkpoints, results.jsonl", "TransferOutput": "results.jsonl,models"}
    # what the 25.x schedd wrote on the test pool: retrieving fails on 'results.jsonlresults.jsonl'
    broken = {**job, "SpooledOutputFiles": "checkpoints,results.jsonlresults.jsonl,models"}
    assert spooled_output_repair(broken) == "checkpoints,results.jsonl,models"
    assert spooled_output_repair({**job, "SpooledOutputFiles": "checkpoints,results.jsonl,models"}) is None
    assert spooled_output_repair(job) is None  # never checkpointed: nothing spooled to mend
    assert spooled_output_repair({"SpooledOutputFiles": "a,b"}) is None  # not a self-checkpointing job
