"""Tagging performance of a trained network on a test set, computed with atlas-ftag-tools.

Outputs are ordered (u, c, b). D_b = ln(p_b / (f_c p_c + (1 - f_c) p_u)); D_c = ln(p_c / (f_b p_b + (1 - f_b) p_u)).
Rejections come with their binomial statistical uncertainty (``ftag.utils.metrics.calculate_rejection_error``) and
the number of background jets passing the cut.
"""

from __future__ import annotations

from typing import Any

import numpy as np

WORKING_POINTS = (0.60, 0.70, 0.77, 0.85)
"""b-tagging efficiencies at which rejections are quoted."""
C_WORKING_POINTS = (0.20, 0.30, 0.40, 0.50)
"""c-tagging efficiencies at which D_c's rejections are quoted."""

TAGGER = "dl1"


def _outputs_as_jets(probs: np.ndarray) -> np.ndarray:
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != 3:
        raise ValueError(f"outputs must have shape (jets, 3) ordered (u, c, b), got {probs.shape}")
    jets = np.zeros(len(probs), dtype=[(f"{TAGGER}_pu", "f8"), (f"{TAGGER}_pc", "f8"), (f"{TAGGER}_pb", "f8")])
    jets[f"{TAGGER}_pu"], jets[f"{TAGGER}_pc"], jets[f"{TAGGER}_pb"] = probs[:, 0], probs[:, 1], probs[:, 2]
    return jets


def _flavours():
    from ftag import Flavours, LabelContainer

    return LabelContainer.from_list([Flavours["bjets"], Flavours["cjets"], Flavours["ujets"]]), Flavours


def b_discriminant(probs: np.ndarray, f_c: float = 0.018) -> np.ndarray:
    """D_b per jet (``ftag.utils.metrics.get_discriminant``)."""
    from ftag.utils.metrics import get_discriminant

    flavours, all_flavours = _flavours()
    return get_discriminant(
        _outputs_as_jets(probs), TAGGER, all_flavours["bjets"], flavours, {"fc": f_c, "fu": 1.0 - f_c}
    )


def c_discriminant(probs: np.ndarray, f_b: float = 0.2) -> np.ndarray:
    """D_c per jet, the c-tagging discriminant from the same outputs."""
    from ftag.utils.metrics import get_discriminant

    flavours, all_flavours = _flavours()
    return get_discriminant(
        _outputs_as_jets(probs), TAGGER, all_flavours["cjets"], flavours, {"fb": f_b, "fu": 1.0 - f_b}
    )


