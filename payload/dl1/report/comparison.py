"""The best, the median and the worst network against a BDT on the test set: the paper's Figure 4, ROC curves with
their statistical uncertainties, and c-tagging from the same networks.

The networks are the models the scan kept (spec.artifacts; evaluated, not trained) or, with ``--retrain``, trained
again. The payload is reached only through dl1.report.retrain (the one module that knows dl1's API); this module
orchestrates, caches (dl1.report.cache: test labels, scores, the BDT), computes the numbers
(dl1.report.performance) and draws (dl1.report.tagging_plots).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from dl1.report import bdt
from dl1.report import retrain as payload
from dl1.report.cache import Cache, data_key, digest, folder_key
from dl1.report.performance import (
    C_WORKING_POINTS,
    FB,
    FC,
    MIN_PASSING,
    SCAN_WORKING_POINT,
    TaggerPerformance,
    TaggerScores,
    evaluate,
    flavour_counts,
)
from dl1.report.tagging_plots import draw_c_tagging, draw_fc_scan, draw_roc
from hpscan.report.plugin import Step
from hpscan.report.rundir import Ranked, ReportError, ScanRun

CACHE_FOLDER = Path("cache") / "dl1-report"
"""Where in the run folder the report keeps what it need not compute twice."""
TRUTH_ORDER = np.array([0, 4, 5])
"""HadronConeExclTruthLabelID of the payload's classes 0, 1, 2 (u, c, b)."""


def _labels(run: ScanRun, picks: dict[str, Ranked]) -> dict[str, str]:
    metric = run.scan.spec.objective.metric
    by_id: dict[str, list[str]] = {}
    for key, ranked in picks.items():
        by_id.setdefault(ranked.id, []).append(key)
    return {key: f"{' = '.join(by_id[ranked.id])} ({metric} {ranked.value:.4g})" for key, ranked in picks.items()}


