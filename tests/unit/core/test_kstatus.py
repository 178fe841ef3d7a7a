"""What kstatus, the library behind Flux's health checks, Helm 4's --wait and the cli-utils appliers, makes of an
HPScan: the Ready, Reconciling and Stalled conditions decided by hpscan.core.kstatus, then the real library
(cluster/kstatus, sigs.k8s.io/cli-utils built from the Go module proxy, cached) run on HPScan bodies whose status
comes from hpscan's own status functions, as the operator patches it.

A running scan is InProgress, a suspended one Current (paused on purpose: docs/gitops.md), a succeeded one Current,
a failed one and one whose spec cannot run Failed. tests/integration/kubernetes/test_kstatus_operator.py does the same on
statuses a real operator wrote."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from hpscan.api.contract import ResultRecord
from hpscan.api.spec import HPScanSpec
from hpscan.api.status import ConditionType, HPScanStatus, Reason, ScanPhase, ShardPhase, ShardStatus
from hpscan.controller.reconcile import degraded, invalid_spec_status, reconcile_scan
from hpscan.core.kstatus import kstatus_conditions
from hpscan.core.planning import plan
from hpscan.core.results import aggregate
from hpscan.core.summary import build_status
from support import reconcile_backend
from support.argo_health import health  # the Argo CD check of docs/gitops.md, run by lupa

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))  # the harness (cluster/) is not an installed package

from cluster import kstatus  # noqa: E402

SPEC = HPScanSpec.model_validate(
    {"parameters": [{"name": "x", "values": [1, 2, 3, 4, 5, 6]}], "sharding": {"shards": 3}, "payload": {"image": "p"}}
)
PLAN = plan("dl1-seed-scan", SPEC)
KSTATUS = {ConditionType.READY, ConditionType.RECONCILING, ConditionType.STALLED}


def record(position: int) -> ResultRecord:
    combination = PLAN.combination(position)
    return ResultRecord(
        id=combination.id,
        shard=PLAN.shard_of(position),
        parameters=combination.parameters,
        metrics={"val_loss": position / 10},
        status="succeeded",
    )


def shard(index: int, phase: str, **extra: Any) -> ShardStatus:
    return ShardStatus(index=index, phase=ShardPhase(phase), **extra)


def running() -> HPScanStatus:
    return build_status(PLAN, aggregate(PLAN, [record(0)]), {0: shard(0, "Running")}, generation=1)


def suspended() -> HPScanStatus:
    return build_status(PLAN, aggregate(PLAN, [record(0)]), {0: shard(0, "Suspended")}, suspend=True, generation=1)


def succeeded() -> HPScanStatus:
    agg = aggregate(PLAN, [record(p) for p in range(6)])
    return build_status(PLAN, agg, {i: shard(i, "Succeeded") for i in range(3)}, generation=1)


def failed() -> HPScanStatus:
    gpu = shard(1, "Failed", reason="GPUUnavailable", site="gpu-cluster", message="the payload found no usable GPU")
    agg = aggregate(PLAN, [record(p) for p in range(PLAN.total) if PLAN.shard_of(p) != 1])
    return build_status(PLAN, agg, {0: shard(0, "Succeeded"), 1: gpu, 2: shard(2, "Succeeded")}, generation=1)


def invalid() -> HPScanStatus:
    return invalid_spec_status("spec.sharding: exactly one of shards or combinationsPerShard", 1)


def body(status: HPScanStatus | None, generation: int = 1) -> dict[str, Any]:
    """The HPScan as a client reads it, with the status as the operator patches it (hpscan.controller.handlers)."""
    scan: dict[str, Any] = {
        "apiVersion": "hpscan.io/v1alpha1",
        "kind": "HPScan",
        "metadata": {"name": "dl1-seed-scan", "namespace": "ml-team", "generation": generation, "uid": "u-1"},
        "spec": SPEC.model_dump(mode="json", by_alias=True, exclude_none=True),
    }
    if status is not None:
        scan["status"] = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    return scan


def states(status: HPScanStatus) -> dict[str, str]:
    return {c.type: c.status for c in status.conditions if c.type in KSTATUS}


# --- the conditions, decided (pure) ---


def test_a_running_scan_is_reconciling_with_its_progress_and_not_ready():
    status = running()
    assert states(status) == {"Reconciling": "True", "Stalled": "False", "Ready": "False"}
    reconciling = next(c for c in status.conditions if c.type == "Reconciling")
    assert (reconciling.reason, reconciling.message) == ("ShardsRunning", "1/6 recorded; 1 of 3 shards running")


def test_a_pending_scan_is_reconciling_too():
    status = build_status(PLAN, aggregate(PLAN, []), {}, generation=1)
    assert status.phase == "Pending"
    assert states(status) == {"Reconciling": "True", "Stalled": "False", "Ready": "False"}


def test_a_succeeded_scan_is_ready_and_nothing_else():
    assert states(succeeded()) == {"Reconciling": "False", "Stalled": "False", "Ready": "True"}


def test_a_failed_scan_is_stalled_with_its_reason():
    status = failed()
    assert states(status) == {"Reconciling": "False", "Stalled": "True", "Ready": "False"}
    stalled = next(c for c in status.conditions if c.type == "Stalled")
    assert stalled.reason == "GPUUnavailable" and "no usable GPU" in stalled.message


def test_a_suspended_scan_is_neither_reconciling_nor_stalled_and_has_no_ready():
    status = suspended()
    assert states(status) == {"Reconciling": "False", "Stalled": "False"}
    assert {c.reason for c in status.conditions if c.type in KSTATUS} == {"Suspended", "NotFailed"}


@pytest.mark.parametrize("reason", [Reason.INVALID_SPEC, Reason.NOT_ALLOWED, Reason.PAYLOAD_CHECK_UNAVAILABLE])
def test_a_scan_that_cannot_run_as_written_is_stalled_with_the_reason(reason):
    status = invalid_spec_status("spec.sites[0]: not allowed here", 4, reason)
    assert states(status) == {"Reconciling": "False", "Stalled": "True", "Ready": "False"}
    assert {c.reason for c in status.conditions if c.type in {"Stalled", "Failed"}} == {reason}
    assert status.conditions[0].type == "Failed"  # the kubectl-wait conditions stay first, as before


def test_a_backend_error_before_any_status_leaves_the_scan_reconciling():
    status = degraded(None, Reason.SCHEDULER_UNAVAILABLE, "the schedd of ce01 does not answer", 1)
    assert states(status) == {"Reconciling": "True", "Stalled": "False", "Ready": "False"}
    assert next(c for c in status.conditions if c.type == "Degraded").status == "True"


def test_a_running_scan_that_is_degraded_stays_reconciling_and_says_why():
    stuck = shard(
        2, "Pending", reason="Unschedulable", message="0/3 nodes are available: 3 Insufficient nvidia.com/gpu"
    )
    status = build_status(PLAN, aggregate(PLAN, [record(0)]), {0: shard(0, "Running"), 2: stuck}, generation=1)
    reconciling = next(c for c in status.conditions if c.type == "Reconciling")
    assert reconciling.status == "True" and "Insufficient nvidia.com/gpu" in reconciling.message
    assert next(c for c in status.conditions if c.type == "Degraded").status == "True"


@pytest.mark.parametrize("make", [running, suspended, succeeded, failed, invalid])
def test_every_condition_names_the_generation_it_was_decided_from(make):
    status = make()
    assert status.observed_generation == 1
    assert {c.observed_generation for c in status.conditions} == {1}


def test_the_existing_conditions_stay_for_kubectl_wait():
    assert {"Planned", "Running", "Complete", "Failed", "Suspended", "Degraded"} <= {
        c.type for c in running().conditions
    }


@pytest.mark.parametrize("phase", list(ScanPhase))
def test_at_most_one_of_reconciling_stalled_and_ready_is_true(phase):
    wanted = kstatus_conditions(phase, "Because", "why", "3/6")
    assert sum(is_true for is_true, _, _ in wanted.values()) == (0 if phase == ScanPhase.SUSPENDED else 1)


# --- the real library on those statuses ---


@pytest.mark.parametrize(
    ("make", "verdict"),
    [(running, "InProgress"), (suspended, "Current"), (succeeded, "Current"), (failed, "Failed"), (invalid, "Failed")],
)
def test_kstatus_reads_each_phase_as_documented(make, verdict):
    assert kstatus.compute(body(make()))[0] == verdict


def test_kstatus_messages_are_the_progress_and_the_failure():
    assert kstatus.compute(body(running())) == ("InProgress", "1/6 recorded; 1 of 3 shards running")
    status, message = kstatus.compute(body(failed()))
    assert status == "Failed" and "shard 1 on site gpu-cluster: the payload found no usable GPU" in message
    assert kstatus.compute(body(invalid())) == ("Failed", invalid().message)


def test_kstatus_reads_a_backend_error_before_any_status_as_in_progress():
    status = degraded(None, Reason.SCHEDULER_UNAVAILABLE, "the schedd of ce01 does not answer", 1)
    assert kstatus.compute(body(status)) == ("InProgress", "0/0 recorded; the schedd of ce01 does not answer")


def test_kstatus_reads_a_spec_change_the_operator_has_not_seen_as_in_progress():
    assert kstatus.compute(body(succeeded(), generation=2)) == (
        "InProgress",
        "HPScan generation is 2, but latest observed generation is 1",
    )


def test_without_the_kstatus_conditions_a_running_and_a_failed_scan_read_current():
    """Why the conditions exist (issue 27): kstatus knows nothing of Running or Failed."""
    for make in (running, failed):
        status = make()
        legacy = status.model_copy(update={"conditions": [c for c in status.conditions if c.type not in KSTATUS]})
        assert kstatus.compute(body(legacy))[0] == "Current"


def test_a_ready_false_would_make_a_suspended_scan_in_progress():
    """Why a suspended scan carries no Ready: kstatus's last rule reads Ready False as InProgress, and Flux's
    `wait: true` or `helm install --wait` would then wait on a paused scan until their timeout."""
    status = suspended()
    ready = next(c for c in running().conditions if c.type == "Ready")
    with_ready = status.model_copy(update={"conditions": [*status.conditions, ready]})
    assert kstatus.compute(body(with_ready))[0] == "InProgress"


@pytest.mark.parametrize(
    ("make", "argo_cd", "verdict"),
    [
        (running, "Progressing", "InProgress"),
        (suspended, "Suspended", "Current"),
        (succeeded, "Healthy", "Current"),
        (failed, "Degraded", "Failed"),
        (invalid, "Degraded", "Failed"),
    ],
)
def test_the_argo_cd_health_check_of_docs_gitops_agrees_with_kstatus(make, argo_cd, verdict):
    status = make()
    assert health(status.model_dump(mode="json", by_alias=True, exclude_none=True))[0] == argo_cd
    assert kstatus.compute(body(status))[0] == verdict


def test_a_scan_the_operator_has_not_seen_reads_current():
    """kstatus's own limit, documented in docs/gitops.md: an object with no status at all is Current."""
    assert kstatus.compute(body(None)) == ("Current", "Resource is current")


