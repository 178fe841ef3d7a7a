"""One reconcile step, against an in-memory backend standing in for a batch system (the real Kubernetes
backend is exercised on the local control plane in tests/integration)."""

from __future__ import annotations

from pathlib import Path

import yaml

from hpscan.api.contract import ResultRecord
from hpscan.api.status import ShardPhase, ShardStatus
from hpscan.controller.defaults import OperatorDefaults
from hpscan.controller.reconcile import reconcile_scan
from hpscan.core.manifest import load_scan
from hpscan.core.planning import plan
from hpscan.core.summary import MAX_STATUS_SHARDS
from hpscan.engine import EngineSettings
from support.reconcile_backend import MemoryBackend, apply, body


def test_a_new_scan_starts_parallelism_shards_and_says_so():
    backend = MemoryBackend()
    outcome = reconcile_scan(body(parallelism=4), {"kubernetes": backend})
    assert backend.submitted == [0, 1, 2, 3]
    assert set(backend.sites.values()) == {"gpu-cluster"}
    assert outcome.status.phase == "Pending" and outcome.status.progress == "0/800"
    assert [e.reason for e in outcome.events] == ["Pending"]


def test_records_reach_the_status_and_finished_shards_make_room():
    backend = MemoryBackend()
    document = body(parallelism=2)
    document = apply(document, reconcile_scan(document, {"kubernetes": backend}))
    planned = plan("dl1-seed-scan", load_scan(Path("examples/dl1-seed-scan.yaml")).spec)
    combos = planned.shard_combinations(0)
    backend.records = [
        ResultRecord(id=c.id, shard=0, parameters=c.parameters, metrics={"val_loss": 1 - i / 100}, status="succeeded")
        for i, c in enumerate(combos)
    ]
    backend.states[0] = ShardStatus(index=0, phase=ShardPhase.SUCCEEDED)
    backend.states[1] = ShardStatus(index=1, phase=ShardPhase.RUNNING)
    outcome = reconcile_scan(document, {"kubernetes": backend})
    assert backend.submitted == [0, 1, 2]
    status = outcome.status
    assert status.phase == "Running" and status.progress == "80/800"
    assert status.best.id == combos[-1].id and status.shards[0].done == 80
    assert [e.reason for e in outcome.events] == ["Running"]


def test_suspend_stops_running_shards_and_resume_restarts_them():
    backend = MemoryBackend()
    reconcile_scan(body(parallelism=2), {"kubernetes": backend})
    backend.states[0] = ShardStatus(index=0, phase=ShardPhase.RUNNING)
    outcome = reconcile_scan(body(parallelism=2, suspend=True), {"kubernetes": backend})
    assert sorted(backend.cancelled) == [0, 1] and outcome.status.phase == "Suspended"
    reconcile_scan(body(parallelism=2), {"kubernetes": backend})
    assert backend.submitted == [0, 1, 0, 1]


def test_a_finished_scan_is_left_alone():
    backend = MemoryBackend()
    document = body()
    for i in range(10):
        backend.states[i] = ShardStatus(index=i, phase=ShardPhase.SUCCEEDED)
    planned = plan("dl1-seed-scan", load_scan(Path("examples/dl1-seed-scan.yaml")).spec)
    backend.records = [
        ResultRecord(id=c.id, shard=f.shard, parameters=c.parameters, metrics={"val_loss": 0.5}, status="succeeded")
        for f in planned.shard_files()
        for c in f.combinations
    ]
    document = apply(document, reconcile_scan(document, {"kubernetes": backend}))
    assert document["status"]["phase"] == "Succeeded"
    assert reconcile_scan(document, {"kubernetes": backend}).status is None


def test_an_htcondor_site_without_that_backend_is_reported_not_crashed():
    document = yaml.safe_load(Path("examples/dl1-seed-scan.yaml").read_text())
    document["metadata"].update({"uid": "u", "generation": 1})
    outcome = reconcile_scan(document, {"kubernetes": MemoryBackend()})
    assert outcome.status.phase == "Failed" and "htcondor backend" in outcome.status.message


def test_a_spec_the_models_refuse_fails_with_invalid_spec():
    document = body()
    document["spec"]["sharding"] = {"shards": 2, "combinationsPerShard": 3}
    outcome = reconcile_scan(document, {"kubernetes": MemoryBackend()})
    assert outcome.status.phase == "Failed"
    assert outcome.status.conditions[0].reason == "InvalidSpec" and "sharding" in outcome.status.message


