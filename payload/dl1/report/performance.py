"""Tagging performance on the test set: discriminants, ROC curves, working points, f_c scans and c-tagging.

Pure numpy over atlas-ftag-tools: ``get_discriminant`` (D_b, D_c), ``calculate_rejection`` and
``calculate_efficiency`` (cuts, rejections) and ``calculate_rejection_error`` (binomial uncertainties). Takes each
tagger's test-set outputs and the truth labels, returns plain numbers for the plots and metrics.json. The DL1
discriminant is D_b = ln(p_b / (f_c p_c + (1 - f_c) p_u)) (the paper's equation 1); the c-tagging discriminant
from the same outputs is D_c = ln(p_c / (f_b p_b + (1 - f_b) p_u)); a tagger with one output (the BDT) is its own
b-tagging discriminant, does not depend on f_c and has no c-tagging.

Statistical uncertainties are binomial: a rejection R measured with N background jets has
sigma_R = R^2 sqrt((1/R)(1 - 1/R) / N), about R / sqrt(jets passing the cut). The uncertainty of the cut itself
(from the finite number of signal jets) is left out, as in puma's ROC bands.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

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
FC_VALUES = np.unique(np.round(np.concatenate([np.linspace(0.0, 1.0, 51), [0.005, 0.01, FC, 0.03, FC_ALTERNATIVE]]), 4))
"""Where the f_c scan is evaluated: 0 to 1, the two standard values included."""

FB = 0.2
"""f_b of the c-tagging discriminant D_c (the share of b-jets in its background)."""
C_WORKING_POINTS = (0.20, 0.30, 0.40, 0.50)
"""c-jet efficiencies of the c-tagging working points."""
C_EFFICIENCIES = np.round(np.linspace(0.1, 0.7, 61), 4)
"""Where c-tagging ROC curves are evaluated."""
C_BACKGROUNDS = ("ujets", "bjets")

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

    def c_discriminant(self, fb: float) -> np.ndarray | None:
        """D_c at this f_b (ftag.utils.metrics.get_discriminant); None for a one-output tagger."""
        if self.probabilities is None:
            return None
        from ftag import Flavours
        from ftag.utils.metrics import get_discriminant

        jets = np.zeros(len(self.probabilities), dtype=[("t_pu", "f8"), ("t_pc", "f8"), ("t_pb", "f8")])
        jets["t_pu"], jets["t_pc"], jets["t_pb"] = self.probabilities.T
        flavours = [Flavours["bjets"], Flavours["cjets"], Flavours["ujets"]]
        return np.asarray(get_discriminant(jets, "t", Flavours["cjets"], flavours, {"fb": fb, "fu": 1.0 - fb}))

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
    """{"fc": [...], "ujets": [...], "cjets": [...], "ujetsError": [...], "cjetsError": [...]} at
    SCAN_WORKING_POINT; empty for a one-output tagger."""
    rejection_error: dict[str, list[float | None]] = field(default_factory=dict)
    """Binomial uncertainty of each ROC point's rejection (None where the rejection is)."""
    c_tagging: dict[str, object] = field(default_factory=dict)
    """{"fb", "cEfficiency", "ujets", "bjets", "ujetsError", "bjetsError", "workingPoints"}: D_c's ROC curves and
    working points (c-jet efficiency against light and b rejection); empty for a one-output tagger."""

    def at(self, working_point: float, flavour: str) -> float | None:
        return self.working_points[f"{round(working_point * 100)}"][flavour]

    @classmethod
    def from_json(cls, key: str, label: str, data: dict[str, Any]) -> TaggerPerformance:
        """The inverse of ``to_json`` (for the report's cache); ``label`` replaces the stored one."""
        roc = dict(data["roc"])
        return cls(
            key=key,
            label=label,
            fc=data["fc"],
            b_efficiency=roc.pop("bEfficiency"),
            rejection=roc,
            working_points=data["workingPoints"],
            fc_scan=data.get("fcScan") or {},
            rejection_error=data.get("rocError") or {},
            c_tagging=data.get("cTagging") or {},
        )

    def to_json(self) -> dict[str, object]:
        return {
            "label": self.label,
            "fc": self.fc,
            "workingPoints": self.working_points,
            "roc": {"bEfficiency": self.b_efficiency, **self.rejection},
            "rocError": self.rejection_error or None,
            "fcScan": self.fc_scan or None,
            "cTagging": self.c_tagging or None,
        }


def split_by_flavour(labels: np.ndarray, values: np.ndarray) -> dict[str, np.ndarray]:
    """Values of b-, c- and light-jets (taus and anything else are left out, as in ATLAS b-tagging plots)."""
    return {flavour: values[labels == truth] for flavour, truth in TRUTH_LABELS.items()}


def flavour_counts(labels: np.ndarray) -> dict[str, int]:
    return {flavour: int(np.sum(labels == truth)) for flavour, truth in TRUTH_LABELS.items()}


def _rejections(
    by_flavour: dict[str, np.ndarray],
    efficiencies: np.ndarray,
    signal: str = "bjets",
    backgrounds: tuple[str, ...] = BACKGROUNDS,
) -> dict[str, np.ndarray]:
    from ftag.utils.metrics import calculate_rejection

    return {
        flavour: np.atleast_1d(calculate_rejection(by_flavour[signal], by_flavour[flavour], target_eff=efficiencies))
        for flavour in backgrounds
    }


