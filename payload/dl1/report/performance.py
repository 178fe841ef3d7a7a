"""Tagging performance on the test set: discriminants, ROC curves, working points and f_c scans (atlas-ftag-tools).

Pure numpy: takes each tagger's test-set outputs and the truth labels, returns plain numbers for the plots and
metrics.json. The DL1 discriminant is D_b = ln(p_b / (f_c p_c + (1 - f_c) p_u)) (the paper's equation 1);
a tagger with one output (the BDT) is its own discriminant and does not depend on f_c.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

WORKING_POINTS = (0.60, 0.70, 0.77, 0.85)
"""b-jet efficiencies of the standard working points."""
FC = 0.018
"""f_c of the DL1/DL1r 2019 trainings, used for the ROC curves and the BDT star."""
FC_ALTERNATIVE = 0.08
"""f_c of the 2018 trainings, marked on the f_c scan too."""
SCAN_WORKING_POINT = 0.77
"""The f_c scan is done at this b-jet efficiency, as in the paper's Figure 4."""
B_EFFICIENCIES = np.round(np.linspace(0.5, 1.0, 101), 4)
"""Where ROC curves are evaluated."""
FC_VALUES = np.unique(np.round(np.concatenate([np.linspace(0.0, 1.0, 101), [FC, FC_ALTERNATIVE]]), 4))
"""Where the f_c scan is evaluated: 0 to 1, the two standard values included."""

MIN_PASSING = 5
"""ROC points where fewer background jets than this pass the cut are left out: their rejection is mostly noise."""

TRUTH_LABELS = {"bjets": 5, "cjets": 4, "ujets": 0}
"""HadronConeExclTruthLabelID of each flavour (ATLAS convention)."""
BACKGROUNDS = ("ujets", "cjets")


@dataclass
class TaggerScores:
    """One tagger's outputs on the test set: class probabilities (p_u, p_c, p_b), or a single discriminant."""

    key: str
    label: str
    probabilities: np.ndarray | None = None
    discriminant: np.ndarray | None = None

    def b_discriminant(self, fc: float) -> np.ndarray:
        """D_b at this f_c (ftag.utils.metrics.get_discriminant), or the single score of a one-output tagger."""
        if self.discriminant is not None:
            return np.asarray(self.discriminant, dtype=float)
        assert self.probabilities is not None
        from ftag import Flavours
        from ftag.utils.metrics import get_discriminant

        jets = np.zeros(len(self.probabilities), dtype=[("t_pu", "f8"), ("t_pc", "f8"), ("t_pb", "f8")])
        jets["t_pu"], jets["t_pc"], jets["t_pb"] = self.probabilities.T
        flavours = [Flavours["bjets"], Flavours["cjets"], Flavours["ujets"]]
        return np.asarray(get_discriminant(jets, "t", Flavours["bjets"], flavours, {"fc": fc, "fu": 1.0 - fc}))

    @property
    def depends_on_fc(self) -> bool:
        return self.discriminant is None


def _finite(values: np.ndarray | float) -> list[float | None]:
    """JSON-safe: infinite rejection (no background jet passes the cut) becomes None."""
    array = np.atleast_1d(np.asarray(values, dtype=float))
    return [float(v) if math.isfinite(v) else None for v in array]


@dataclass
class TaggerPerformance:
    """Numbers behind the plots for one tagger."""

    key: str
    label: str
    fc: float | None
    """f_c of the ROC curves and working points (None for a one-output tagger)."""
    b_efficiency: list[float]
    rejection: dict[str, list[float | None]]
    """ROC curves: rejection of each background flavour at each b_efficiency (None where fewer than MIN_PASSING
    background jets pass the cut)."""
    working_points: dict[str, dict[str, float | None]]
    """{"77": {"cut": D_b cut, "ujets": rejection, "cjets": rejection, "ujetsPassing": jets, ...}, ...}: the
    rejections with how many background jets passed the cut (few passing: a rough number)."""
    fc_scan: dict[str, list[float | None]] = field(default_factory=dict)
    """{"fc": [...], "ujets": [...], "cjets": [...]} at SCAN_WORKING_POINT; empty for a one-output tagger."""

    def at(self, working_point: float, flavour: str) -> float | None:
        return self.working_points[f"{round(working_point * 100)}"][flavour]

    def to_json(self) -> dict[str, object]:
        return {
            "label": self.label,
            "fc": self.fc,
            "workingPoints": self.working_points,
            "roc": {"bEfficiency": self.b_efficiency, **self.rejection},
            "fcScan": self.fc_scan or None,
        }


