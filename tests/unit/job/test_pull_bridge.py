"""The shard runner's bridge for workers that pull: channel lines -> the payload's files, its epochs -> channel."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpscan.api.contract import ShardFile
from hpscan.api.trials import PROGRESS_FILE, STOP_FILE, TRIALS_FILE, Progress, TrialInbox
from hpscan.errors import BackendError
from hpscan.job.runner import PullBridge, StdoutChannel, pull_bridge


class MemoryChannel:
    """A channel held in memory: what an operator wrote, and what the worker published."""

    def __init__(self) -> None:
        self.trial_lines: list[dict] = []
        self.stop_lines: list[dict] = []
        self.published: list[Progress] = []
        self.broken = False

    def inbox(self) -> tuple[list[dict], list[dict]]:
        if self.broken:
            raise OSError("channel down")
        return list(self.trial_lines), list(self.stop_lines)

    def publish_progress(self, reports: list[Progress]) -> None:
        self.published += reports


def trial(i: int) -> dict:
    return {"trial": {"id": f"c000{i}-0000000{i}", "parameters": {"x": i}}}


def test_new_lines_reach_the_files_once_and_epochs_reach_the_channel(tmp_path: Path):
    channel = MemoryChannel()
    bridge = PullBridge(channel, tmp_path)
    inbox = TrialInbox(tmp_path)
    channel.trial_lines += [trial(1), trial(2)]
    bridge.carry()
    bridge.carry()  # nothing new: nothing written twice
    assert [c.id for c in inbox.poll()] == ["c0001-00000001", "c0002-00000002"]
    channel.broken = True
    bridge.carry()  # a channel that does not answer costs nothing held
    channel.broken = False
    channel.trial_lines += [trial(3), {"end": True}]
    channel.stop_lines.append({"id": "c0001-00000001"})
    inbox.report("c0002-00000002", 1, {"val_loss": 0.7})
    bridge.carry()
    assert [c.id for c in inbox.poll()] == ["c0003-00000003"]
    assert inbox.ended and inbox.stops == {"c0001-00000001"}
    assert channel.published == [Progress(id="c0002-00000002", epoch=1, metrics={"val_loss": 0.7})]
    lines = (tmp_path / TRIALS_FILE).read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[-1]) == {"end": True}


def test_a_retried_attempt_in_the_same_folder_does_not_append_what_is_there(tmp_path: Path):
    channel = MemoryChannel()
    channel.trial_lines += [trial(1)]
    channel.stop_lines += [{"id": "c0001-00000001"}]
    PullBridge(channel, tmp_path).carry()
    PullBridge(channel, tmp_path).carry()  # the next attempt's runner
    assert len((tmp_path / TRIALS_FILE).read_text().splitlines()) == 1
    assert len((tmp_path / STOP_FILE).read_text().splitlines()) == 1
    assert not (tmp_path / PROGRESS_FILE).exists()


def shard_file(path: Path, pull: bool) -> Path:
    body = ShardFile.model_validate(
        {"scan": "s", "shard": 0, "shards": 1, "objective": {}, "gpu": {}, "combinations": [], "pull": pull}
    )
    path.write_text(body.model_dump_json(by_alias=True))
    return path


def test_only_pulling_shards_get_a_bridge_and_only_on_a_channel_that_carries_trials(tmp_path: Path):
    assert pull_bridge(MemoryChannel(), shard_file(tmp_path / "fixed.json", False), tmp_path) is None  # type: ignore[arg-type]
    assert pull_bridge(MemoryChannel(), shard_file(tmp_path / "pull.json", True), tmp_path) is not None  # type: ignore[arg-type]
    with pytest.raises(BackendError, match="StdoutChannel cannot carry trials"):
        pull_bridge(StdoutChannel(), shard_file(tmp_path / "pull.json", True), tmp_path)


def test_a_trial_handed_again_to_the_worker_it_was_taken_from_is_its_again(tmp_path: Path):
    """A suspended worker's trials go back in the queue; resumed, it may get them again: it must train them."""
    from hpscan.api.trials import Assignment

    held = Assignment()
    held.fold([trial(1), {"withdraw": "c0001-00000001"}])
    assert not held.trials and "c0001-00000001" in held.withdrawn
    added = held.fold([trial(1)])
    assert [c.id for c in added] == ["c0001-00000001"] and "c0001-00000001" not in held.withdrawn
