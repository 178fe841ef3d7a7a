"""The Argo CD health check for HPScan, exactly as docs/gitops.md prints it, run with a real Lua interpreter (lupa)
on status samples of every phase. Argo CD runs it with the object as the global `obj` and reads the returned
table's `status` and `message`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import lupa
import pytest
import yaml

from hpscan.api.status import HPScanStatus

REPO = Path(__file__).resolve().parents[3]
KEY = "resource.customizations.health.hpscan.io_HPScan"
ARGO_HEALTH = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def health_script() -> str:
    """The Lua in docs/gitops.md's argocd-cm block."""
    for block in re.findall(r"```yaml\n(.*?)```", (REPO / "docs" / "gitops.md").read_text(), re.S):
        document = yaml.safe_load(block)
        if isinstance(document, dict) and KEY in (document.get("data") or {}):
            return document["data"][KEY]
    raise AssertionError(f"docs/gitops.md has no argocd-cm block with {KEY}")


def to_lua(runtime: Any, value: Any) -> Any:
    """JSON-like data as Argo CD hands it to Lua: objects and arrays as (1-based) tables."""
    if isinstance(value, dict):
        return runtime.table_from({k: to_lua(runtime, v) for k, v in value.items()})
    if isinstance(value, list):
        return runtime.table_from([to_lua(runtime, v) for v in value])
    return value


def health(status: dict[str, Any] | None, generation: int = 1) -> tuple[str, str]:
    if status is not None:
        HPScanStatus.model_validate(status)  # the samples are statuses the operator could write
    scan: dict[str, Any] = {
        "apiVersion": "hpscan.io/v1alpha1",
        "kind": "HPScan",
        "metadata": {"name": "dl1-seed-scan", "namespace": "ml-team", "generation": generation},
        "spec": {"objective": {"metric": "val_loss", "goal": "minimize"}},
    }
    if status is not None:
        scan["status"] = status
    runtime = lupa.LuaRuntime(unpack_returned_tuples=True)
    runtime.globals().obj = to_lua(runtime, scan)
    result = runtime.execute(health_script())
    assert result["status"] in ARGO_HEALTH
    return result["status"], result["message"]


def condition(kind: str, status: str = "True", reason: str = "Because", message: str = "") -> dict[str, Any]:
    return {"type": kind, "status": status, "reason": reason, "message": message}


def sample(phase: str, **extra: Any) -> dict[str, Any]:
    return {"phase": phase, "progress": "312/800", "observedGeneration": 1, **extra}


BEST = {"id": "c17-a1b2c3", "parameters": {"layer1": 128, "activation": "relu"}, "value": 0.61234, "shard": 3}


def test_no_status_yet_is_progressing():
    assert health(None) == ("Progressing", "Waiting for the hpscan operator")
    assert health({"conditions": []})[0] == "Progressing"


@pytest.mark.parametrize("phase", ["Pending", "Running"])
def test_planning_and_running_scans_are_progressing_with_progress_and_best(phase):
    state, message = health(sample(phase, best=BEST, conditions=[condition("Running")]))
    assert state == "Progressing"
    assert message == f"{phase}: 312/800 combinations recorded, best val_loss 0.6123"


def test_a_degraded_condition_while_running_is_reported_but_stays_progressing():
    trouble = condition("Degraded", reason="Retrying", message="shard 2 on gpu-cluster: 1 failed attempt(s)")
    state, message = health(sample("Running", conditions=[condition("Running"), trouble]))
    assert state == "Progressing"
    assert message.endswith("; shard 2 on gpu-cluster: 1 failed attempt(s)")
    healthy = condition("Degraded", "False", "AllShardsHealthy")
    assert ";" not in health(sample("Running", conditions=[healthy]))[1]


def test_suspended_succeeded_failed():
    assert health(sample("Suspended", conditions=[condition("Suspended")]))[0] == "Suspended"
    done = sample("Succeeded", progress="800/800", best=BEST, conditions=[condition("Complete")])
    assert health(done) == ("Healthy", "Succeeded: 800/800 combinations recorded, best val_loss 0.6123")
    failed = sample("Failed", message="shard 4 on uk-manchester: the payload found no usable GPU")
    assert health(failed) == ("Degraded", "shard 4 on uk-manchester: the payload found no usable GPU")
    assert health(sample("Failed"))[1] == "Failed: 312/800 combinations recorded"


def test_a_spec_change_the_operator_has_not_seen_is_progressing_even_after_success():
    done = sample("Succeeded", conditions=[condition("Complete")])
    assert health(done, generation=2) == (
        "Progressing",
        "Waiting for the hpscan operator to see generation 2",
    )


def test_an_unknown_phase_is_unknown():
    runtime = lupa.LuaRuntime(unpack_returned_tuples=True)
    runtime.globals().obj = to_lua(runtime, {"metadata": {"generation": 1}, "status": {"phase": "Exploding"}})
    result = runtime.execute(health_script())
    assert (result["status"], result["message"]) == ("Unknown", "Unknown phase Exploding")
