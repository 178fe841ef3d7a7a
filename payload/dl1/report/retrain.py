"""The one place the report knows the dl1 payload's training API: load its jets, train one combination, predict.

Everything else in dl1.report works on plain numpy arrays. Truth labels are HadronConeExclTruthLabelID (5 b, 4 c,
0 light); probabilities are (p_u, p_c, p_b).

dl1 API used: ``dl1.train.parse_settings`` (the shard settings), ``dl1.data.load_dataset`` (train/validation/test
splits by eventNumber modulo 6, scaled inputs, flavour weights), ``dl1.train.train_combination`` (one network,
early stopping on the validation split, best-epoch weights) and ``MLP.predict`` (softmax outputs u, c, b).
TensorFlow is imported by dl1 only when a network is built.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from dl1 import data as payload_data
from dl1 import train as payload_train
from dl1.errors import DL1Error
from dl1.variables import FLAVOUR_LABELS as OUTPUT_LABELS
from hpscan.api.contract import ParameterValue
from hpscan.report.rundir import ReportError

FLAVOUR_LABELS = np.array(OUTPUT_LABELS)
"""HadronConeExclTruthLabelID of the network's output classes 0, 1, 2 (u, c, b)."""


@dataclass(frozen=True)
class JetData:
    """Training and held-out test jets, as the payload splits them."""

    train_x: np.ndarray
    train_truth: np.ndarray
    test_x: np.ndarray
    test_truth: np.ndarray
    description: str
    """A few words for plot labels, e.g. "synthetic jets (40,000, seed 1)"."""
    train_weights: np.ndarray | None = None
    """The payload's per-jet training weights (flavour reweighting), for the BDT."""
    handle: Any = None
    """The payload's own dataset object, handed back to train()."""


@dataclass(frozen=True)
class Trained:
    """One retrained network's outputs on the test jets."""

    probabilities: np.ndarray
    """(n_test, 3): p_u, p_c, p_b."""
    epochs: int | None
    seconds: float
    test_loss: float | None
    """Weighted cross-entropy on the test jets (the payload's flavour weights), comparable to val_loss."""
    validation_loss: float | None = None
    """Best val_loss of the retraining: close to the scan's value when the retraining reproduces the scan."""


def _quiet_tensorflow() -> None:
    # TensorFlow's start-up chatter (oneDNN, CPU features) would break the progress bar; errors still show.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _settings(settings: dict[str, Any]) -> Any:
    try:
        return payload_train.parse_settings(settings)
    except DL1Error as error:
        raise ReportError(f"spec.payload.settings of the scan: {error}") from None


def load_jets(settings: dict[str, Any]) -> JetData:
    """The payload's training and test jets for the scan's payload settings (the same jets the scan trained on)."""
    _quiet_tensorflow()
    parsed = _settings(settings)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices of jets without a vertex: expected
            dataset = payload_data.load_dataset(parsed.data)
    except DL1Error as error:
        raise ReportError(f"the payload could not load its data: {error}") from None
    synthetic = parsed.data.synthetic
    if synthetic is not None:
        description = f"synthetic jets ({synthetic.jets:,}, seed {synthetic.seed})"
    else:
        description = f"jets from {parsed.data.test or parsed.data.train}"
    return JetData(
        train_x=dataset.train.x,
        train_truth=FLAVOUR_LABELS[dataset.train.y],
        test_x=dataset.test.x,
        test_truth=FLAVOUR_LABELS[dataset.test.y],
        description=description,
        train_weights=dataset.train.weights,
        handle=dataset,
    )


def _weighted_cross_entropy(probabilities: np.ndarray, classes: np.ndarray, weights: np.ndarray) -> float:
    picked = np.clip(probabilities[np.arange(len(classes)), classes], 1e-12, 1.0)
    return float(np.sum(-np.log(picked) * weights) / np.sum(weights))


def train(
    data: JetData,
    parameters: dict[str, ParameterValue],
    settings: dict[str, Any],
    key: str,
    on_epoch: Callable[[int, int], None] | None = None,
) -> Trained:
    """Retrain one combination on the full training split (early stopping on the validation split, as in the scan)
    and predict the test jets. ``key`` seeds the weights: the combination id gives the scan's own initialisation.
    ``on_epoch(epoch, most_epochs)`` is told after each epoch."""
    _quiet_tensorflow()
    parsed = _settings(settings)
    started = time.monotonic()

    def epoch_done(_key: str, epoch: int, _metrics: dict[str, float]) -> None:
        if on_epoch is not None:
            on_epoch(epoch, parsed.epochs)

    try:
        outcome = payload_train.train_combination(dict(parameters), data.handle, parsed, key=key, on_epoch=epoch_done)
    except DL1Error as error:
        raise ReportError(f"retraining {key}: {error}") from None
    if outcome.status != "succeeded" or outcome.model is None:
        raise ReportError(f"retraining {key} failed: {outcome.error or 'no model'}")
    test = data.handle.test
    probabilities = np.asarray(outcome.model.predict(test.x), dtype=float)
    return Trained(
        probabilities=probabilities,
        epochs=outcome.epochs,
        seconds=time.monotonic() - started,
        test_loss=_weighted_cross_entropy(probabilities, test.y, test.weights),
        validation_loss=outcome.metrics.get("val_loss"),
    )
