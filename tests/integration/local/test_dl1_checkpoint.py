"""dl1's trial checkpoints with TensorFlow on tiny synthetic data: a trial interrupted at epoch k resumes at k, fused
groups resume each trial's own state, and the records equal an uninterrupted run's (bitwise on CPU, measured; the
tests allow 1e-6 relative, the tolerance docs/checkpoints.md states)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
pytest.importorskip("tensorflow")

from dl1.checkpoint import STATE_FILE, TrialCheckpoints  # noqa: E402
from hpscan.api.contract import CHECKPOINTS_DIR  # noqa: E402

TINY_DATA = {"synthetic": {"jets": 3000, "seed": 1}}
SETTINGS = {"epochs": 8, "patience": 2, "fuse": 2, "data": TINY_DATA}
FIVE = [  # two fused groups of 2 and one of 1; some stop early (patience), so groups shrink while they train
    {"id": f"c{i}", "parameters": {"layer1": 16 + 4 * i, "layer2": 8, "learning_rate": 0.003 * (1 + i % 3)}}
    for i in range(5)
]


class Preempted(Exception):
    """Stands in for the kill of a process at an epoch boundary (the kill itself is tested below)."""


@pytest.fixture(scope="module")
def data():
    from dl1.data import load_dataset
    from dl1.train import ResidentData

    dataset = load_dataset(TINY_DATA)
    return ResidentData(dataset.train, dataset.validation)


def train(data, root: Path | None, stop_at: int | tuple[str, int] | None = None, **settings) -> dict:
    """Train FIVE (batch 250) with checkpoints in ``root``; with ``stop_at`` interrupt when any trial (or the one
    named) reaches that epoch, before it is saved. Returns the outcomes recorded, by key."""
    from dl1.model import parse_combination
    from dl1.train import parse_settings, train_many

    parsed = parse_settings({**SETTINGS, **settings})
    jobs = [(c["id"], parse_combination({**c["parameters"], "batch_size": 250})) for c in FIVE]
    done: dict = {}

    def on_epoch(key: str, epoch: int, metrics: dict) -> None:
        if stop_at in (epoch, (key, epoch)):
            raise Preempted(key)

    checkpoints = TrialCheckpoints(root, parsed) if root is not None else None
    try:
        train_many(data, jobs, parsed, lambda o: done.setdefault(o.key, o), on_epoch, checkpoints=checkpoints)
    except Preempted:
        assert stop_at is not None
    else:
        assert stop_at is None or isinstance(stop_at, int), "the named trial never reached its epoch"
    return done


def same_records(resumed: dict, uninterrupted: dict) -> None:
    assert sorted(resumed) == sorted(uninterrupted)
    for key, outcome in uninterrupted.items():
        again = resumed[key]
        assert (again.status, again.epochs) == (outcome.status, outcome.epochs), key
        assert again.metrics == pytest.approx(outcome.metrics, rel=1e-6), key
        assert [h["val_loss"] for h in again.history] == pytest.approx([h["val_loss"] for h in outcome.history])


def test_interrupted_trials_resume_at_their_epoch_with_the_records_of_an_uninterrupted_run(data, tmp_path):
    uninterrupted = train(data, None)
    first = train(data, tmp_path, stop_at=3)  # inside the first fused group (c0, c1): both saved epoch 2
    assert first == {}
    assert sorted(p.parent.name for p in tmp_path.glob(f"*/{STATE_FILE}")) == ["c0", "c1"]
    second = train(data, tmp_path, stop_at=5)  # resumed at 2, interrupted again after saving epoch 4
    resumed = {**second, **train(data, tmp_path)}
    same_records(resumed, uninterrupted)
    assert resumed["c0"].resumed_from == [2, 4] and resumed["c1"].resumed_from == [2, 4]
    assert all(resumed[k].resumed_from == [] for k in ("c2", "c3", "c4"))  # they started after the last stop
    assert not list(tmp_path.iterdir())  # every checkpoint gone with its record


def test_a_group_member_that_ended_leaves_the_other_to_resume_alone(data, tmp_path):
    uninterrupted = train(data, None)
    first, last = sorted(("c2", "c3"), key=lambda k: uninterrupted[k].epochs)  # the second fused group
    assert uninterrupted[first].epochs < uninterrupted[last].epochs, "both ended together: nothing tested"
    done_before = train(data, tmp_path, stop_at=(last, uninterrupted[last].epochs))
    assert sorted(done_before) == ["c0", "c1", first]
    resumed = {**done_before, **train(data, tmp_path)}  # c4 (epoch 0) is not fused with it
    same_records(resumed, uninterrupted)
    assert resumed[last].resumed_from == [uninterrupted[last].epochs - 1] and resumed["c4"].resumed_from == []


def test_a_checkpoint_of_other_settings_or_unreadable_is_trained_from_epoch_0(data, tmp_path, capsys):
    train(data, tmp_path, stop_at=3)
    (tmp_path / "c1" / STATE_FILE).write_bytes(b"not a checkpoint")
    resumed = train(data, tmp_path, seed=7)  # another seed: c0's checkpoint does not belong to this training
    err = capsys.readouterr().err
    assert "checkpoint of c0 was trained with other settings: training it from epoch 0" in err
    assert "checkpoint of c1 unreadable" in err
    assert resumed["c0"].resumed_from == [] and resumed["c1"].resumed_from == []


def test_fusion_and_the_epoch_limit_do_not_void_a_checkpoint(data, tmp_path):
    uninterrupted = train(data, None)
    train(data, tmp_path, stop_at=3)
    resumed = train(data, tmp_path, fuse=1)  # fused by 2 before, one at a time now: the same training
    same_records(resumed, uninterrupted)
    assert resumed["c0"].resumed_from == [2]


# the payload's own process, killed for real --------------------------------------------------------------------


def shard_file(tmp_path: Path, checkpoints: bool = True) -> Path:
    shard = {
        "apiVersion": "hpscan.io/v1alpha1",
        "kind": "ShardFile",
        "scan": "tiny",
        "shard": 0,
        "shards": 1,
        "objective": {"metric": "val_loss", "goal": "minimize"},
        "gpu": {"count": 0, "required": False},
        "settings": {**SETTINGS, "batch_size": 250},
        "combinations": FIVE,
        "checkpoints": checkpoints,
    }
    path = tmp_path / "shard.json"
    path.write_text(json.dumps(shard))
    return path


def saved_epochs(out: Path) -> dict[str, int]:
    """The epoch each trial's checkpoint holds now."""
    import numpy as np

    epochs = {}
    for path in (out / CHECKPOINTS_DIR).glob(f"*/{STATE_FILE}"):
        try:
            with np.load(path) as stored:
                epochs[path.parent.name] = json.loads(str(stored["meta"]))["epoch"]
        except (OSError, ValueError, KeyError):
            continue  # replaced while read
    return epochs