def rejections(
    disc: np.ndarray, y: np.ndarray, signal: int, efficiencies, weights: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Rejection of each other class (0 u, 1 c, 2 b) at the signal ``efficiencies``."""
    from ftag.utils.metrics import calculate_rejection

    names = {0: "light", 1: "c", 2: "b"}
    sig = y == signal
    out = {}
    for k in (0, 1, 2):
        if k == signal:
            continue
        bkg = y == k
        out[names[k]] = np.atleast_1d(
            calculate_rejection(
                disc[sig],
                disc[bkg],
                target_eff=np.asarray(efficiencies, dtype=float),
                sig_weights=None if weights is None else weights[sig],
                bkg_weights=None if weights is None else weights[bkg],
            )
        )
    return out


def rejection_error(rejection: float, n_background: int) -> float | None:
    """Binomial uncertainty of a rejection measured with ``n_background`` jets; None when it is infinite."""
    from ftag.utils.metrics import calculate_rejection_error

    if not np.isfinite(rejection) or rejection < 1.0 or n_background <= 0:
        return None
    return float(np.atleast_1d(calculate_rejection_error(np.array([rejection]), n_background))[0])


def _point(rejection: float, n_background: int) -> dict[str, float | int | None]:
    passing = int(n_background / rejection + 0.5) if np.isfinite(rejection) and rejection > 0 else 0
    return {"error": rejection_error(rejection, n_background), "passing": passing}


def tagging_metrics(
    probs: np.ndarray,
    y: np.ndarray,
    f_c: float = 0.018,
    f_b: float = 0.2,
    roc_points: int = 100,
    fc_scan: tuple[float, ...] = (0.0, 0.005, 0.01, 0.018, 0.03, 0.05, 0.08, 0.12, 0.2, 0.3, 0.5, 0.7, 1.0),
) -> dict[str, Any]:
    """Tagging performance of outputs ``probs`` (jets, 3: u, c, b) for labels ``y`` (0 u, 1 c, 2 b).

    Returns JSON-ready values: light and c rejection at the 60/70/77/85% working points with their D_b cuts,
    ROC arrays (b efficiency 0.5..1 vs light and c rejection), rejection vs f_c at 77%, and the c-tagging
    rejections (light and b) at the c-tagging working points (C_WORKING_POINTS) from D_c; each rejection with its
    statistical uncertainty and the background jets passing the cut.
    """
    from ftag.utils.metrics import calculate_efficiency

    y = np.asarray(y)
    n = {k: int((y == k).sum()) for k in (0, 1, 2)}
    present = set(np.unique(y).tolist())
    if not {0, 1, 2} <= present:
        raise ValueError("the test set needs light, c and b jets")
    disc = b_discriminant(probs, f_c)
    wps = np.array(WORKING_POINTS)
    rej = rejections(disc, y, 2, wps)
    _, cuts = calculate_efficiency(disc[y == 2], disc[y == 0], target_eff=wps, return_cuts=True)
    roc_eff = np.linspace(0.5, 1.0, roc_points, endpoint=False)
    roc = rejections(disc, y, 2, roc_eff)
    scan = {"f_c": list(fc_scan), "light_rejection": [], "c_rejection": []}
    for fc in fc_scan:
        r = rejections(b_discriminant(probs, fc), y, 2, [0.77])
        scan["light_rejection"].append(float(r["light"][0]))
        scan["c_rejection"].append(float(r["c"][0]))
    c_disc = c_discriminant(probs, f_b)
    c_wps = np.array(C_WORKING_POINTS)
    c_rej = rejections(c_disc, y, 1, c_wps)
    _, c_cuts = calculate_efficiency(c_disc[y == 1], c_disc[y == 0], target_eff=c_wps, return_cuts=True)

    def _floats(arr: np.ndarray) -> list[float | None]:
        return [float(v) if np.isfinite(v) else None for v in arr]

    return {
        "f_c": f_c,
        "f_b": f_b,
        "jets": {"light": int((y == 0).sum()), "c": int((y == 1).sum()), "b": int((y == 2).sum())},
        "working_points": {
            f"{round(e * 100)}": {
                "cut": float(cut),
                "light_rejection": float(lr),
                "light_rejection_error": _point(lr, n[0])["error"],
                "light_passing": _point(lr, n[0])["passing"],
                "c_rejection": float(cr),
                "c_rejection_error": _point(cr, n[1])["error"],
                "c_passing": _point(cr, n[1])["passing"],
            }
            for e, cut, lr, cr in zip(wps, np.atleast_1d(cuts), rej["light"], rej["c"], strict=True)
        },
        "roc": {
            "b_efficiency": _floats(roc_eff),
            "light_rejection": _floats(roc["light"]),
            "c_rejection": _floats(roc["c"]),
        },
        "fc_scan_77": scan,
        "c_tagging": {
            f"{round(e * 100)}": {
                "cut": float(cut),
                "light_rejection": float(lr),
                "light_rejection_error": _point(lr, n[0])["error"],
                "light_passing": _point(lr, n[0])["passing"],
                "b_rejection": float(br),
                "b_rejection_error": _point(br, n[2])["error"],
                "b_passing": _point(br, n[2])["passing"],
            }
            for e, cut, lr, br in zip(c_wps, np.atleast_1d(c_cuts), c_rej["light"], c_rej["b"], strict=True)
        },
    }