def test_kstatus_on_what_a_reconcile_writes_from_start_to_success():
    """The operator's step without kopf (controller.reconcile.reconcile_scan) on a stand-in backend, each status
    applied to the body as the operator patches it."""
    backend = reconcile_backend.MemoryBackend()
    document = reconcile_backend.body(parallelism=2)
    document = reconcile_backend.apply(document, reconcile_scan(document, {"kubernetes": backend}))
    assert (document["status"]["phase"], kstatus.compute(document)[0]) == ("Pending", "InProgress")
    suspended_body = document | {"spec": {**document["spec"], "suspend": True}}
    paused = reconcile_backend.apply(suspended_body, reconcile_scan(suspended_body, {"kubernetes": backend}))
    assert (paused["status"]["phase"], kstatus.compute(paused)[0]) == ("Suspended", "Current")
    planned = plan("dl1-seed-scan", HPScanSpec.model_validate(document["spec"]))
    backend.states = {i: ShardStatus(index=i, phase=ShardPhase.SUCCEEDED) for i in range(planned.shard_count)}
    backend.records = [
        ResultRecord(id=c.id, shard=f.shard, parameters=c.parameters, metrics={"val_loss": 0.5}, status="succeeded")
        for f in planned.shard_files()
        for c in f.combinations
    ]
    done = reconcile_backend.apply(document, reconcile_scan(document, {"kubernetes": backend}))
    assert (done["status"]["phase"], kstatus.compute(done)) == ("Succeeded", ("Current", "Resource is Ready"))