def test_shards_split_over_a_kubernetes_and_an_htcondor_site_and_both_reach_the_status(tmp_path):
    """STAND-IN schedd: a unit test of the reconcile, without daemons (the real pool runs the operator in
    tests/integration/htcondor/test_htcondor_payload.py)."""
    import json as _json

    from hpscan.backends.htcondor import HTCondorBackend
    from hpscan.testing.condor import ScheddStandIn

    schedd = ScheddStandIn("ce01")
    condor = HTCondorBackend(tmp_path / "condor", schedd_factory=lambda site: schedd, max_age_seconds=0)
    kube = MemoryBackend()
    document = yaml.safe_load(Path("examples/dl1-seed-scan.yaml").read_text())  # gpu-cluster + uk-manchester
    document["metadata"].update({"namespace": "physics", "uid": "u-2", "generation": 1})
    backends = {"kubernetes": kube, "htcondor": condor}
    memory: dict = {}
    document = apply(document, reconcile_scan(document, backends, memory))
    # The HTCondor site is probed first (a GPU test job); meanwhile the Kubernetes site takes its half.
    assert kube.submitted == [0, 1, 2, 3, 4]
    probe = schedd.probe_of("u-2", "uk-manchester")
    assert schedd.jobs[probe].eval("RequestGpus") == 1
    assert document["status"]["sites"][1]["state"] == "Probing"
    schedd.complete(probe, exit_code=0, outputs={"stdout.txt": "gpu-check: 1 GPU usable\n"}, spooled=True)
    document = apply(document, reconcile_scan(document, backends, memory))  # retrieves the probe's output
    document = apply(document, reconcile_scan(document, backends, memory))
    manchester = document["status"]["sites"][1]
    assert (manchester["state"], manchester["message"]) == ("Usable", "gpu-check: 1 GPU usable")
    condor_jobs = {int(ad.eval("HPScanShard")) for ad in schedd.jobs.values() if ad.get("HPScanShard") is not None}
    assert condor_jobs and condor_jobs | set(kube.submitted) == set(range(10))  # the rest goes where load is least
    assert not condor_jobs & set(kube.submitted)
    shard = min(condor_jobs)
    assert all(ad.eval("RequestGpus") == 1 for ad in schedd.jobs.values())

    planned = plan("dl1-seed-scan", load_scan(Path("examples/dl1-seed-scan.yaml")).spec)
    lines = [
        _json.dumps(ResultRecord(id=c.id, shard=shard, parameters=c.parameters, metrics={"val_loss": 0.3}, status="succeeded").to_wire())
        for c in planned.shard_combinations(shard)
    ]  # fmt: skip
    schedd.complete(schedd.job_of("u-2", shard), outputs={"results.jsonl": "\n".join(lines) + "\n"}, spooled=True)
    reconcile_scan(document, backends, memory)  # retrieves the output
    status = reconcile_scan(document, backends, memory).status
    assert status.shards[shard].phase == "Succeeded" and status.shards[shard].site == "uk-manchester"
    assert status.progress == "80/800" and status.best.shard == shard
    again = reconcile_scan(apply(document, reconcile_scan(document, backends, memory)), backends, memory)
    assert again.status.progress == "80/800"  # records handed over once stay counted


def test_a_schedd_that_stops_answering_degrades_the_scan_once(tmp_path):
    """STAND-IN schedd: one that stops answering, on demand."""
    from hpscan.backends.htcondor import HTCondorBackend
    from hpscan.testing.condor import ScheddStandIn

    schedd = ScheddStandIn("ce01")
    condor = HTCondorBackend(tmp_path / "condor", schedd_factory=lambda site: schedd, max_age_seconds=0)
    document = yaml.safe_load(Path("examples/dl1-seed-scan.yaml").read_text())
    document["spec"]["sites"] = [document["spec"]["sites"][1]]
    document["metadata"].update({"namespace": "physics", "uid": "u-3", "generation": 1})
    document = apply(document, reconcile_scan(document, {"htcondor": condor}))
    schedd.down = "Failed to connect to schedd"
    first = reconcile_scan(document, {"htcondor": condor})
    status = first.status
    degraded = next(c for c in status.conditions if c.type == "Degraded")
    # The outage makes the site Unreachable with the schedd's error; the scan keeps what it has and waits.
    assert (degraded.status, degraded.reason) == ("True", "NoUsableSite")
    [site] = status.sites
    assert (site.state, site.reason) == ("Unreachable", "SiteUnreachable")
    assert "did not answer" in site.message and "Failed to connect to schedd" in site.message
    assert [e.reason for e in first.events if e.type == "Warning"] == ["SiteUnreachable"]
    again = reconcile_scan(apply(document, first), {"htcondor": condor})
    assert [e for e in again.events if e.type == "Warning"] == []  # said once
    schedd.down = None  # back: probed again before it gets shards
    document = apply(document, reconcile_scan(apply(document, again), {"htcondor": condor}))
    assert document["status"]["sites"][0]["state"] == "Probing"
    schedd.complete(schedd.probe_of("u-3", "uk-manchester"), exit_code=0, spooled=True)
    reconcile_scan(document, {"htcondor": condor})  # retrieves the probe's output
    back = reconcile_scan(document, {"htcondor": condor}).status
    assert back.sites[0].state == "Usable" and back.shard_counts.pending + back.shard_counts.running == 10