def split_by_flavour(labels: np.ndarray, values: np.ndarray) -> dict[str, np.ndarray]:
    """Values of b-, c- and light-jets (taus and anything else are left out, as in ATLAS b-tagging plots)."""
    return {flavour: values[labels == truth] for flavour, truth in TRUTH_LABELS.items()}


def flavour_counts(labels: np.ndarray) -> dict[str, int]:
    return {flavour: int(np.sum(labels == truth)) for flavour, truth in TRUTH_LABELS.items()}


def _rejections(by_flavour: dict[str, np.ndarray], efficiencies: np.ndarray) -> dict[str, np.ndarray]:
    from ftag.utils.metrics import calculate_rejection

    return {
        flavour: np.atleast_1d(calculate_rejection(by_flavour["bjets"], by_flavour[flavour], target_eff=efficiencies))
        for flavour in BACKGROUNDS
    }


def evaluate(scores: TaggerScores, labels: np.ndarray, fc: float = FC) -> TaggerPerformance:
    """ROC curves, working points and (for a three-output tagger) the f_c scan of one tagger."""
    from ftag.utils.metrics import calculate_efficiency

    labels = np.asarray(labels)
    counts = flavour_counts(labels)
    missing = [f for f, n in counts.items() if n == 0]
    if missing:
        raise ValueError(f"the test set has no {', '.join(missing)}; cannot compute rejections")
    by_flavour = split_by_flavour(labels, scores.b_discriminant(fc))
    roc = _rejections(by_flavour, B_EFFICIENCIES)
    for flavour in BACKGROUNDS:
        with np.errstate(divide="ignore"):
            passing = counts[flavour] / roc[flavour]
        roc[flavour] = np.where(passing >= MIN_PASSING, roc[flavour], np.inf)
    points = np.array(WORKING_POINTS)
    at_points = _rejections(by_flavour, points)
    _, cuts = calculate_efficiency(by_flavour["bjets"], by_flavour["bjets"], target_eff=points, return_cuts=True)
    working_points: dict[str, dict[str, float | None]] = {}
    for i, point in enumerate(WORKING_POINTS):
        working_points[f"{round(point * 100)}"] = {
            "cut": _finite(np.atleast_1d(cuts)[i])[0],
            **{flavour: _finite(at_points[flavour][i])[0] for flavour in BACKGROUNDS},
            **{f"{flavour}Passing": int(counts[flavour] / at_points[flavour][i] + 0.5) for flavour in BACKGROUNDS},
        }
    fc_scan: dict[str, list[float | None]] = {}
    if scores.depends_on_fc:
        scanned: dict[str, list[float]] = {flavour: [] for flavour in BACKGROUNDS}
        for value in FC_VALUES:
            rejection = _rejections(
                split_by_flavour(labels, scores.b_discriminant(float(value))), np.array([SCAN_WORKING_POINT])
            )
            for flavour in BACKGROUNDS:
                scanned[flavour].append(float(rejection[flavour][0]))
        fc_scan = {"fc": [float(v) for v in FC_VALUES], **{f: _finite(np.array(v)) for f, v in scanned.items()}}
    return TaggerPerformance(
        key=scores.key,
        label=scores.label,
        fc=fc if scores.depends_on_fc else None,
        b_efficiency=[float(v) for v in B_EFFICIENCIES],
        rejection={flavour: _finite(values) for flavour, values in roc.items()},
        working_points=working_points,
        fc_scan=fc_scan,
    )
