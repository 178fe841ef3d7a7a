"""Why a shard failed on Kubernetes, in the words of whoever knew it: the payload's last line, the kubelet's reason
(OOMKilled, DeadlineExceeded, an image it cannot pull), an eviction; and the pod's own refused requests as one line
naming the verb, the object and the identity (issue 30). Pods and Jobs here are dicts shaped as the API returns."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from hpscan.api.status import ShardPhase
from hpscan.backends.kubernetes.states import (
    FAILURE_ANNOTATION,
    MESSAGE_ROOM,
    failure_cause,
    image_pull_timeout,
    image_verdict,
    pod_failure,
    shard_state,
)
from hpscan.errors import HPScanError
from hpscan.job.configmap import ConfigMapChannel, refusal

FORBIDDEN = (
    'configmaps "s-shard-000-p0" is forbidden: User "system:serviceaccount:default:ml-runner" cannot get resource '
    '"configmaps" in API group "" in the namespace "default"'
)


def pod(created: str, phase: str = "Failed", reason: str | None = None, message: str | None = None,
        terminated: dict | None = None, waiting: dict | None = None, started: str | None = None) -> dict[str, Any]:  # fmt: skip
    state = {"terminated": terminated} if terminated else {"waiting": waiting} if waiting else {"running": {}}
    status: dict[str, Any] = {"phase": phase, "containerStatuses": [{"name": "payload", "state": state}]}
    if reason:
        status |= {"reason": reason, "message": message}
    if started:
        status["startTime"] = started
    return {"metadata": {"name": f"p-{created}", "creationTimestamp": created}, "status": status}


def job(status: dict, annotations: dict | None = None, suspend: bool = False) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "s-shard-000",
            "labels": {"hpscan.io/shard": "0"},
            "annotations": {"hpscan.io/site": "real", **(annotations or {})},
        },
        "spec": {"suspend": suspend},
        "status": status,
    }


BACKOFF = {"failed": 3, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                        "message": "Job has reached the specified backoff limit"}]}  # fmt: skip


def test_a_container_killed_for_memory_says_oomkilled_with_its_exit_code():
    killed = pod("2026-01-01T00:00:02Z", terminated={"exitCode": 137, "reason": "OOMKilled", "message": "epoch 1/3\n"})
    assert pod_failure(killed) == "OOMKilled (exit code 137): epoch 1/3"


def test_a_payload_error_says_its_last_line_from_the_termination_message():
    error = f"loading data\nerror: {FORBIDDEN}\n"
    failed = pod("2026-01-01T00:00:02Z", terminated={"exitCode": 1, "reason": "Error", "message": error})
    assert pod_failure(failed) == f"exit code 1: error: {FORBIDDEN}"


def test_the_kubelets_and_the_evictions_words_come_first():
    late = pod("t1", reason="DeadlineExceeded", message="Pod was active on the node longer than the specified deadline",
               terminated={"exitCode": 137, "reason": "Error"})  # fmt: skip
    assert pod_failure(late).startswith(
        "DeadlineExceeded: Pod was active on the node longer than the specified deadline;"
    )
    evicted = pod("t1", reason="Evicted", message="The node was low on resource: memory.")
    assert pod_failure(evicted) == "Evicted: The node was low on resource: memory."


def test_the_newest_failed_attempt_speaks_and_a_pod_that_did_not_fail_says_nothing():
    old = pod("2026-01-01T00:00:01Z", terminated={"exitCode": 1, "reason": "Error", "message": "first"})
    new = pod("2026-01-01T00:00:05Z", terminated={"exitCode": 137, "reason": "OOMKilled"})
    running = pod("2026-01-01T00:00:09Z", phase="Running")
    assert failure_cause([old, new, running]) == "OOMKilled (exit code 137)"
    assert pod_failure(pod("t", phase="Succeeded", terminated={"exitCode": 0, "reason": "Completed"})) == ""
    assert failure_cause([]) == ""


def test_a_failed_shard_says_the_cause_before_the_jobs_own_words_bounded():
    state = shard_state(job(BACKOFF), {"s-shard-000": "OOMKilled (exit code 137)"})
    assert (state.phase, state.reason) == (ShardPhase.FAILED, "BackoffLimitExceeded")
    assert state.message == "OOMKilled (exit code 137) (Job has reached the specified backoff limit)"
    long = shard_state(job(BACKOFF), {"s-shard-000": "x" * 5000})
    assert len(long.message or "") == MESSAGE_ROOM
    assert shard_state(job(BACKOFF)).message == "Job has reached the specified backoff limit"  # nothing more known


def test_a_shard_retrying_says_what_ended_its_last_attempt():
    state = shard_state(job({"active": 1, "failed": 1}), {"s-shard-000": "OOMKilled (exit code 137)"})
    assert (state.phase, state.reason) == (ShardPhase.RUNNING, "Retrying")
    assert state.message == "1 failed attempt(s), the last: OOMKilled (exit code 137)"


PULL = 'Back-off pulling image "localhost/hpscan-missing:0"'


def test_a_pod_that_cannot_pull_its_image_waits_saying_so_then_fails_after_the_sites_timeout():
    stuck = pod(
        "t", phase="Pending", started="2026-01-01T00:00:00Z", waiting={"reason": "ImagePullBackOff", "message": PULL}
    )
    waiting = shard_state(job({"active": 1}), pods=[stuck])
    assert (waiting.phase, waiting.reason, waiting.message) == (
        ShardPhase.PENDING,
        "ImagePullBackOff",
        f"ImagePullBackOff: {PULL}",
    )
    start = 1767225600.0  # 2026-01-01T00:00:00Z
    assert image_verdict([stuck], now=start + 299, timeout_seconds=300) is None
    assert image_verdict([stuck], now=start + 300, timeout_seconds=300) == f"ImagePullBackOff: {PULL} (for 300 s)"
    bad_name = pod("t", phase="Pending", started="2026-01-01T00:00:00Z",
                   waiting={"reason": "InvalidImageName", "message": 'couldn\'t parse image name "UPPER:case"'})  # fmt: skip
    assert image_verdict([bad_name], now=start, timeout_seconds=300).startswith("InvalidImageName: ")  # at once
    assert image_verdict([pod("t", phase="Running")], now=start + 1e6, timeout_seconds=0) is None


def test_a_job_the_operator_failed_for_its_image_reads_failed_with_the_kubelets_words_after_a_restart():
    failed = job({}, annotations={FAILURE_ANNOTATION: f"ErrImagePull: {PULL} (for 300 s)"}, suspend=True)
    state = shard_state(failed)  # no pods: they went with the suspension
    assert (state.phase, state.reason) == (ShardPhase.FAILED, "ImageUnavailable")
    assert state.message == f"ErrImagePull: {PULL} (for 300 s)"
    assert image_pull_timeout(job({}, annotations={"hpscan.io/image-pull-timeout": "45"})) == 45
    assert image_pull_timeout(job({})) == 300


@pytest.mark.parametrize(
    ("status", "reason", "body", "words"),
    [
        (403, "Forbidden", {"message": FORBIDDEN},
         "system:serviceaccount:default:ml-runner may not get ConfigMap default/s-shard-000-p0 (403 Forbidden)"),
        (401, "Unauthorized", {"message": "Unauthorized"},
         "the Kubernetes API did not accept the token of system:serviceaccount:default:ml-runner to get ConfigMap "
         "default/s-shard-000-p0 (401 Unauthorized)"),
        (404, "Not Found", {"message": 'configmaps "s-shard-000-p0" not found'},
         "ConfigMap default/s-shard-000-p0 does not exist (404 Not Found) for system:serviceaccount:default:ml-runner"),
        (422, "Unprocessable Entity", {"message": "data: Too long: must have at most 1048576 bytes"},
         "the Kubernetes API refused to get ConfigMap default/s-shard-000-p0 for system:serviceaccount:default:"
         "ml-runner (422 Unprocessable Entity): data: Too long"),
    ],
)  # fmt: skip
def test_a_refused_request_is_one_line_naming_verb_object_and_identity(monkeypatch, status, reason, body, words):
    monkeypatch.setenv("HPSCAN_SERVICE_ACCOUNT", "ml-runner")
    error = ApiException(status=status, reason=reason)
    error.body = json.dumps({"kind": "Status", **body})
    said = refusal(error, "get", "s-shard-000-p0", "default")
    assert words in said and "\n" not in said and "HTTP response headers" not in said


class Refusing:
    """A CoreV1Api whose every read is refused as the real API server refuses it."""

    def __init__(self, status: int, reason: str) -> None:
        self.status, self.reason = status, reason

    def read_namespaced_config_map(self, name: str, namespace: str, **options: Any) -> Any:
        error = ApiException(status=self.status, reason=self.reason)
        error.body = json.dumps({"kind": "Status", "message": FORBIDDEN})
        raise error


@pytest.mark.parametrize(("status", "reason", "words"), [
    (403, "Forbidden", "system:serviceaccount:default:ml-runner may not get ConfigMap default/s-shard-000-p0"),
    (404, "Not Found", "the shard's pages default/s-shard-000-p0, ...: page 0 is missing"),
])  # fmt: skip
def test_a_pod_whose_first_read_is_refused_ends_at_once_with_that_line(monkeypatch, status, reason, words):
    monkeypatch.setenv("HPSCAN_SERVICE_ACCOUNT", "ml-runner")
    channel = ConfigMapChannel("s-shard-000", "default", api_client=object())
    channel.core = Refusing(status, reason)
    with pytest.raises(HPScanError) as raised:
        channel.start()
    assert words in str(raised.value) and "\n" not in str(raised.value)


def test_a_final_exit_keeps_the_payloads_own_words_as_its_message():
    policy = {"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy",
              "message": "Container payload for pod ns/p failed with exit code 2 matching FailJob rule at index 0"}]}  # fmt: skip
    state = shard_state(job(policy), {"s-shard-000": "exit code 2: dl1: epochs must be at least 1"})
    assert (state.reason, state.message) == ("InvalidInput", "dl1: epochs must be at least 1")


def test_a_probe_whose_pod_cannot_get_its_image_says_so_while_it_waits():
    from hpscan.backends.kubernetes.states import probe_outcome

    stuck = pod("t", phase="Pending", waiting={"reason": "ErrImagePull", "message": "connection refused"})
    assert probe_outcome(job({"active": 1}), [stuck]).message == "ErrImagePull: connection refused"


def test_a_payload_killed_by_a_signal_exits_the_runner_as_a_shell_would(capsys):
    from hpscan.job.runner import exit_status

    assert exit_status(0) == 0 and exit_status(3) == 3
    assert exit_status(-9) == 137  # not 247, which the kubelet would show for an OOMKilled payload
    assert "the payload was killed by SIGKILL" in capsys.readouterr().err
