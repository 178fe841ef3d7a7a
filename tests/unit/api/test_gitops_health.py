"""The Argo CD health check for HPScan, exactly as docs/gitops.md prints it, run with a real Lua interpreter (lupa)
on status samples of every phase. Argo CD runs it with the object as the global `obj` and reads the returned
table's `status` and `message`."""

from __future__ import annotations

from typing import Any

import lupa
import pytest

from support.argo_health import health, health_script, to_lua


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
