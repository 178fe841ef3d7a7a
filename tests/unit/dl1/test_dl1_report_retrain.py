"""dl1's retraining comparison without TensorFlow: the payload coupling (dl1.report.retrain) replaced by a fake that
'trains' a toy tagger whose quality follows the combination, the BDT and the plots real. hpscan's generic report
finds dl1's plugin through the ``hpscan.report`` entry point, as `hpscan report --retrain` does."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from dl1.report import retrain
from dl1.report.bdt import LABEL as BDT_LABEL
from dl1.report.bdt import training_weights
from dl1.report.performance import FC, TaggerScores, evaluate
from hpscan.report import build_report
from hpscan.report.rundir import ReportError
from support.report_runs import physics_run, write_fake_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TRUTH = np.array([0, 4, 5])
MEANS = {0: [2.0, 0.0, 0.0], 4: [0.0, 1.0, 0.0], 5: [0.0, 0.0, 3.5]}  # ftag.mock's toy logits


def toy_jets(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Four features whose first three carry the flavour, like the low-level tagger outputs DL1 reads."""
    rng = np.random.default_rng(seed)
    truth = rng.choice(TRUTH, size=n, p=[0.6, 0.1, 0.3])
    means = np.array([MEANS[t] for t in truth])
    x = np.column_stack([means + rng.normal(0, 1.5, size=(n, 3)), rng.normal(size=n)])
    return x, truth


class FakePayload:
    calls: list[dict] = []

    @staticmethod
    def load_jets(settings):
        train_x, train_truth = toy_jets(6000, 1)
        test_x, test_truth = toy_jets(6000, 2)
        return retrain.JetData(train_x, train_truth, test_x, test_truth, "toy jets (6,000 test)")

    @staticmethod
    def train(data, parameters, settings, key, on_epoch=None):
        FakePayload.calls.append(parameters)
        sharpness = 0.3 + 0.7 * math.log(float(parameters["layer1"]), 64)  # wider first layer, better tagger
        logits = sharpness * data.test_x[:, :3]
        probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        return retrain.Trained(probabilities=probabilities, epochs=2, seconds=0.1, test_loss=0.7)


@pytest.fixture
def fake_payload(monkeypatch):
    FakePayload.calls = []
    monkeypatch.setattr(retrain, "load_jets", FakePayload.load_jets)
    monkeypatch.setattr(retrain, "train", FakePayload.train)
    return FakePayload


@pytest.mark.slow
def test_retrain_writes_both_plots_and_the_numbers(tmp_path: Path, fake_payload):
    run_dir = write_fake_run(tmp_path / "run", failed_every=5)
    page = build_report(run_dir, retrain=True)
    report = run_dir / "report"
    for name in ("roc.png", "rejection-vs-fc.png", "c-tagging.png"):
        assert (report / name).read_bytes()[:8] == PNG_MAGIC

    metrics = json.loads((report / "metrics.json").read_text())
    retrained = metrics["retrain"]
    assert list(retrained["taggers"]) == ["best", "median", "worst", "bdt"]
    scan = metrics["scan"]
    picked = [fake_payload.calls[i] for i in range(3)]
    assert picked == [scan[k]["parameters"] for k in ("best", "median", "worst")]
    for key in ("best", "median", "worst"):
        tagger = retrained["taggers"][key]
        assert tagger["combination"]["id"] == scan[key]["id"]
        assert set(tagger["workingPoints"]) == {"60", "70", "77", "85"}
        assert tagger["fc"] == FC and len(tagger["fcScan"]["fc"]) == len(tagger["fcScan"]["ujets"]) > 50
    bdt = retrained["taggers"]["bdt"]
    assert bdt["label"] == BDT_LABEL and "stand-in for MV2c10" in bdt["label"]
    assert bdt["fcScan"] is None and bdt["fc"] is None  # one output: no f_c
    assert retrained["testSet"]["jets"] == 6000

    html = page.read_text()
    assert html.count("data:image/png;base64,") == 4
    assert "stands in for MV2c10" in html
    assert "light rej. @ 77%" in html


