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


class _Comparison:
    """One report's state: the cache, the jets (loaded at most once), and what came from the cache."""

    def __init__(self, run: ScanRun, step: Step) -> None:
        self.run = run
        self.step = step
        self.settings = run.scan.spec.payload.settings
        self.cache = Cache(run.run_dir / CACHE_FOLDER)
        self.jets_key = data_key(payload.data_settings(self.settings))
        self.jets = _Jets(self.settings, step)
        self.hits: list[str] = []

    def test_set(self) -> dict[str, np.ndarray]:
        """The test jets' truth and weights and the training set's flavour counts (step 0)."""
        self.step("reading the test jets", 0)
        test = self.cache.load(f"test-{self.jets_key}")
        if test is not None:
            self.hits.append("test jets")
            return test
        data = self.jets.get(0)
        train_counts = flavour_counts(data.train_truth)
        weights = data.test_weights if data.test_weights is not None else np.ones(len(data.test_truth))
        test = {
            "truth": data.test_truth.astype(np.int32),
            "weights": weights.astype(np.float32),
            "train": np.array([len(data.train_truth), *(train_counts[f] for f in ("bjets", "cjets", "ujets"))]),
        }
        self.cache.save(f"test-{self.jets_key}", **test)
        return test

    def kept_model(self, key: str, ranked: Ranked, folder: Path, index: int) -> tuple[np.ndarray, dict[str, Any]]:
        """A kept model's class probabilities on the test jets (cached by folder and data), and its details."""
        name = self.scores_name(folder)
        self.step(f"evaluating the kept {key} model {ranked.id}", index)
        entry: dict[str, Any] = {}
        cached = self.cache.load(name)
        if cached is None:
            network = payload.evaluate_saved(self.jets.get(index), folder)
            stored = network.probabilities.astype(np.float32)  # the network's own precision
            self.cache.save(name, probabilities=stored)
            probabilities = stored.astype(float)
            entry["seconds"] = round(network.seconds, 1)
        else:
            self.hits.append(f"{key} scores")
            probabilities = cached["probabilities"].astype(float)
        info = _model_info(folder)
        entry.update(
            {
                "source": "kept model",
                "model": str(folder),
                "epochs": info.get("epochs"),
                "validationLoss": info.get("metrics", {}).get("val_loss"),
            }
        )
        return probabilities, entry

    def scores_name(self, folder: Path) -> str:
        """Cache name of a kept model's scores: its rejections are cached under it too."""
        return f"scores-{folder_key(folder)}-{self.jets_key}"

    def retrained(self, key: str, ranked: Ranked, index: int) -> tuple[np.ndarray, dict[str, Any]]:
        """A combination trained again (never cached: retraining is what was asked for), and its details."""
        what = f"retraining the {key} combination {ranked.id}"
        self.step(what, index)

        def epoch_done(epoch: int, most: int) -> None:
            self.step(f"{what} (epoch {epoch} of at most {most})", index)

        network = payload.train(
            self.jets.get(index), ranked.record.parameters, self.settings, key=ranked.id, on_epoch=epoch_done
        )
        entry = {
            "source": "retrained",
            "epochs": network.epochs,
            "seconds": round(network.seconds, 1),
            "validationLoss": network.validation_loss,
        }
        return network.probabilities, entry

    def networks(
        self, picks: dict[str, Ranked], models: dict[str, Path] | None, test: dict[str, np.ndarray]
    ) -> tuple[list[TaggerScores], dict[str, dict[str, Any]], dict[str, str]]:
        """The best, median and worst networks' scores (steps 1 to 3), their details, and the cache name of each
        kept model's scores."""
        labels = _labels(self.run, picks)
        classes = np.searchsorted(TRUTH_ORDER, test["truth"])
        outputs: dict[str, np.ndarray] = {}
        source_of: dict[str, str] = {}
        sources: dict[str, str] = {}
        scores: list[TaggerScores] = []
        details: dict[str, dict[str, Any]] = {}
        for index, (key, ranked) in enumerate(picks.items(), start=1):
            if ranked.id not in outputs:  # one succeeded combination is best, median and worst at once
                if models is not None:
                    source_of[ranked.id] = self.scores_name(models[key])
                    outputs[ranked.id], details[ranked.id] = self.kept_model(key, ranked, models[key], index)
                else:
                    outputs[ranked.id], details[ranked.id] = self.retrained(key, ranked, index)
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
        return scores, details, sources

    def bdt(self) -> tuple[np.ndarray, str, dict[str, Any]]:
        """The BDT baseline's scores (step 4), its cache name and its details; trained once per data and settings."""
        self.step("training the BDT baseline (scikit-learn, stand-in for MV2c10), cached by data and settings", 4)
        name = f"bdt-{digest(self.jets_key, bdt.SETTINGS, bdt.C_FRACTION)}"
        cached = self.cache.load(name)
        if cached is None:
            data = self.jets.get(4)
            started = time.monotonic()
            scores, iterations = bdt.train_and_score(
                data.train_x, data.train_truth, data.test_x, base_weights=data.train_weights
            )
            seconds = round(time.monotonic() - started, 1)
            self.cache.save(name, scores=scores, iterations=iterations, seconds=seconds)
        else:
            self.hits.append("BDT")
            scores = cached["scores"]
            iterations, seconds = int(cached["iterations"]), float(cached["seconds"])
        details = {"seconds": seconds, "iterations": iterations, "cached": cached is not None}
        return scores, name, {**details, "description": bdt.DESCRIPTION}