def _model_info(folder: Path) -> dict[str, Any]:
    try:
        info = json.loads((folder / "model.json").read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


class _Jets:
    """The payload's jets, loaded only when something is not in the cache."""

    def __init__(self, settings: dict[str, Any], step: Step) -> None:
        self.settings = settings
        self.step = step
        self._data: payload.JetData | None = None
        self.loaded_seconds: float | None = None

    def get(self, index: int) -> payload.JetData:
        if self._data is None:
            self.step("generating/reading the training and test jets (dl1 payload)", index)
            started = time.monotonic()
            self._data = payload.load_jets(self.settings)
            self.loaded_seconds = round(time.monotonic() - started, 1)
        return self._data


def _performance(
    scores: TaggerScores, truth: np.ndarray, cache: Cache, source: str | None, hits: list[str]
) -> TaggerPerformance:
    """evaluate(), or its numbers from the cache when the tagger's scores came from a cache entry."""
    name = f"performance-{digest(source, FC, FB)}" if source else None
    stored = cache.load_json(name) if name else None
    if stored is not None:
        hits.append(f"{scores.key} rejections")
        return TaggerPerformance.from_json(scores.key, scores.label, stored)
    performance = evaluate(scores, truth, fc=FC)
    if name:
        cache.save_json(name, performance.to_json())
    return performance


def compare(run: ScanRun, report_dir: Path, step: Step, retrain: bool = False) -> dict[str, Any]:
    """Write roc.png, rejection-vs-fc.png and c-tagging.png into report_dir; return the numbers behind them
    (metrics.json). Tells ``step`` of steps 0 to 5 (DL1ReportPlugin.steps = 6)."""
    started = time.monotonic()
    settings = run.scan.spec.payload.settings
    cache = Cache(run.run_dir / CACHE_FOLDER)
    jets_key = data_key(payload.data_settings(settings))
    description = payload.describe(settings)
    jets = _Jets(settings, step)
    picks = run.picks()
    models = None if retrain else run.picked_models()
    if models is None and not retrain:
        raise ReportError(f"{run.run_dir}: the scan kept no model of its best, median and worst; use --retrain")
    hits: list[str] = []

    step("reading the test jets", 0)
    test = cache.load(f"test-{jets_key}")
    if test is None:
        data = jets.get(0)
        train_counts = flavour_counts(data.train_truth)
        weights = data.test_weights if data.test_weights is not None else np.ones(len(data.test_truth))
        test = {
            "truth": data.test_truth.astype(np.int32),
            "weights": weights.astype(np.float32),
            "train": np.array([len(data.train_truth), *(train_counts[f] for f in ("bjets", "cjets", "ujets"))]),
        }
        cache.save(f"test-{jets_key}", **test)
    else:
        hits.append("test jets")
    truth = test["truth"]
    classes = np.searchsorted(TRUTH_ORDER, truth)
    counts = flavour_counts(truth)
    if not all(counts.values()):
        raise ReportError(f"the test set lacks a flavour ({counts}); use more jets in spec.payload.settings.data")

    labels = _labels(run, picks)
    outputs: dict[str, np.ndarray] = {}
    source_of: dict[str, str] = {}
    """Cache name of each combination's scores (kept models): its rejections are cached under it too."""
    sources: dict[str, str] = {}
    scores: list[TaggerScores] = []
    details: dict[str, dict[str, Any]] = {}
    for index, (key, ranked) in enumerate(picks.items(), start=1):
        entry: dict[str, Any] = {}
        if ranked.id not in outputs:  # one succeeded combination is best, median and worst at once
            if models is not None:
                folder = models[key]
                name = f"scores-{folder_key(folder)}-{jets_key}"
                source_of[ranked.id] = name
                step(f"evaluating the kept {key} model {ranked.id}", index)
                cached = cache.load(name)
                if cached is None:
                    network = payload.evaluate_saved(jets.get(index), folder)
                    stored = network.probabilities.astype(np.float32)  # the network's own precision
                    cache.save(name, probabilities=stored)
                    outputs[ranked.id] = stored.astype(float)
                    entry["seconds"] = round(network.seconds, 1)
                else:
                    hits.append(f"{key} scores")
                    outputs[ranked.id] = cached["probabilities"].astype(float)
                info = _model_info(folder)
                entry.update(
                    {
                        "source": "kept model",
                        "model": str(folder),
                        "epochs": info.get("epochs"),
                        "validationLoss": info.get("metrics", {}).get("val_loss"),
                    }
                )
            else:
                what = f"retraining the {key} combination {ranked.id}"
                step(what, index)

                def epoch_done(epoch: int, most: int, what: str = what, index: int = index) -> None:
                    step(f"{what} (epoch {epoch} of at most {most})", index)

                network = payload.train(
                    jets.get(index), ranked.record.parameters, settings, key=ranked.id, on_epoch=epoch_done
                )
                outputs[ranked.id] = network.probabilities
                entry.update(
                    {
                        "source": "retrained",
                        "epochs": network.epochs,
                        "seconds": round(network.seconds, 1),
                        "validationLoss": network.validation_loss,
                    }
                )
            details[ranked.id] = entry
        probabilities = outputs[ranked.id]
        if ranked.id in source_of:
            sources[key] = source_of[ranked.id]
        scores.append(TaggerScores(key, labels[key], probabilities=probabilities))
        details[key] = {
            "combination": {
                "id": ranked.id,
                "rank": ranked.rank + 1,
                "parameters": ranked.record.parameters,
                "scanValue": ranked.value,
            },
            **details[ranked.id],
            "testLoss": payload.weighted_cross_entropy(probabilities, classes, test["weights"]),
        }

    step("training the BDT baseline (scikit-learn, stand-in for MV2c10), cached by data and settings", 4)
    bdt_name = f"bdt-{digest(jets_key, bdt.SETTINGS, bdt.C_FRACTION)}"
    cached_bdt = cache.load(bdt_name)
    if cached_bdt is None:
        data = jets.get(4)
        bdt_started = time.monotonic()
        bdt_scores, iterations = bdt.train_and_score(
            data.train_x, data.train_truth, data.test_x, base_weights=data.train_weights
        )
        bdt_seconds = round(time.monotonic() - bdt_started, 1)
        cache.save(bdt_name, scores=bdt_scores, iterations=iterations, seconds=bdt_seconds)
    else:
        hits.append("BDT")
        bdt_scores = cached_bdt["scores"]
        iterations, bdt_seconds = int(cached_bdt["iterations"]), float(cached_bdt["seconds"])
    scores.append(TaggerScores("bdt", bdt.LABEL, discriminant=bdt_scores))
    sources["bdt"] = bdt_name
    details["bdt"] = {
        "seconds": bdt_seconds,
        "iterations": iterations,
        "cached": cached_bdt is not None,
        "description": bdt.DESCRIPTION,
    }

    step("computing rejections and uncertainties; drawing roc.png, rejection-vs-fc.png, c-tagging.png", 5)
    performances = [_performance(s, truth, cache, sources.get(s.key), hits) for s in scores]
    by_key: dict[str, TaggerPerformance] = {p.key: p for p in performances}
    n_background = {"ujets": counts["ujets"], "cjets": counts["cjets"], "bjets": counts["bjets"]}
    note = (
        f"{description}\n$f_c$ = {FC:g}, {counts['bjets']:,} test $b$-jets, bands: stat. unc.\n"
        f"points with $\\geq${MIN_PASSING} background jets passing"
    )
    draw_roc(performances, "bdt", n_background, report_dir / "roc.png", note)
    networks = [p for p in performances if p.key != "bdt"]
    draw_fc_scan(networks, by_key["bdt"], FC, report_dir / "rejection-vs-fc.png", description)
    c_note = f"{description}\n$f_b$ = {FB:g}, {counts['cjets']:,} test $c$-jets, bands: stat. unc."
    draw_c_tagging(networks, n_background, report_dir / "c-tagging.png", c_note)

    taggers: dict[str, dict[str, Any]] = {}
    for performance in performances:
        taggers[performance.key] = {**performance.to_json(), **details[performance.key]}
    train = [int(v) for v in test["train"]]
    return {
        "mode": "retrained" if retrain else "kept models",
        "objectiveMetric": run.scan.spec.objective.metric,
        "fc": FC,
        "fb": FB,
        "scanWorkingPoint": SCAN_WORKING_POINT,
        "cWorkingPoints": list(C_WORKING_POINTS),
        "minPassing": MIN_PASSING,
        "data": description,
        "trainSet": {"jets": train[0], "bjets": train[1], "cjets": train[2], "ujets": train[3]},
        "testSet": {"jets": len(truth), **counts},
        "taggers": taggers,
        "bdt": {"description": bdt.DESCRIPTION, "cFraction": bdt.C_FRACTION, "iterations": iterations},
        "cache": {"folder": str(run.run_dir / CACHE_FOLDER), "hits": hits, "jetsLoadSeconds": jets.loaded_seconds},
        "seconds": round(time.monotonic() - started, 1),
    }