def test_one_succeeded_combination_is_trained_once(tmp_path: Path, fake_payload):
    run_dir = write_fake_run(tmp_path / "run", limit=1)
    build_report(run_dir, retrain=True)
    assert len(fake_payload.calls) == 1
    metrics = json.loads((run_dir / "report" / "metrics.json").read_text())
    assert metrics["retrain"]["taggers"]["best"]["label"].startswith("best = median = worst")


def test_a_test_set_without_c_jets_is_a_clear_error(tmp_path: Path, monkeypatch, fake_payload):
    def no_charm(settings):
        data = FakePayload.load_jets(settings)
        keep = data.test_truth != 4
        return retrain.JetData(data.train_x, data.train_truth, data.test_x[keep], data.test_truth[keep], "no c")

    monkeypatch.setattr(retrain, "load_jets", no_charm)
    with pytest.raises(ReportError, match="lacks a flavour"):
        build_report(write_fake_run(tmp_path / "run"), retrain=True)


def test_rejections_agree_with_atlas_ftag_tools():
    from ftag.utils.metrics import calculate_rejection

    x, truth = toy_jets(20000, 3)
    logits = x[:, :3]
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    scores = TaggerScores("best", "best", probabilities=probabilities)
    performance = evaluate(scores, truth)
    d_b = np.log(probabilities[:, 2] / (FC * probabilities[:, 1] + (1 - FC) * probabilities[:, 0]))
    expected = calculate_rejection(d_b[truth == 5], d_b[truth == 0], target_eff=[0.77])[0]
    assert performance.at(0.77, "ujets") == pytest.approx(expected, rel=1e-6)
    # The f_c scan at f_c = 0.018 is the 77% working point of the ROC curves.
    index = performance.fc_scan["fc"].index(FC)
    assert performance.fc_scan["ujets"][index] == pytest.approx(performance.at(0.77, "ujets"))
    # Rejection falls as the efficiency rises.
    light = [performance.at(wp, "ujets") for wp in (0.6, 0.7, 0.77, 0.85)]
    assert light == sorted(light, reverse=True)
    # f_c = 1 ignores light jets in D_b: the c rejection peaks at high f_c, the light rejection at low f_c.
    assert performance.fc_scan["cjets"][-1] > performance.fc_scan["cjets"][0]
    assert performance.fc_scan["ujets"][0] > performance.fc_scan["ujets"][-1]


def test_perfect_separation_reports_unbounded_rejection_as_null():
    truth = np.array([5] * 100 + [4] * 50 + [0] * 50)
    probabilities = np.array([[0.0, 0.0, 1.0]] * 100 + [[0.0, 1.0, 0.0]] * 50 + [[1.0, 0.0, 0.0]] * 50)
    performance = evaluate(TaggerScores("best", "best", probabilities=probabilities), truth)
    assert performance.at(0.77, "ujets") is None
    json.dumps(performance.to_json(), allow_nan=False)  # valid JSON, no Infinity


def test_bdt_weights_balance_signal_and_background_with_a_small_c_share():
    truth = np.array([5] * 30 + [4] * 10 + [0] * 60)
    weights = training_weights(truth)
    b, c, light = weights[truth == 5].sum(), weights[truth == 4].sum(), weights[truth == 0].sum()
    assert b == pytest.approx(c + light)
    assert c / (c + light) == pytest.approx(0.07)