def _draw(performances: list[TaggerPerformance], counts: dict[str, int], description: str, report_dir: Path) -> None:
    """roc.png, rejection-vs-fc.png and c-tagging.png."""
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


def compare(run: ScanRun, report_dir: Path, step: Step, retrain: bool = False) -> dict[str, Any]:
    """Write roc.png, rejection-vs-fc.png and c-tagging.png into report_dir; return the numbers behind them
    (metrics.json). Tells ``step`` of steps 0 to 5 (DL1ReportPlugin.steps = 6)."""
    started = time.monotonic()
    comparison = _Comparison(run, step)
    description = payload.describe(comparison.settings)
    picks = run.picks()
    models = None if retrain else run.picked_models()
    if models is None and not retrain:
        raise ReportError(f"{run.run_dir}: the scan kept no model of its best, median and worst; use --retrain")
    test = comparison.test_set()
    truth = test["truth"]
    counts = flavour_counts(truth)
    if not all(counts.values()):
        raise ReportError(f"the test set lacks a flavour ({counts}); use more jets in spec.payload.settings.data")

    scores, details, sources = comparison.networks(picks, models, test)
    bdt_scores, sources["bdt"], details["bdt"] = comparison.bdt()
    scores.append(TaggerScores("bdt", bdt.LABEL, discriminant=bdt_scores))

    step("computing rejections and uncertainties; drawing roc.png, rejection-vs-fc.png, c-tagging.png", 5)
    performances = [_performance(s, truth, comparison.cache, sources.get(s.key), comparison.hits) for s in scores]
    by_key = {p.key: p for p in performances}
    _draw(performances, counts, description, report_dir)
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
        "taggers": {p.key: {**p.to_json(), **details[p.key]} for p in performances},
        "referencePoints": [bdt.pareto_reference(by_key["bdt"], payload.scan_fc(comparison.settings), FC)],
        "bdt": {
            "description": bdt.DESCRIPTION,
            "cFraction": bdt.C_FRACTION,
            "iterations": details["bdt"]["iterations"],
        },
        "cache": {
            "folder": str(run.run_dir / CACHE_FOLDER),
            "hits": comparison.hits,
            "jetsLoadSeconds": comparison.jets.loaded_seconds,
        },
        "seconds": round(time.monotonic() - started, 1),
    }
