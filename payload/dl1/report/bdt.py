"""The BDT baseline: a boosted decision tree on the same inputs, standing in for ATLAS's MV2c10 (the paper's red star).

MV2c10 is a BDT trained to separate b-jets from a background of light and c-jets with a small c-jet fraction; its
single output is cut on directly, so it has no f_c. scikit-learn's histogram gradient boosting plays that part here.
"""

from __future__ import annotations

import numpy as np

from dl1.report.performance import SCAN_WORKING_POINT, TRUTH_LABELS, TaggerPerformance

C_FRACTION = 0.07
"""Share of c-jets in the background the BDT is trained on (MV2c10-like; MV2c00/c10/c20 differ in this share)."""

DESCRIPTION = (
    "BDT baseline: scikit-learn HistGradientBoostingClassifier trained on the same inputs and training jets as the "
    f"networks, b-jets against light and c-jets (c-jets weighted to {C_FRACTION:.0%} of the background), "
    "trained until its own early stopping ends it (converged, not capped), its log-odds output cut on directly. It "
    "stands in for MV2c10, the ATLAS BDT tagger of the paper's Figure 4; it is not MV2c10, whose numbers come from a different sample and extra soft-muon inputs."
)
LABEL = "BDT (sklearn HGB, stand-in for MV2c10)"


def training_weights(truth: np.ndarray, base: np.ndarray | None = None) -> np.ndarray:
    """Per-jet weights: signal and background weigh the same in total; c-jets make C_FRACTION of the background.

    ``base`` (the payload's flavour weights, e.g. the b-jet kinematic reweighting) shapes jets within a flavour.
    """
    is_b = truth == TRUTH_LABELS["bjets"]
    is_c = truth == TRUTH_LABELS["cjets"]
    is_light = ~is_b & ~is_c
    shape = np.ones(len(truth), dtype=float) if base is None else np.asarray(base, dtype=float)
    weights = np.zeros(len(truth), dtype=float)
    n_c, n_light = int(is_c.sum()), int(is_light.sum())
    c_share = C_FRACTION if n_c and n_light else float(n_c > 0)
    for mask, share in ((is_b, 1.0), (is_c, c_share), (is_light, 1.0 - c_share)):
        total = shape[mask].sum()
        if total > 0:
            weights[mask] = share * shape[mask] / total
    return weights * len(truth) / weights.sum()


SETTINGS = {
    "max_iter": 2000,
    "learning_rate": 0.1,
    "max_leaf_nodes": 31,
    "early_stopping": True,
    "validation_fraction": 0.1,
    "n_iter_no_change": 10,
}
"""HistGradientBoostingClassifier's settings. Trained to convergence: its own early stopping (10 iterations without
a better loss on 10% of the training jets held out) ends it, far below max_iter (a cap of 200 stopped it before
convergence, 3-4% below its converged light rejection)."""


def train_and_score(
    train_x: np.ndarray,
    train_truth: np.ndarray,
    test_x: np.ndarray,
    base_weights: np.ndarray | None = None,
    seed: int = 1,
) -> tuple[np.ndarray, int]:
    """Train the BDT on the training jets; return its discriminant (log-odds of b) for the test jets and the
    iterations it trained."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    model = HistGradientBoostingClassifier(**SETTINGS, random_state=seed)
    target = (np.asarray(train_truth) == TRUTH_LABELS["bjets"]).astype(int)
    model.fit(
        np.asarray(train_x, dtype=np.float32),
        target,
        sample_weight=training_weights(np.asarray(train_truth), base_weights),
    )
    scores = np.asarray(model.decision_function(np.asarray(test_x, dtype=np.float32)), dtype=float)
    return scores, int(model.n_iter_)


def pareto_reference(bdt: TaggerPerformance, scan_fc: float, compared_fc: float) -> dict[str, object]:
    """The BDT's point for the report's Pareto front: its light and c rejection at 77% b-efficiency on the test jets,
    named as the records name them (``light_rejection_77``, ``c_rejection_77``), with their binomial errors.

    The paper's Figure 4 sets MV2c10rnn (a red star "extracted from" ATL-PHYS-PUB-2017-013, its reference [8]) beside
    DL1 on the same inputs; this BDT stands in for it on the scan's own jets (DESCRIPTION). Its one output has no
    f_c, but the report compares it with the networks at ``compared_fc`` (rejection-vs-fc.png): on the front of a
    scan whose records use another f_c the networks sit elsewhere on their trade-off, so the point then carries a
    note (named in the legend, not drawn) rather than pass for the paper's comparison."""
    wp = round(SCAN_WORKING_POINT * 100)
    values, errors = {}, {}
    for flavour, metric in (("ujets", f"light_rejection_{wp}"), ("cjets", f"c_rejection_{wp}")):
        value, error = bdt.at(SCAN_WORKING_POINT, flavour), bdt.at(SCAN_WORKING_POINT, f"{flavour}Error")
        if value is not None:
            values[metric] = value
            if error is not None:
                errors[metric] = error
    same_fc = abs(scan_fc - compared_fc) < 1e-9
    note = None if same_fc else f"the scan's f_c = {scan_fc:g}; the report compares it at f_c = {compared_fc:g}"
    return {"label": f"{LABEL}, test jets", "values": values, "errors": errors, "note": note}