def dl1(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "dl1"), *args]


def trained(metrics: dict[str, float]) -> dict[str, float]:
    """A record's metrics but those that time the machine (inference speed), which no two runs share."""
    return {name: value for name, value in metrics.items() if "_ms_" not in name}


def records(out: Path) -> dict[str, dict]:
    lines = (out / "results.jsonl").read_text().splitlines()
    return {r["id"]: r for r in map(json.loads, lines)}


def test_a_killed_payload_resumes_from_its_checkpoints(tmp_path):
    path = shard_file(tmp_path)
    subprocess.run(dl1("train-shard", str(path), "--out", str(tmp_path / "whole")), check=True, capture_output=True)
    out = tmp_path / "killed"
    process = subprocess.Popen(dl1("train-shard", str(path), "--out", str(out)), stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while max(saved_epochs(out).values(), default=0) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the payload ended before the kill: nothing was tested"
    # members of one fused group save one after the other: a kill between them leaves them an epoch apart
    in_flight = saved_epochs(out)
    assert max(in_flight.values()) >= 3
    again = subprocess.run(dl1("train-shard", str(path), "--out", str(out)), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    killed, whole = records(out), records(tmp_path / "whole")
    for key, epoch in in_flight.items():
        assert killed[key]["resumedFrom"] == [epoch]
        assert f"resuming {key} at epoch {epoch} from its checkpoint" in again.stderr
    for key, record in whole.items():
        assert killed[key]["epochs"] == record["epochs"]
        assert trained(killed[key]["metrics"]) == pytest.approx(trained(record["metrics"]), rel=1e-6)
        assert "resumedFrom" not in record
    assert not list((out / CHECKPOINTS_DIR).iterdir())


def test_without_checkpoints_in_the_shard_file_nothing_is_saved(tmp_path):
    path = shard_file(tmp_path, checkpoints=False)
    out = tmp_path / "out"
    subprocess.run(dl1("train-shard", str(path), "--out", str(out)), check=True, capture_output=True)
    assert len(records(out)) == 5 and not (out / CHECKPOINTS_DIR).exists()
