"""The pure parts of bench/preemption.py: when a worker counts as training, the epoch time it measures, the rate."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))

from preemption import Preemption, Worker, median_gap


def report(folder: Path, *epochs: int) -> None:
    with (folder / "progress.jsonl").open("a") as progress:
        progress.writelines(json.dumps({"id": "c0", "epoch": e, "metrics": {"val_loss": 1.0}}) + "\n" for e in epochs)


def test_a_worker_trains_between_its_first_report_and_its_trials_last_epoch(tmp_path):
    worker = Worker(tmp_path)
    worker.read(now=1.0)
    assert not worker.training(since=0.0, epochs=3)  # starting up: TensorFlow, the data
    report(tmp_path, 1)
    worker.read(now=2.0)
    assert worker.training(since=0.0, epochs=3) and worker.reports == 1
    assert not worker.training(since=2.5, epochs=3)  # a payload started after that report: starting up again
    report(tmp_path, 2, 3)
    worker.read(now=3.0)
    assert worker.reports == 3 and worker.last_epoch == 3
    assert not worker.training(since=0.0, epochs=3)  # the trial is evaluated and recorded: nothing to lose


def test_the_epoch_time_leaves_out_the_start_up_between_two_payloads_in_one_folder(tmp_path):
    worker = Worker(tmp_path)
    worker.restarted()
    for now in (10.0, 11.0, 12.0):
        report(tmp_path, 1)
        worker.read(now)
    worker.restarted()  # an exit with 85 and a start-up of 30 s in the same sandbox
    for now in (42.0, 43.0):
        report(tmp_path, 1)
        worker.read(now)
    assert median_gap({tmp_path: worker}) == pytest.approx(1.0)
    assert median_gap({tmp_path: Worker(tmp_path)}) is None


def test_the_rate_makes_per_trial_preemptions_over_a_trials_training_time():
    assert Preemption(1.0, 20, 2.0).rate(None) == pytest.approx(1 / 40)
    assert Preemption(2.0, 20).rate(0.5) == pytest.approx(2 / 10)  # measured in the run
    assert Preemption(1.0, 20).rate(None) == 0.0  # no epoch time yet: nothing is preempted
    assert Preemption(0.0, 20, 2.0).rate(None) == 0.0