def rejection_errors(rejection: np.ndarray, n_background: int) -> np.ndarray:
    """Binomial uncertainty of rejections measured with ``n_background`` jets (ftag's calculate_rejection_error);
    NaN where the rejection is infinite or undefined."""
    from ftag.utils.metrics import calculate_rejection_error

    rejection = np.atleast_1d(np.asarray(rejection, dtype=float))
    errors = np.full(rejection.shape, np.nan)
    ok = np.isfinite(rejection) & (rejection >= 1.0)
    if ok.any() and n_background > 0:
        errors[ok] = calculate_rejection_error(rejection[ok], n_background)
    return errors


def without_few_passing(rejection: np.ndarray, n_background: int) -> np.ndarray:
    """The rejections, infinite (left out of the ROC curve) where fewer than MIN_PASSING background jets pass the
    cut. The jets passing are n / R, rounded: in floating point n / (n / 5) is 4.999... for some n (23, 39, ...)."""
    with np.errstate(divide="ignore"):
        passing = np.rint(n_background / rejection)
    return np.where(passing >= MIN_PASSING, rejection, np.inf)


def _passing(rejection: float, n_background: int) -> int | None:
    return int(n_background / rejection + 0.5) if math.isfinite(rejection) and rejection > 0 else 0


def c_tagging(scores: TaggerScores, labels: np.ndarray, fb: float = FB) -> dict[str, object]:
    """D_c's c-jet efficiency against light and b rejection, and its working points; {} for a one-output tagger."""
    from ftag.utils.metrics import calculate_efficiency

    discriminant = scores.c_discriminant(fb)
    if discriminant is None:
        return {}
    counts = flavour_counts(labels)
    by_flavour = split_by_flavour(np.asarray(labels), discriminant)
    roc = _rejections(by_flavour, C_EFFICIENCIES, "cjets", C_BACKGROUNDS)
    for flavour in C_BACKGROUNDS:
        roc[flavour] = without_few_passing(roc[flavour], counts[flavour])
    points = np.array(C_WORKING_POINTS)
    at_points = _rejections(by_flavour, points, "cjets", C_BACKGROUNDS)
    _, cuts = calculate_efficiency(by_flavour["cjets"], by_flavour["cjets"], target_eff=points, return_cuts=True)
    working_points: dict[str, dict[str, float | int | None]] = {}
    for i, point in enumerate(C_WORKING_POINTS):
        entry: dict[str, float | int | None] = {"cut": _finite(np.atleast_1d(cuts)[i])[0]}
        for flavour in C_BACKGROUNDS:
            value = float(at_points[flavour][i])
            entry[flavour] = _finite(value)[0]
            entry[f"{flavour}Error"] = _finite(rejection_errors(np.array([value]), counts[flavour]))[0]
            entry[f"{flavour}Passing"] = _passing(value, counts[flavour])
            entry[f"{flavour}Total"] = counts[flavour]
        working_points[f"{round(point * 100)}"] = entry
    return {
        "fb": fb,
        "cEfficiency": [float(v) for v in C_EFFICIENCIES],
        **{flavour: _finite(roc[flavour]) for flavour in C_BACKGROUNDS},
        **{f"{flavour}Error": _finite(rejection_errors(roc[flavour], counts[flavour])) for flavour in C_BACKGROUNDS},
        "workingPoints": working_points,
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
        roc[flavour] = without_few_passing(roc[flavour], counts[flavour])
    points = np.array(WORKING_POINTS)
    at_points = _rejections(by_flavour, points)
    _, cuts = calculate_efficiency(by_flavour["bjets"], by_flavour["bjets"], target_eff=points, return_cuts=True)
    working_points: dict[str, dict[str, float | None]] = {}
    for i, point in enumerate(WORKING_POINTS):
        entry: dict[str, float | None] = {"cut": _finite(np.atleast_1d(cuts)[i])[0]}
        for flavour in BACKGROUNDS:
            value = float(at_points[flavour][i])
            entry[flavour] = _finite(value)[0]
            entry[f"{flavour}Error"] = _finite(rejection_errors(np.array([value]), counts[flavour]))[0]
            entry[f"{flavour}Passing"] = _passing(value, counts[flavour])
            entry[f"{flavour}Total"] = counts[flavour]
        working_points[f"{round(point * 100)}"] = entry
    fc_scan: dict[str, list[float | None]] = {}
    if scores.depends_on_fc:
        scanned: dict[str, list[float]] = {flavour: [] for flavour in BACKGROUNDS}
        for value in FC_VALUES:
            rejection = _rejections(
                split_by_flavour(labels, scores.b_discriminant(float(value))), np.array([SCAN_WORKING_POINT])
            )
            for flavour in BACKGROUNDS:
                scanned[flavour].append(float(rejection[flavour][0]))
        fc_scan = {
            "fc": [float(v) for v in FC_VALUES],
            **{f: _finite(np.array(v)) for f, v in scanned.items()},
            **{f"{f}Error": _finite(rejection_errors(np.array(v), counts[f])) for f, v in scanned.items()},
        }
    return TaggerPerformance(
        key=scores.key,
        label=scores.label,
        fc=fc if scores.depends_on_fc else None,
        b_efficiency=[float(v) for v in B_EFFICIENCIES],
        rejection={flavour: _finite(values) for flavour, values in roc.items()},
        working_points=working_points,
        fc_scan=fc_scan,
        rejection_error={
            flavour: _finite(rejection_errors(values, counts[flavour])) for flavour, values in roc.items()
        },
        c_tagging=c_tagging(scores, labels),
    )