def test_scans_without_sites_use_the_operators_default_gpu_site(tmp_path):
    from hpscan.controller.defaults import load_defaults

    defaults_file = tmp_path / "defaults.yaml"
    defaults_file.write_text(
        "gpuResourceName: amd.com/gpu\nnodeSelector: {gpu: 'yes'}\n"
        "tolerations: [{key: gpu, operator: Exists, effect: NoSchedule}]\npayloadImage: ''\nsites: []\n"
    )
    defaults = load_defaults(str(defaults_file))
    backend = MemoryBackend()
    document = body()
    del document["spec"]["sites"]
    reconcile_scan(document, {"kubernetes": backend}, defaults=defaults)
    assert set(backend.sites.values()) == {"default"}
    site = defaults.default_sites()[0]
    assert site.kubernetes.gpu_resource_name == "amd.com/gpu" and site.kubernetes.node_selector == {"gpu": "yes"}
    assert (
        load_defaults(str(tmp_path / "missing.yaml")).default_sites()[0].kubernetes.gpu_resource_name
        == "nvidia.com/gpu"
    )


def test_with_the_schedd_down_the_kubernetes_shards_run_and_the_htcondor_ones_wait_for_it(tmp_path):
    """Fault isolation: one site's outage never blocks the other's submissions or records."""
    from hpscan.backends.htcondor import HTCondorBackend
    from hpscan.testing.condor import ScheddStandIn

    schedd = ScheddStandIn("ce01")
    schedd.down = "Failed to connect to schedd"
    condor = HTCondorBackend(tmp_path / "condor", schedd_factory=lambda site: schedd, max_age_seconds=0)
    kube = MemoryBackend()
    document = yaml.safe_load(Path("examples/dl1-seed-scan.yaml").read_text())  # gpu-cluster + uk-manchester
    document["spec"]["sites"][0]["maxRunning"] = 5
    document["metadata"].update({"namespace": "physics", "uid": "u-4", "generation": 1})
    backends = {"kubernetes": kube, "htcondor": condor}
    memory: dict = {}
    first = reconcile_scan(document, backends, memory)
    document = apply(document, first)
    assert kube.submitted == [0, 1, 2, 3, 4]  # the Kubernetes site's room, whatever the schedd does
    cluster, manchester = first.status.sites
    assert (cluster.state, manchester.state, manchester.reason) == ("Usable", "Unreachable", "SiteUnreachable")
    assert "Failed to connect to schedd" in manchester.message
    assert any(e.reason == "SiteUnreachable" and "uk-manchester" in e.message for e in first.events)

    planned = plan("dl1-seed-scan", load_scan(Path("examples/dl1-seed-scan.yaml")).spec)
    kube.records = [
        ResultRecord(id=c.id, shard=0, parameters=c.parameters, metrics={"val_loss": 0.5}, status="succeeded")
        for c in planned.shard_combinations(0)
    ]
    kube.states[0] = kube.states[0].model_copy(update={"phase": ShardPhase.SUCCEEDED})
    document = apply(document, reconcile_scan(document, backends, memory))
    assert document["status"]["progress"] == "80/800"  # records keep coming from the site that answers
    assert kube.submitted == [0, 1, 2, 3, 4, 5]  # and its freed room is used

    schedd.down = None  # the schedd is back: probed, then the waiting shards go there
    document = apply(document, reconcile_scan(document, backends, memory))
    schedd.complete(schedd.probe_of("u-4", "uk-manchester"), exit_code=0, spooled=True)
    for _ in range(2):  # retrieve the probe's output, then place
        document = apply(document, reconcile_scan(document, backends, memory))
    condor_shards = {int(ad.eval("HPScanShard")) for ad in schedd.jobs.values() if ad.get("HPScanShard") is not None}
    assert condor_shards == {6, 7, 8, 9}
    assert document["status"]["sites"][1]["state"] == "Usable"


