"""The shard runner's checkpoint exit (HTCondor's self-checkpointing): it ends with the checkpoint code once the
payload saved a checkpoint late enough, publishing what was recorded, and never before the payload saved one."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from hpscan.api.contract import ResultRecord
from hpscan.job.runner import CheckpointExit, checkpoint_due, newest_checkpoint, run_shard

# A stand-in payload (no TensorFlow): one record, then a checkpoint of trial c1 every 50 ms until stopped, or with
# "never" no checkpoint and an exit after 0.5 s. It saves as the contract asks (docs/checkpoints.md) and dl1 does,
# atomically: a payload stopped mid-write leaves the previous checkpoint, never an empty file.
PAYLOAD = """
import json, os, sys, time
from pathlib import Path
out = Path(sys.argv[sys.argv.index("--out") + 1])
record = {"id": "c0", "shard": 0, "parameters": {}, "metrics": {"val_loss": 0.5}, "status": "succeeded"}
with (out / "results.jsonl").open("a") as handle:
    handle.write(json.dumps(record) + "\\n")
if sys.argv[1] == "never":
    time.sleep(0.5)
    sys.exit(0)
(out / "checkpoints" / "c1").mkdir(parents=True, exist_ok=True)
for epoch in range(1, 10_000):
    (out / "checkpoints" / "c1" / ".state.npz.partial").write_text(str(epoch))
    os.replace(out / "checkpoints" / "c1" / ".state.npz.partial", out / "checkpoints" / "c1" / "state.npz")
    time.sleep(0.05)
