"""The physics a dl1 record carries besides its losses: what a flavour-tagging physicist judges a network by.

For each succeeded combination, at its best epoch (the weights early stopping kept) on the validation split:

- ``light_rejection_<wp>``, ``c_rejection_<wp>``: rejections at the 60/70/77/85% b-efficiency working points of
  D_b at the scan's f_c (``settings.f_c``), each with ``<name>_err``, its binomial statistical uncertainty;
- ``ctag_light_rejection_<wp>``, ``ctag_b_rejection_<wp>``: the c-tagging counterparts, D_c at ``settings.f_b`` at
  the 20/30/40/50% c-efficiency working points, with ``_err`` too;
- ``n_parameters``: the network's trainable weights and biases; ``inference_ms_per_1k_jets``: measured wall time of
  one forward pass over the validation jets (best of a few), per 1,000 jets, on the training device.

The rejections come from atlas-ftag-tools through ``dl1.metrics`` (``get_discriminant``, ``calculate_rejection``,
``calculate_rejection_error``). The rejections are unweighted (as in the report): the binomial error counts jets.
A rejection no background jet passes (infinite) is left out, as are its error; values keep 4 significant digits,
so a record stays within its room in a Kubernetes record page (hpscan.job.pages.RECORD_ROOM).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from dl1.metrics import C_WORKING_POINTS, WORKING_POINTS, b_discriminant, c_discriminant, rejection_error, rejections

if TYPE_CHECKING:
    from dl1.model import MLP

SIGNIFICANT = 4
"""Significant digits of each physics value in a record (statistical errors are a percent or more)."""
INFERENCE_JETS = 65536
"""Jets timed for the inference cost at most (one batch of the validation split)."""
INFERENCE_REPEATS = 3
"""Forward passes timed; the fastest counts (the others paid for warm-up or a busy machine)."""
ERROR_SUFFIX = "_err"
"""A metric ``X`` with a statistical error reports it as ``X_err`` (hpscan's ranking reads it: tied within errors)."""


def _rounded(value: float) -> float:
    return float(f"{value:.{SIGNIFICANT}g}")


def _working_point_metrics(
    prefix: str, by_background: dict[str, np.ndarray], counts: dict[str, int], points: tuple[float, ...]
) -> dict[str, float]:
    out: dict[str, float] = {}
    for background, values in by_background.items():
        for point, value in zip(points, values, strict=True):
            name = f"{prefix}{background}_rejection_{round(point * 100)}"
            if not np.isfinite(value):
                continue  # no background jet passes the cut: no number to rank by
            out[name] = _rounded(float(value))
            error = rejection_error(float(value), counts[background])
            if error is not None:
                out[name + ERROR_SUFFIX] = _rounded(error)
    return out


def tagging_record_metrics(probs: np.ndarray, y: np.ndarray, f_c: float, f_b: float) -> dict[str, float]:
    """b- and c-tagging rejections at their working points, with errors, from outputs ``probs`` (jets, 3: u, c,
    b) and labels ``y`` (0 u, 1 c, 2 b). ValueError when a flavour is missing from ``y``."""
    y = np.asarray(y)
    counts = {"light": int(np.sum(y == 0)), "c": int(np.sum(y == 1)), "b": int(np.sum(y == 2))}
    if not all(counts.values()):
        missing = ", ".join(name for name, n in counts.items() if not n)
        raise ValueError(f"the validation split has no {missing} jets: no rejection can be computed")
    b_tagging = rejections(b_discriminant(probs, f_c), y, 2, WORKING_POINTS)
    c_tagging = rejections(c_discriminant(probs, f_b), y, 1, C_WORKING_POINTS)
    return _working_point_metrics("", b_tagging, counts, WORKING_POINTS) | _working_point_metrics(
        "ctag_", c_tagging, counts, C_WORKING_POINTS
    )


def parameter_count(model: MLP) -> int:
    """Trainable numbers of the network (weights and biases)."""
    return int(sum(int(np.prod(v.shape)) for v in model.variables))


def inference_ms_per_1k_jets(model: MLP, x: np.ndarray, clock=time.perf_counter) -> float:
    """Wall time of a forward pass per 1,000 jets, in ms: the fastest of INFERENCE_REPEATS passes over up to
    INFERENCE_JETS jets of ``x`` (a first pass warms up)."""
    jets = x[:INFERENCE_JETS]
    if not len(jets):
        raise ValueError("no jets to time the inference on")
    model.predict(jets[:1])
    fastest = float("inf")
    for _ in range(INFERENCE_REPEATS):
        start = clock()
        model.predict(jets)
        fastest = min(fastest, clock() - start)
    return _rounded(fastest * 1e6 / len(jets))


def record_metrics(model: MLP, x: np.ndarray, y: np.ndarray, f_c: float, f_b: float) -> dict[str, float]:
    """Everything this module adds to a succeeded record, for ``model`` (its best epoch's weights) on the
    validation inputs ``x`` and labels ``y``."""
    probs = model.predict(x)
    return (
        tagging_record_metrics(probs, y, f_c, f_b)
        | {"n_parameters": float(parameter_count(model))}
        | {"inference_ms_per_1k_jets": inference_ms_per_1k_jets(model, x)}
    )