def test_a_job_held_past_the_sites_hold_timeout_is_removed_and_its_shard_moves(tmp_path):
    import time

    from hpscan.backends.htcondor import HTCondorBackend
    from hpscan.testing.condor import HELD, REMOVED, ScheddStandIn

    schedds = {"ce-a": ScheddStandIn("ce-a"), "ce-b": ScheddStandIn("ce-b")}
    condor = HTCondorBackend(tmp_path / "condor", schedd_factory=lambda site: schedds[site.schedd], max_age_seconds=0)
    document = yaml.safe_load(Path("examples/dl1-seed-scan.yaml").read_text())
    document["spec"]["sharding"] = {"shards": 2}
    document["spec"]["gpu"] = {"count": 1, "required": False}  # no probes: this is about holds
    document["spec"]["sites"] = [
        {"name": "a", "holdTimeoutSeconds": 60, "htcondor": {"schedd": "ce-a", "pool": "cm:9618"}},
        {"name": "b", "maxRunning": 1, "htcondor": {"schedd": "ce-b", "pool": "cm:9618"}},
    ]
    document["metadata"].update({"namespace": "physics", "uid": "u-5", "generation": 1})
    backends = {"htcondor": condor}
    document = apply(document, reconcile_scan(document, backends))
    held = schedds["ce-a"].job_of("u-5", 0)
    schedds["ce-a"].set(held, JobStatus=HELD, HoldReason="Error from slot1: input missing", HoldReasonCode=13)
    document = apply(document, reconcile_scan(document, backends))
    assert document["status"]["shards"][0]["reason"] == "Held"  # young hold: it stays
    b_done = schedds["ce-b"].job_of("u-5", 1)
    schedds["ce-b"].complete(b_done, outputs={}, spooled=True)  # b has room again
    schedds["ce-a"].set(held, EnteredCurrentStatus=int(time.time()) - 61)
    document = apply(document, reconcile_scan(document, backends))
    removed = schedds["ce-a"].history[held]  # withdrawn from the site that held it, marked as hpscan's own
    assert removed.eval("JobStatus") == REMOVED and removed.eval("HPScanCancelled") is True
    moved = schedds["ce-b"].job_of("u-5", 0)
    assert schedds["ce-b"].jobs[moved].eval("HPScanMoves") == 1
    shard = apply(document, reconcile_scan(document, backends))["status"]["shards"][0]
    assert (shard["site"], shard["moves"]) == ("b", 1)


def test_a_status_of_only_the_crds_defaults_is_no_status_yet():
    """The CRD defaults status to {observedGeneration: 0} (and its nested defaults, phase Pending among them) so
    kstatus reads a new scan InProgress; that is not a status the operator wrote, so nothing is carried over."""
    from hpscan.controller.reconcile import previous_status

    defaulted = {"observedGeneration": 0, "phase": "Pending", "progress": "0/0", "shardsOmitted": 0}
    assert previous_status({"status": defaulted}) is None
    assert previous_status({}) is None
    written = previous_status({"status": {**defaulted, "observedGeneration": 1, "phase": "Running"}})
    assert written is not None and written.phase == "Running" and written.observed_generation == 1


def test_the_handlers_engine_settings_reach_the_step():
    """The operator builds its EngineSettings once from its defaults (handlers.configure); reconcile_scan hands
    them to every step: here the cap on the shards listed in the status."""
    full = reconcile_scan(body(parallelism=4), {"kubernetes": MemoryBackend()}).status
    capped = reconcile_scan(
        body(parallelism=4), {"kubernetes": MemoryBackend()}, settings=EngineSettings(max_status_shards=2)
    ).status
    assert len(full.shards) > 2 and not full.shards_omitted
    assert capped.shards == [] and capped.shards_omitted == len(full.shards)  # pending shards are not notable
    defaults = OperatorDefaults(probe_cache_seconds=0)
    assert defaults.engine_settings() == EngineSettings(max_status_shards=MAX_STATUS_SHARDS, probe_cache_seconds=0)