"""


class Collected:
    def __init__(self) -> None:
        self.records: list[ResultRecord] = []

    def recorded(self) -> list[ResultRecord]:
        return []

    def publish(self, records: list[ResultRecord]) -> None:
        self.records += records


@pytest.mark.parametrize(
    ("first_saved", "now", "newest", "due"),
    [
        (100.0, 200.0, 150.0, True),  # trained past the interval since this attempt's first checkpoint
        (100.0, 140.0, 130.0, False),  # not yet the interval (start-up before the first checkpoint never counts)
        (None, 200.0, 90.0, False),  # this attempt saved none: ending would keep nothing new
        (100.0, 200.0, 199.9, False),  # a fused group may still be saving its other trials
        (100.0, 230.0, 229.9, True),  # epochs too short to ever settle: at twice the interval anyway
    ],
)
def test_a_checkpoint_is_due_an_interval_after_this_attempts_first_once_saving_settled(first_saved, now, newest, due):
    assert checkpoint_due(first_saved, now, 60.0, newest) is due


def run(tmp_path: Path, mode: str, channel: Collected) -> tuple[int, float]:
    shard_file = tmp_path / "shard.json"
    shard_file.write_text("{}")
    command = [sys.executable, "-c", PAYLOAD, mode]
    began = time.monotonic()
    code = run_shard(
        command, shard_file, tmp_path / "out", channel, poll_seconds=0.05, checkpoint_exit=CheckpointExit(85, 0.3)
    )
    return code, time.monotonic() - began


def test_the_runner_ends_with_the_checkpoint_code_once_a_checkpoint_is_due(tmp_path, capsys):
    channel = Collected()
    code, took = run(tmp_path, "checkpoints", channel)
    assert code == 85 and took < 10  # the payload (which would run for minutes) was stopped
    assert [r.id for r in channel.records] == ["c0"]  # what it recorded is published before the end
    assert int((tmp_path / "out" / "checkpoints" / "c1" / "state.npz").read_text()) >= 1
    assert newest_checkpoint(tmp_path / "out") is not None
    assert "checkpoint saved, ending with 85" in capsys.readouterr().err


def test_a_payload_that_saves_no_checkpoint_runs_to_its_own_end(tmp_path):
    channel = Collected()
    code, _ = run(tmp_path, "never", channel)
    assert code == 0 and [r.id for r in channel.records] == ["c0"]
    assert (tmp_path / "out" / "checkpoints").is_dir()  # made for the batch system's checkpoint list
    assert newest_checkpoint(tmp_path / "out") is None
    assert json.loads((tmp_path / "out" / "results.jsonl").read_text())["id"] == "c0"


class ChirpedFiles(Collected):
    """A channel whose send_checkpoints copies the folder as ChirpChannel's does, into a stand-in of the access
    point's initialdir (chirp's file calls on a local folder, with its refusals: mkdir of an existing folder and
    rename over a non-empty one fail, rmall of a missing path fails)."""

    class Remote:
        def __init__(self, root: Path) -> None:
            self.root = root

        def __enter__(self):
            return self

        def __exit__(self, *args: object) -> None:
            return None

        def mkdir(self, remote_path: str, mode: int | None = None) -> None:
            (self.root / remote_path).mkdir()  # FileExistsError, as chirp's AlreadyExists

        def putfile(self, local_file: str, remote_file: str, mode: int | None = None) -> int:
            data = Path(local_file).read_bytes()
            (self.root / remote_file).write_bytes(data)
            return len(data)

        def rmall(self, remote_path: str) -> None:
            import shutil

            shutil.rmtree(self.root / remote_path)  # FileNotFoundError, as chirp's DoesntExist

        def rename(self, old_path: str, new_path: str) -> None:
            (self.root / old_path).rename(self.root / new_path)

    def __init__(self, initialdir: Path) -> None:
        super().__init__()
        self.initialdir = initialdir

    def send_checkpoints(self, folder: Path) -> None:
        from hpscan.job.chirp import send_folders

        self.sent = send_folders(self.Remote(self.initialdir), folder, "checkpoints")


def test_folders_go_to_the_access_point_whole_and_replace_the_older_copy(tmp_path):
    from hpscan.job.chirp import send_folders

    out, initialdir = tmp_path / "out", tmp_path / "initialdir"
    (out / "c1" / "sub").mkdir(parents=True)
    (out / "c1" / "state.npz").write_text("epoch 5")
    (out / "c1" / "sub" / "extra").write_text("x")
    (out / ".c2.download").mkdir()  # hidden: a partial, never sent
    (initialdir / "checkpoints" / "c1").mkdir(parents=True)
    (initialdir / "checkpoints" / "c1" / "state.npz").write_text("epoch 2")  # an older copy there
    (initialdir / "checkpoints" / "c1" / "stale").write_text("gone")
    assert send_folders(ChirpedFiles.Remote(initialdir), out, "checkpoints") == ["c1"]
    sent = initialdir / "checkpoints" / "c1"
    assert (sent / "state.npz").read_text() == "epoch 5" and (sent / "sub" / "extra").read_text() == "x"
    assert not (sent / "stale").exists()  # the folder is replaced, not merged
    assert sorted(p.name for p in (initialdir / "checkpoints").iterdir()) == ["c1"]  # no partial left
    assert send_folders(ChirpedFiles.Remote(initialdir), tmp_path / "none", "checkpoints") == []


def test_a_runner_stopped_by_sigterm_sends_its_checkpoints_through_its_channel(tmp_path):
    import os
    import signal
    import threading

    payload = tmp_path / "payload.py"
    payload.write_text(PAYLOAD)
    out, initialdir = tmp_path / "out", tmp_path / "initialdir"
    initialdir.mkdir()
    channel = ChirpedFiles(initialdir)
    saved = out / "checkpoints" / "c1" / "state.npz"
    # SIGTERM to this process once the payload saved a checkpoint: the runner's handler passes it on
    threading.Thread(target=lambda: (_wait_for(saved), os.kill(os.getpid(), signal.SIGTERM)), daemon=True).start()
    code = run_shard(
        [sys.executable, str(payload), "forever"], tmp_path / "shard.json", out, channel, poll_seconds=0.05
    )
    assert code == 128 + signal.SIGTERM  # the payload was stopped by it
    assert channel.sent == ["c1"]
    assert (initialdir / "checkpoints" / "c1" / "state.npz").read_text() == saved.read_text()
    assert [r.id for r in channel.records] == ["c0"]  # its records published first


def _wait_for(path: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
