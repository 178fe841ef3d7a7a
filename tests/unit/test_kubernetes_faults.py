"""The Kubernetes backend and its in-pod channel when the API server misbehaves, races or refuses: a transient error
costs no record, a Job seen Complete before its last page reaches the watch cache keeps its records, a site's own
ServiceAccount may patch its pages, a moved shard trains only what is left, and every pulled trial's page is one the
pods' Role names."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes.client.rest import ApiException
from urllib3.exceptions import ReadTimeoutError

from hpscan.api.contract import ResultRecord, ShardFile
from hpscan.backends.base import ScanRef
from hpscan.backends.kubernetes import shard_pages
from hpscan.errors import HPScanError
from hpscan.job.configmap import ConfigMapChannel, records_of
from hpscan.job.runner import run_shard

REF = ScanRef(name="s", namespace="physics", uid="u-s")
BASE = "s-shard-000"


def shard_file(count: int, pull: bool = False) -> ShardFile:
    return ShardFile.model_validate(
        {
            "scan": "s", "shard": 0, "shards": 1, "objective": {}, "gpu": {}, "pull": pull,
            "combinations": [{"id": f"c{i:04d}-0000000{i % 10}", "parameters": {"x": i}} for i in range(count)],
        }
    )  # fmt: skip


def record(combination_id: str, loss: float = 0.5) -> ResultRecord:
    return ResultRecord(id=combination_id, shard=0, parameters={"x": 1}, metrics={"val_loss": loss}, status="succeeded")


class PagesInMemory:
    """The CoreV1Api calls of the pod's channel, on ConfigMaps held in memory. ``failures``: raised by the next
    patches, in order (one each)."""

    def __init__(self, configmaps: dict[str, dict[str, str]]) -> None:
        self.configmaps = configmaps
        self.failures: list[Exception] = []
        self.patches = 0

    def read_namespaced_config_map(self, name: str, namespace: str) -> Any:
        if name not in self.configmaps:
            raise ApiException(status=404, reason="Not Found")
        return SimpleNamespace(data=dict(self.configmaps[name]))

    def patch_namespaced_config_map(self, name: str, namespace: str, body: dict) -> None:
        self.patches += 1
        if self.failures:
            raise self.failures.pop(0)
        self.configmaps[name].update(body["data"])


def channel_on(pages: list[dict], **options: Any) -> tuple[ConfigMapChannel, PagesInMemory]:
    core = PagesInMemory({p["metadata"]["name"]: dict(p["data"]) for p in pages})
    channel = ConfigMapChannel(BASE, "physics", api_client=object(), **options)
    channel.core = core
    return channel, core


def recorded_ids(core: PagesInMemory) -> set[str]:
    return {r.id for data in core.configmaps.values() for r in records_of(data)[0]}


# 3. a transient API error costs no record -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        ApiException(status=503, reason="Service Unavailable"),
        ApiException(status=429, reason="Too Many Requests"),
        ReadTimeoutError(None, "/api", "read timed out"),
    ],
    ids=["503", "429", "timeout"],
)
def test_a_transient_api_error_keeps_the_records_and_sends_them_with_the_next_publish(error, capsys):
    channel, core = channel_on(shard_pages(REF, shard_file(4), page_size=2), retry_seconds=0)
    channel.pages()
    core.failures.append(error)
    channel.publish([record("c0000-00000000"), record("c0003-00000003")])  # the attempt goes on
    assert recorded_ids(core) == set()
    assert "could not publish 2 record(s)" in capsys.readouterr().err
    channel.publish([record("c0001-00000001")])
    assert recorded_ids(core) == {"c0000-00000000", "c0001-00000001", "c0003-00000003"}


PAYLOAD = """
import json, sys, time
from pathlib import Path
out = Path(sys.argv[sys.argv.index("--out") + 1])
for i in (0, 1):
    with (out / "results.jsonl").open("a") as results:
        results.write(json.dumps({"id": f"c000{i}-0000000{i}", "shard": 0, "parameters": {"x": i},
                                  "metrics": {"val_loss": 0.5}, "status": "succeeded"}) + "\\n")
time.sleep(float(sys.argv[1]))
"""


def run(tmp_path: Path, channel: ConfigMapChannel, payload_seconds: float) -> int:
    file = tmp_path / "shard.json"
    file.write_text(channel.pages().shard_file.model_dump_json(by_alias=True))
    command = [sys.executable, "-c", PAYLOAD, str(payload_seconds)]
    return run_shard(command, file, tmp_path / "out", channel, poll_seconds=0.05)


def test_records_a_failed_patch_left_unsent_are_sent_before_the_runner_ends(tmp_path):
    """The payload's last records meet an API server that is away for a moment: the runner sends them again before
    it exits, so the Job never ends Complete without them."""
    channel, core = channel_on(shard_pages(REF, shard_file(2), page_size=2), retry_seconds=0.05)
    core.failures += [ApiException(status=500, reason="Internal Server Error")] * 3
    assert run(tmp_path, channel, payload_seconds=0) == 0
    assert recorded_ids(core) == {"c0000-00000000", "c0001-00000001"}


def test_pages_that_keep_refusing_end_the_attempt_in_bounded_time_with_a_clear_error(tmp_path):
    channel, core = channel_on(shard_pages(REF, shard_file(2), page_size=2), retry_seconds=0.05, give_up_seconds=0.3)
    core.failures += [ApiException(status=503, reason="Service Unavailable")] * 1000
    with pytest.raises(
        HPScanError,
        match=r"could not publish 2 record\(s\) to s-shard-000-p0 .*for 0 s \(last: 503 Service Unavailable\)",
    ):
        run(tmp_path, channel, payload_seconds=120)  # the payload does not outlive its runner


def test_a_refusal_that_retrying_will_not_mend_ends_the_attempt_at_once_saying_why():
    channel, core = channel_on(shard_pages(REF, shard_file(2), page_size=2))
    core.failures.append(ApiException(status=403, reason="Forbidden"))
    with pytest.raises(HPScanError, match=r"could not publish 1 record\(s\) to s-shard-000-p0 .*: 403 Forbidden$"):
        channel.publish([record("c0000-00000000")])
