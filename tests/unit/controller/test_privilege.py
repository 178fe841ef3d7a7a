"""A scan author gets no privilege through the operator: pods run under the operator's per-scan account unless a
site admin allowed the ServiceAccount or PriorityClass a scan's site names (defaults.allowed*)."""

from __future__ import annotations

from pathlib import Path

import yaml

from hpscan.api.spec import HPScanSpec
from hpscan.controller.defaults import OperatorDefaults
from hpscan.controller.reconcile import reconcile_scan
from support.reconcile_backend import MemoryBackend, body


def spec_with(**kubernetes: str) -> HPScanSpec:
    document = yaml.safe_load(Path("examples/quickstart.yaml").read_text())
    document["spec"]["sites"] = [{"name": "gpus", "kubernetes": kubernetes}]
    return HPScanSpec.model_validate(document["spec"])


def test_nothing_is_allowed_by_default():
    refused = OperatorDefaults().refusals(spec_with(serviceAccountName="cluster-admin-sa"), "physics")
    assert (
        len(refused) == 1
        and "serviceAccountName 'cluster-admin-sa' is not allowed in namespace 'physics'" in refused[0]
    )
    assert (
        "priorityClassName 'system-node-critical'"
        in OperatorDefaults().refusals(spec_with(priorityClassName="system-node-critical"), "physics")[0]
    )
    assert OperatorDefaults().refusals(spec_with(), "physics") == []


def test_what_the_admin_allows_is_allowed_in_the_namespaces_named():
    defaults = OperatorDefaults.model_validate(
        {"allowedServiceAccounts": ["physics/gpu-runner", "*/shared-runner"], "allowedPriorityClasses": ["gpu-batch"]}
    )
    assert defaults.refusals(spec_with(serviceAccountName="gpu-runner", priorityClassName="gpu-batch"), "physics") == []
    assert defaults.refusals(spec_with(serviceAccountName="shared-runner"), "chemistry") == []
    assert defaults.refusals(spec_with(serviceAccountName="gpu-runner"), "chemistry")  # another namespace's


def test_the_admins_own_default_sites_are_trusted():
    defaults = OperatorDefaults.model_validate(
        {"sites": [{"name": "batch", "kubernetes": {"serviceAccountName": "gpu-runner", "priorityClassName": "x"}}]}
    )
    document = yaml.safe_load(Path("examples/quickstart.yaml").read_text())
    assert defaults.refusals(HPScanSpec.model_validate(document["spec"]), "physics") == []


def test_the_operator_refuses_such_a_scan_before_submitting_anything():
    backend = MemoryBackend()
    document = body()
    document["spec"]["sites"][0]["kubernetes"]["serviceAccountName"] = "cluster-admin-sa"
    outcome = reconcile_scan(document, {"kubernetes": backend})
    assert outcome.status.phase == "Failed" and backend.submitted == []
    failed = next(c for c in outcome.status.conditions if c.type == "Failed")
    assert failed.reason == "NotAllowed" and "cluster-admin-sa" in failed.message
    assert [e.reason for e in outcome.events] == ["NotAllowed"]
