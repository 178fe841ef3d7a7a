"""Retrain the best, the median and the worst combination, train the BDT, compare them on the test set (Figure 4).

The payload is reached only through dl1.report.retrain (the one module that knows dl1's training API); this module
orchestrates, computes the numbers (dl1.report.performance) and draws (dl1.report.tagging_plots).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from dl1.report import bdt
from dl1.report.performance import (
    FC,
    MIN_PASSING,
    SCAN_WORKING_POINT,
    TaggerPerformance,
    TaggerScores,
    evaluate,
    flavour_counts,
)
from dl1.report.tagging_plots import draw_fc_scan, draw_roc
from hpscan.report.plugin import Step
from hpscan.report.rundir import Ranked, ReportError, ScanRun


def _labels(run: ScanRun, picks: dict[str, Ranked]) -> dict[str, str]:
    metric = run.scan.spec.objective.metric
    by_id: dict[str, list[str]] = {}
    for key, ranked in picks.items():
        by_id.setdefault(ranked.id, []).append(key)
    return {key: f"{' = '.join(by_id[ranked.id])} ({metric} {ranked.value:.4g})" for key, ranked in picks.items()}


def compare(run: ScanRun, report_dir: Path, step: Step) -> dict[str, Any]:
    """Write roc.png and rejection-vs-fc.png into report_dir; return the numbers behind them (metrics.json).

    Tells ``step`` of steps 0 to 5 (DL1ReportPlugin.steps = 6)."""
    from dl1.report import retrain  # numpy, h5py and the payload's modules: only when a comparison runs

    started = time.monotonic()
    settings = run.scan.spec.payload.settings
    step("loading the training and test jets (dl1 payload)", 0)
    data = retrain.load_jets(settings)
    counts = flavour_counts(data.test_truth)
    if not all(counts.values()):
        raise ReportError(f"the test set lacks a flavour ({counts}); use more jets in spec.payload.settings.data")

    picks = run.picks()
    labels = _labels(run, picks)
    trained: dict[str, retrain.Trained] = {}
    scores: list[TaggerScores] = []
    details: dict[str, dict[str, Any]] = {}
    for index, (key, ranked) in enumerate(picks.items(), start=1):
        if ranked.id not in trained:  # one succeeded combination is best, median and worst at once
            what = f"retraining the {key} combination {ranked.id}"
            step(what, index)

            def epoch_done(epoch: int, most: int, what: str = what, index: int = index) -> None:
                step(f"{what} (epoch {epoch} of at most {most})", index)

            trained[ranked.id] = retrain.train(
                data, ranked.record.parameters, settings, key=ranked.id, on_epoch=epoch_done
            )
        network = trained[ranked.id]
        scores.append(TaggerScores(key, labels[key], probabilities=network.probabilities))
        details[key] = {
            "combination": {
                "id": ranked.id,
                "rank": ranked.rank + 1,
                "parameters": ranked.record.parameters,
                "scanValue": ranked.value,
            },
            "epochs": network.epochs,
            "seconds": round(network.seconds, 1),
            "testLoss": network.test_loss,
            "validationLoss": network.validation_loss,
        }

    step("training the BDT baseline (scikit-learn, stand-in for MV2c10)", 4)
    bdt_started = time.monotonic()
    bdt_scores = bdt.train_and_score(data.train_x, data.train_truth, data.test_x, base_weights=data.train_weights)
    scores.append(TaggerScores("bdt", bdt.LABEL, discriminant=bdt_scores))
    details["bdt"] = {"seconds": round(time.monotonic() - bdt_started, 1), "description": bdt.DESCRIPTION}

    step("computing rejections; drawing roc.png and rejection-vs-fc.png", 5)
    performances = [evaluate(s, data.test_truth, fc=FC) for s in scores]
    by_key: dict[str, TaggerPerformance] = {p.key: p for p in performances}
    note = (
        f"{data.description}\n$f_c$ = {FC:g}, {counts['bjets']:,} test $b$-jets\n"
        f"points with $\\geq${MIN_PASSING} background jets passing"
    )
    draw_roc(performances, "bdt", {"ujets": counts["ujets"], "cjets": counts["cjets"]}, report_dir / "roc.png", note)
    networks = [p for p in performances if p.key != "bdt"]
    draw_fc_scan(networks, by_key["bdt"], FC, report_dir / "rejection-vs-fc.png", data.description)

    taggers: dict[str, dict[str, Any]] = {}
    for performance in performances:
        taggers[performance.key] = {**performance.to_json(), **details[performance.key]}
    return {
        "objectiveMetric": run.scan.spec.objective.metric,
        "fc": FC,
        "scanWorkingPoint": SCAN_WORKING_POINT,
        "minPassing": MIN_PASSING,
        "data": data.description,
        "trainSet": {"jets": len(data.train_truth), **flavour_counts(data.train_truth)},
        "testSet": {"jets": len(data.test_truth), **counts},
        "taggers": taggers,
        "bdt": {"description": bdt.DESCRIPTION, "cFraction": bdt.C_FRACTION},
        "seconds": round(time.monotonic() - started, 1),
    }
