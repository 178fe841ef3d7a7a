"""The one place the report knows the dl1 payload's API: load its jets, evaluate a kept model, retrain one, predict.

Everything else in dl1.report works on plain numpy arrays. Truth labels are HadronConeExclTruthLabelID (5 b, 4 c,
0 light); probabilities are (p_u, p_c, p_b).

dl1 API used: ``dl1.train.parse_settings`` (the shard settings), ``dl1.data.load_dataset`` (train/validation/test
splits by eventNumber modulo 6, scaled inputs, flavour weights), ``dl1.train.train_combination`` (one network,
early stopping on the validation split, best-epoch weights), ``MLP.predict`` (softmax outputs u, c, b) and
``dl1.artifacts.load_model`` (a model folder the scan kept: Keras model, scale dictionary, inputs).
TensorFlow is imported by dl1 only when a network is built.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
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
    test_weights: np.ndarray | None = None
    """The payload's per-jet test weights, for the test loss."""
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


def describe(settings: dict[str, Any]) -> str:
    """A few words on the scan's jets for plot labels, from the settings alone (nothing is loaded)."""
    data = _settings(settings).data
    synthetic = data.synthetic
    if synthetic is not None:
        test = f", {synthetic.test_jets:,} test" if synthetic.test_jets else ""
        return f"synthetic jets ({synthetic.jets:,}{test}, seed {synthetic.seed})"
    return f"jets from {data.test or data.train}"


def scan_fc(settings: dict[str, Any]) -> float:
    """The f_c the scan's records use for D_b (``light_rejection_77`` and the others): settings.f_c or dl1's
    default."""
    return float(_settings(settings).f_c)


def data_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The scan's data settings with the payload's defaults filled in (what the jets depend on)."""
    return _settings(settings).data.model_dump(mode="json")


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
    description = describe(settings)
    return JetData(
        train_x=dataset.train.x,
        train_truth=FLAVOUR_LABELS[dataset.train.y],
        test_x=dataset.test.x,
        test_truth=FLAVOUR_LABELS[dataset.test.y],
        description=description,
        train_weights=dataset.train.weights,
        test_weights=dataset.test.weights,
        handle=dataset,
    )


def weighted_cross_entropy(probabilities: np.ndarray, classes: np.ndarray, weights: np.ndarray) -> float:
    """The payload's loss (flavour-weighted categorical cross-entropy) of outputs on labelled jets."""
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
        test_loss=weighted_cross_entropy(probabilities, test.y, test.weights),
        validation_loss=outcome.metrics.get("val_loss"),
    )


def evaluate_saved(data: JetData, folder: Path) -> Trained:
    """A model the scan kept (dl1.artifacts), evaluated on the test jets (no training)."""
    from dl1 import artifacts

    _quiet_tensorflow()
    started = time.monotonic()
    try:
        network = artifacts.load_model(folder)
        probabilities = np.asarray(network.predict_jets(data.handle.test.jets), dtype=float)
    except DL1Error as error:
        raise ReportError(f"kept model {folder}: {error}") from None
    test = data.handle.test
    return Trained(
        probabilities=probabilities,
        epochs=network.info.get("epochs"),
        seconds=time.monotonic() - started,
        test_loss=weighted_cross_entropy(probabilities, test.y, test.weights),
        validation_loss=network.info.get("metrics", {}).get("val_loss"),
    )
