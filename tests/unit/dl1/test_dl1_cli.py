"""CLI pieces that need no TensorFlow: resuming from results.jsonl, settings validation, help, exit codes."""

from __future__ import annotations

import json

import pytest

from dl1.cli import main
from dl1.errors import SettingsError
from dl1.shard import TrialWait, recorded_ids
from dl1.train import parse_settings


def test_recorded_ids_and_a_truncated_last_line(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps({"id": "a"}) + "\n" + json.dumps({"id": "b"}) + "\n" + '{"id": "c", "sha')
    assert recorded_ids(path) == {"a", "b"}
    # the broken tail is cut so the next record starts on its own line
    assert path.read_text().endswith('{"id": "b"}\n')
    assert recorded_ids(tmp_path / "absent.jsonl") == set()


def test_settings_refuse_unknown_keys_before_training():
    with pytest.raises(SettingsError, match=r"settings\.epoch: unknown setting"):
        parse_settings({"epoch": 3, "data": {"synthetic": {"jets": 100}}})
    with pytest.raises(SettingsError, match=r"settings\.patience"):
        parse_settings({"patience": -1, "data": {"synthetic": {"jets": 100}}})
    settings = parse_settings({"epochs": 3, "layers": [8, 4], "data": {"synthetic": {"jets": 100}}})
    assert settings.model_defaults().layers == (8, 4)


def test_help_everywhere(capsys):
    for args in (
        ["--help"],
        ["generate", "--help"],
        ["train-shard", "--help"],
        ["gpu-check", "--help"],
        ["evaluate", "--help"],
    ):
        assert main(args) == 0
    assert "train-shard" in capsys.readouterr().out


def _shard(tmp_path, **changes):
    shard = {
        "apiVersion": "hpscan.io/v1alpha1",
        "kind": "ShardFile",
        "scan": "t",
        "shard": 0,
        "shards": 1,
        "objective": {"metric": "val_loss", "goal": "minimize"},
        "gpu": {"count": 1, "required": False},
        "settings": {"epochs": 1, "data": {"synthetic": {"jets": 600, "seed": 1}}},
        "combinations": [{"id": "x1", "parameters": {"layer1": 8}}],
    }
    shard.update(changes)
    path = tmp_path / "shard.json"
    path.write_text(json.dumps(shard))
    return path


def test_unknown_parameter_fails_at_shard_start_with_one_line(tmp_path, capsys):
    path = _shard(
        tmp_path, combinations=[{"id": "x1", "parameters": {"layer1": 8}}, {"id": "x2", "parameters": {"dropuot": 0.1}}]
    )
    assert main(["train-shard", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == "dl1: error: unknown parameter 'dropuot': the dl1 payload understands layer1 ... layerN, learning_rate, batch_size, activation"
    )
    assert not (tmp_path / "out" / "results.jsonl").exists()


def test_gpu_required_without_gpu_exits_3_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("dl1.gpucheck._device_nodes", lambda: [])
    path = _shard(tmp_path, gpu={"count": 1, "required": True})
    assert main(["train-shard", str(path), "--out", str(tmp_path / "out")]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dl1: error: GPU required but unusable: no NVIDIA device nodes")
    assert not (tmp_path / "out" / "results.jsonl").exists()


def test_bad_shard_file_and_missing_file(tmp_path, capsys):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"kind": "ShardFile"}))
    assert main(["train-shard", str(path)]) == 2
    assert "bad.json" in capsys.readouterr().err
    assert main(["train-shard", str(tmp_path / "none.json")]) == 2
    assert main(["no-such-command"]) == 2


def test_gpu_check_command_prints_json_and_exits_3_when_required(capsys, monkeypatch):
    monkeypatch.setattr("dl1.gpucheck._device_nodes", lambda: [])
    assert main(["gpu-check"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and "device nodes" in report["reason"]
    assert main(["gpu-check", "--require"]) == 3
    assert capsys.readouterr().err.strip().startswith("dl1: error: no NVIDIA device nodes")


def test_a_failing_payload_writes_its_reason_where_the_backend_reads_last_words(tmp_path, capsys, monkeypatch):
    """On Kubernetes the file is the termination message: the reason, not the log's last line (which a real
    container's interleaved stdout and stderr made the JSON report's closing brace)."""
    from hpscan.api.contract import LAST_WORDS_ENV

    monkeypatch.setattr("dl1.gpucheck._device_nodes", lambda: [])
    monkeypatch.delenv(LAST_WORDS_ENV, raising=False)
    assert main(["gpu-check", "--require"]) == 3  # no file named: nothing written anywhere
    last_words = tmp_path / "termination-log"
    monkeypatch.setenv(LAST_WORDS_ENV, str(last_words))
    assert main(["gpu-check", "--require"]) == 3
    assert last_words.read_text().startswith("no NVIDIA device nodes (/dev/nvidia*)")
    assert len(last_words.read_text().splitlines()) == 1
    path = _shard(tmp_path, gpu={"count": 1, "required": True})
    assert main(["train-shard", str(path), "--out", str(tmp_path / "out")]) == 3
    assert last_words.read_text().startswith("GPU required but unusable: no NVIDIA device nodes")
    monkeypatch.setenv(LAST_WORDS_ENV, str(tmp_path / "no-such-dir" / "termination-log"))
    capsys.readouterr()
    assert main(["gpu-check", "--require"]) == 3  # an unwritable file costs only the shortcut
    assert "cannot write the last words" in capsys.readouterr().err


def test_a_worker_waiting_for_trials_says_so_every_minute():
    """A pulling worker with nothing to train and no end does not wait silently: its output says how long."""
    wait = TrialWait(every=60)
    assert wait.tick(100.0, recorded=14) is None  # the wait starts
    assert wait.tick(159.9, recorded=14) is None
    assert wait.tick(160.0, recorded=14) == (
        "waiting for trials from hpscan: none to train for 60 s (14 recorded here, no end yet)"
    )
    assert wait.tick(200.0, recorded=14) is None
    assert "for 120 s" in (wait.tick(220.0, recorded=14) or "")
    wait.reset()  # a trial came
    assert wait.tick(500.0, recorded=15) is None
