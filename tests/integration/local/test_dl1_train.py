"""The dl1 payload with TensorFlow on tiny synthetic data: train-shard end to end, resume, NaN, the Python API."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.integration
pytest.importorskip("tensorflow")

from dl1.cli import main  # noqa: E402
from hpscan.api.contract import ResultRecord  # noqa: E402

TINY_DATA = {"synthetic": {"jets": 3000, "seed": 1}}


def shard_file(tmp_path: Path, combinations: list[dict], **settings) -> Path:
    shard = {
        "apiVersion": "hpscan.io/v1alpha1",
        "kind": "ShardFile",
        "scan": "tiny",
        "shard": 2,
        "shards": 3,
        "objective": {"metric": "val_loss", "goal": "minimize"},
        "gpu": {"count": 1, "required": False},
        "settings": {"epochs": 3, "patience": 2, "data": TINY_DATA, **settings},
        "combinations": combinations,
    }
    path = tmp_path / "shard.json"
    path.write_text(json.dumps(shard))
    return path


TWO = [
    {"id": "c-small", "parameters": {"layer1": 16, "layer2": 8, "learning_rate": 0.003, "batch_size": 250}},
    {"id": "c-elu", "parameters": {"layer1": 24, "learning_rate": 0.003, "batch_size": 200, "activation": "elu"}},
]


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("shard")
    path = shard_file(tmp, TWO)
    assert main(["train-shard", str(path), "--out", str(tmp / "out")]) == 0
    return path, tmp / "out"


def test_two_combinations_end_to_end(trained):
    _, out = trained
    recs = records(out)
    assert sorted(r["id"] for r in recs) == ["c-elu", "c-small"]
    for rec in recs:
        parsed = ResultRecord.model_validate(rec)  # the contract, camelCase on the wire
        assert parsed.status == "succeeded" and parsed.shard == 2
        assert 0.2 < rec["metrics"]["val_loss"] < 2.0
        assert {"loss", "val_accuracy", "best_epoch"} <= set(rec["metrics"])
        assert 1 <= rec["epochs"] <= 3
        assert rec["device"] == "CPU"
        assert {"startedAt", "finishedAt", "durationSeconds"} <= set(rec)
    # learnt something: ln 3 = 1.10 is guessing among three balanced classes
    assert min(r["metrics"]["val_loss"] for r in recs) < 1.0
    # the physics of the best epoch on the validation split, and the network's cost (dl1.record_metrics)
    by_id = {r["id"]: r["metrics"] for r in recs}
    assert by_id["c-small"]["n_parameters"] == 44 * 16 + 16 + 16 * 8 + 8 + 8 * 3 + 3
    assert by_id["c-elu"]["n_parameters"] == 44 * 24 + 24 + 24 * 3 + 3
    for metrics in by_id.values():
        assert (
            metrics["light_rejection_77"] > 1 and 0 < metrics["light_rejection_77_err"] < metrics["light_rejection_77"]
        )
        assert metrics["c_rejection_77"] > 1 and metrics["c_rejection_77_err"] > 0
        assert metrics["inference_ms_per_1k_jets"] > 0
    assert rec["parameters"] == next(c["parameters"] for c in TWO if c["id"] == rec["id"])
    scale = json.loads((out / "scale_dict.json").read_text())
    assert len(scale) == 44


def test_a_retried_shard_skips_recorded_combinations(trained, capsys):
    path, out = trained
    before = records(out)
    kept = [r for r in before if r["id"] == "c-small"]
    # as if the process was killed while writing the second record
    (out / "results.jsonl").write_text(json.dumps(kept[0]) + "\n" + '{"id": "c-elu", "metr')
    capsys.readouterr()
    assert main(["train-shard", str(path), "--out", str(out)]) == 0
    after = records(out)
    assert [r["id"] for r in after] == ["c-small", "c-elu"]
    assert after[0] == kept[0]  # untouched
    assert "1 already recorded" in capsys.readouterr().err
    # a finished shard trains nothing
    assert main(["train-shard", str(path), "--out", str(out)]) == 0
    assert len(records(out)) == 2


def test_a_diverging_combination_fails_and_the_shard_goes_on(tmp_path):
    combos = [
        {"id": "boom", "parameters": {"layer1": 16, "learning_rate": 1e30, "batch_size": 250}},
        {"id": "fine", "parameters": {"layer1": 16, "learning_rate": 0.003, "batch_size": 250}},
    ]
    path = shard_file(tmp_path, combos, epochs=2)
    assert main(["train-shard", str(path), "--out", str(tmp_path / "out")]) == 0
    by_id = {r["id"]: r for r in records(tmp_path / "out")}
    assert by_id["boom"]["status"] == "failed"
    assert "diverged" in by_id["boom"]["error"] and by_id["boom"]["metrics"] == {}
    assert by_id["fine"]["status"] == "succeeded"


def test_fusion_does_not_change_results():
    from dl1.data import load_dataset
    from dl1.model import parse_combination
    from dl1.train import ResidentData, parse_settings, train_many

    dataset = load_dataset(TINY_DATA)
    data = ResidentData(dataset.train, dataset.validation)
    jobs = [(c["id"], parse_combination(c["parameters"])) for c in TWO]
    jobs = [
        (key, config.__class__(config.layers, config.activation, config.learning_rate, 250)) for key, config in jobs
    ]
    losses = {}
    runs = [(1, "off", "float32"), (2, "off", "float32"), (2, "on", "float32"), (2, "off", "bfloat16")]
    for fuse, xla, precision in runs:  # XLA: the GPU path, compiled for the CPU here
        done: list = []
        settings = {"epochs": 2, "patience": 0, "fuse": fuse, "xla": xla, "precision": precision, "data": TINY_DATA}
        train_many(data, jobs, parse_settings(settings), done.append)
        assert all(o.status == "succeeded" for o in done), [o.error for o in done]
        losses[fuse, xla, precision] = {o.key: o.metrics["val_loss"] for o in done}
    reference = losses[1, "off", "float32"]
    assert reference == pytest.approx(losses[2, "off", "float32"], rel=1e-4)
    assert reference == pytest.approx(losses[2, "on", "float32"], rel=1e-3)
    # mixed precision rounds the products, not the weights: close to float32, not equal
    assert reference == pytest.approx(losses[2, "off", "bfloat16"], rel=0.03)
    assert reference != losses[2, "off", "bfloat16"]


def test_train_combination_api_for_the_report():
    from dl1.data import load_dataset
    from dl1.metrics import tagging_metrics
    from dl1.train import train_combination

    dataset = load_dataset(TINY_DATA)
    settings = {"epochs": 2, "patience": 0, "data": TINY_DATA}
    outcome = train_combination(
        {"layer1": 32, "layer2": 16, "batch_size": 100, "learning_rate": 0.003}, dataset, settings, key="k"
    )
    assert outcome.status == "succeeded" and outcome.model is not None and outcome.epochs == 2
    assert [h["val_loss"] for h in outcome.history][-1] == pytest.approx(
        outcome.metrics["val_loss"]
    ) or outcome.metrics["best_epoch"] == 1
    probs = outcome.model.predict(dataset.test.x)
    assert probs.shape == (len(dataset.test), 3)
    assert probs.sum(axis=1) == pytest.approx(np.ones(len(probs)), abs=1e-5)
    keras_probs = outcome.model.to_keras().predict(dataset.test.x, verbose=0)
    assert keras_probs == pytest.approx(probs, abs=1e-5)
    metrics = tagging_metrics(probs, dataset.test.y)
    assert metrics["working_points"]["77"]["light_rejection"] > 2  # a trained tagger rejects light jets


def test_generate_then_train_from_the_file_and_evaluate(tmp_path, capsys):
    h5 = tmp_path / "jets.h5"
    assert main(["generate", "--jets", "3000", "--seed", "4", "--out", str(h5)]) == 0
    settings = {
        "epochs": 2,
        "patience": 0,
        "data": {"train": str(h5), "variables": ["IP3D_bu", "SV1_masssvx", "rnnip_pb", "JetFitter_mass"]},
    }
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(settings))
    metrics_out = tmp_path / "metrics.json"
    code = main(["evaluate", str(path), "--parameters", '{"layer1": 16, "batch_size": 100}', "--out", str(metrics_out)])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads(metrics_out.read_text())
    assert metrics["working_points"]["77"]["light_rejection"] > 2
    assert metrics["training"]["epochs"] == 2
    printed = capsys.readouterr().err
    assert "77% b-eff.: light rejection" in printed and "30% c-eff.: light rejection" in printed
    assert metrics["c_tagging"]["30"]["light_rejection"] > 1
    assert metrics["working_points"]["77"]["light_rejection_error"] > 0


def test_saved_models_evaluate_elsewhere_on_a_file(tmp_path, capsys):
    """A shard asking for models leaves OUT/models/<id>/ (Keras, scale dict, model.json) that `dl1 evaluate --model`
    scores on a file with the same outputs as the network that trained."""
    path = shard_file(tmp_path, TWO[:1])
    shard = json.loads(path.read_text())
    shard["artifacts"] = {"saveModels": True}
    path.write_text(json.dumps(shard))
    out = tmp_path / "out"
    assert main(["train-shard", str(path), "--out", str(out)]) == 0
    folder = out / "models" / "c-small"
    info = json.loads((folder / "model.json").read_text())
    assert info["id"] == "c-small" and info["parameters"] == TWO[0]["parameters"] and len(info["inputs"]) == 44
    assert info["metrics"]["val_loss"] == records(out)[0]["metrics"]["val_loss"]
    assert (folder / "model.keras").is_file() and (folder / "scale_dict.json").is_file()
    assert not list((out / "models").glob(".*"))  # no partial folder left

    from dl1.artifacts import load_model
    from dl1.data import load_dataset

    network = load_model(folder)
    dataset = load_dataset(TINY_DATA)
    via_file = network.predict_jets(dataset.test.jets)
    assert np.allclose(via_file, network.predict(dataset.test.x), atol=1e-6)  # the same scaling as training

    h5 = tmp_path / "jets.h5"
    assert main(["generate", "--jets", "2000", "--seed", "9", "--out", str(h5)]) == 0
    metrics_out = tmp_path / "metrics.json"
    code = main(["evaluate", "--model", str(folder), "--data", str(h5), "--out", str(metrics_out)])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads(metrics_out.read_text())
    assert metrics["model"]["id"] == "c-small" and sum(metrics["jets"].values()) == 2000
    assert "c_tagging" in metrics and metrics["working_points"]["77"]["light_rejection"] > 1
    assert main(["evaluate", "--model", str(folder), "--out", str(metrics_out)]) == 2  # no test jets named


def test_a_separate_test_sample_is_independent_and_joins_the_validation_free_split():
    from dl1.data import load_dataset

    plain = load_dataset({"synthetic": {"jets": 3000, "seed": 1}})
    apart = load_dataset({"synthetic": {"jets": 3000, "seed": 1, "test_jets": 1200}})
    assert len(apart.test) == 1200 and len(apart.train) == len(plain.train) + len(plain.test)
    assert len(apart.validation) == len(plain.validation)
    assert not np.array_equal(apart.test.x[:100], plain.test.x[:100])
    skipped = load_dataset({"synthetic": {"jets": 3000, "seed": 1, "test_jets": 1200}}, with_test=False)
    assert len(skipped.train) == len(apart.train)  # training does not generate the test jets