def keep_every_model(run_dir: Path) -> None:
    """Model folders as a scan with artifacts.keep: all leaves them (model.json is all the fake needs)."""
    for line in (run_dir / "results.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["status"] == "succeeded":
            folder = run_dir / "models" / record["id"]
            folder.mkdir(parents=True, exist_ok=True)
            info = {"id": record["id"], "parameters": record["parameters"], "epochs": 3, "metrics": record["metrics"]}
            (folder / "model.json").write_text(json.dumps(info))


def test_kept_models_are_evaluated_not_retrained_and_a_rerun_is_served_from_the_cache(
    tmp_path: Path, fake_payload, monkeypatch
):
    run_dir = write_fake_run(tmp_path / "run")
    keep_every_model(run_dir)
    evaluated: list[str] = []
    loads: list[int] = []

    def evaluate_saved(data, folder):
        evaluated.append(folder.name)
        parameters = json.loads((folder / "model.json").read_text())["parameters"]
        return FakePayload.train(data, parameters, {}, key=folder.name)

    def load_jets(settings):
        loads.append(1)
        return FakePayload.load_jets(settings)

    monkeypatch.setattr(retrain, "evaluate_saved", evaluate_saved)
    monkeypatch.setattr(retrain, "load_jets", load_jets)
    FakePayload.calls = []
    build_report(run_dir)  # no --retrain: the kept models
    metrics = json.loads((run_dir / "report" / "metrics.json").read_text())
    assert metrics["retrain"]["mode"] == "kept models"
    assert len(evaluated) == 3 and len(FakePayload.calls) == 3 and loads == [1]  # evaluated once each, no training
    first = metrics["retrain"]["taggers"]
    assert (
        first["best"]["source"] == "kept model"
        and first["best"]["validationLoss"] == first["best"]["combination"]["scanValue"]
    )

    evaluated.clear()
    loads.clear()
    build_report(run_dir)
    again = json.loads((run_dir / "report" / "metrics.json").read_text())["retrain"]
    assert evaluated == [] and loads == []  # scores, test labels and the BDT all from the cache
    assert set(again["cache"]["hits"]) == {"test jets", "BDT"} | {
        f"{k} {what}" for k in ("best", "median", "worst", "bdt") for what in ("scores", "rejections")
    } - {"bdt scores"}
    assert again["taggers"]["best"]["workingPoints"] == first["best"]["workingPoints"]
    assert again["taggers"]["bdt"]["workingPoints"] == first["bdt"]["workingPoints"]
    html = (run_dir / "report" / "index.html").read_text()
    assert "kept models" in html and "c-tagging from the same networks" in html and " ± " in html


def test_rejection_uncertainties_are_binomial_and_counted():
    from dl1.report.performance import rejection_errors

    x, truth = toy_jets(40_000, 3)
    logits = x[:, :3]
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    performance = evaluate(TaggerScores("best", "best", probabilities=probabilities), truth)
    point = performance.working_points["77"]
    rejection, error, passing = point["ujets"], point["ujetsError"], point["ujetsPassing"]
    assert point["ujetsTotal"] == int((truth == 0).sum())
    assert error == pytest.approx(rejection / math.sqrt(passing), rel=0.05)  # about R / sqrt(passing)
    assert rejection_errors(np.array([np.inf]), 100)[0] != rejection_errors(np.array([np.inf]), 100)[0]  # NaN
    ctag = performance.c_tagging
    assert ctag["fb"] == 0.2 and set(ctag["workingPoints"]) == {"20", "30", "40", "50"}
    assert ctag["workingPoints"]["30"]["ujets"] > ctag["workingPoints"]["50"]["ujets"] > 1


@pytest.mark.slow
@pytest.mark.parametrize(("scan_fc", "drawn"), [(FC, True), (0.08, False)])
def test_the_bdt_is_a_point_on_the_pareto_front_only_at_the_reports_f_c(
    tmp_path: Path, fake_payload, scan_fc: float, drawn: bool
):
    run_dir = physics_run(tmp_path / "run")
    manifest = yaml.safe_load((run_dir / "scan.yaml").read_text())
    manifest["spec"]["payload"]["settings"]["f_c"] = scan_fc  # the f_c of the records' rejections
    (run_dir / "scan.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    build_report(run_dir, retrain=True)

    retrained = json.loads((run_dir / "report" / "metrics.json").read_text())["retrain"]
    at_77 = retrained["taggers"]["bdt"]["workingPoints"]["77"]
    (reference,) = retrained["referencePoints"]
    assert reference["label"].startswith(BDT_LABEL)
    assert reference["values"] == {"light_rejection_77": at_77["ujets"], "c_rejection_77": at_77["cjets"]}
    assert reference["errors"] == {"light_rejection_77": at_77["ujetsError"], "c_rejection_77": at_77["cjetsError"]}
    assert all(v > 1 for v in reference["values"].values()) and all(e > 0 for e in reference["errors"].values())
    with Image.open(run_dir / "report" / "pareto-front.png") as image:
        shown = json.loads(image.text["hpscan"])
    assert shown["references"] == ([reference["label"]] if drawn else [])
    assert reference["note"] == (None if drawn else f"the scan's f_c = 0.08; the report compares it at f_c = {FC:g}")