def test_kstatus_on_what_a_reconcile_writes_for_a_site_without_its_backend():
    document = reconcile_backend.body()
    document["spec"]["sites"] = [{"name": "ce01", "htcondor": {"schedd": "ce01.example.org"}}]
    refused = reconcile_backend.apply(
        document, reconcile_scan(document, {"kubernetes": reconcile_backend.MemoryBackend()})
    )
    assert kstatus.compute(refused) == ("Failed", "no htcondor backend is configured in this operator")


# --- Flux's healthCheckExprs of docs/gitops.md, with Flux's own evaluator ---


@pytest.mark.parametrize(
    ("make", "verdict"),
    [(running, "InProgress"), (suspended, "Current"), (succeeded, "Current"), (failed, "Failed"), (invalid, "Failed")],
)
def test_the_flux_expressions_read_each_phase_as_kstatus_does(make, verdict):
    assert kstatus.flux_health(body(make()), kstatus.documented_flux_expressions())[0] == verdict
    assert kstatus.compute(body(make()))[0] == verdict


def test_the_flux_expressions_leave_a_scan_without_a_status_unknown_not_current():
    status, message = kstatus.flux_health(body(None), kstatus.documented_flux_expressions())
    assert status == "Unknown" and "no such attribute(s): status.conditions" in message


def test_the_flux_expressions_see_a_spec_change_the_operator_has_not_seen():
    assert (
        kstatus.flux_health(body(succeeded(), generation=2), kstatus.documented_flux_expressions())[0] == "InProgress"
    )


def test_without_the_suspended_line_flux_waits_through_a_pause():
    expressions = kstatus.documented_flux_expressions()
    expressions["current"] = expressions["current"].split("||")[0]
    assert kstatus.flux_health(body(suspended()), expressions)[0] == "InProgress"
    assert kstatus.flux_health(body(succeeded()), expressions)[0] == "Current"
