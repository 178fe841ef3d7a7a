"""The one place the report knows the dl1 payload's Python API: load its jets, train one combination, predict.

Everything else in hpscan.report works on plain numpy arrays, so another payload needs only another module like
this one. Truth labels are HadronConeExclTruthLabelID (5 b, 4 c, 0 light); probabilities are (p_u, p_c, p_b).

dl1 API used: ``dl1.train.parse_settings`` (the shard settings), ``dl1.data.load_dataset`` (train/validation/test
splits by eventNumber modulo 6, scaled inputs, flavour weights), ``dl1.train.train_combination`` (one network,
early stopping on the validation split, best-epoch weights) and ``MLP.predict`` (softmax outputs u, c, b).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from hpscan.api.contract import ParameterValue
from hpscan.report.rundir import ReportError

FLAVOUR_LABELS = np.array([0, 4, 5])
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


def _payload() -> tuple[Any, Any, Any]:
    # TensorFlow's start-up chatter (oneDNN, CPU features) would break the progress bar; errors still show.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        from dl1 import data, errors, train
    except ImportError as error:
        raise ReportError(
            f"--retrain needs the dl1 payload and its packages ({error.name} is missing): "
            "pip install 'hpscan[payload,tf-cpu]'"
        ) from None
    return data, train, errors


def _settings(settings: dict[str, Any]) -> Any:
    _, train, errors = _payload()
    try:
        return train.parse_settings(settings)
    except errors.DL1Error as error:
        raise ReportError(f"spec.payload.settings of the scan: {error}") from None


def load_jets(settings: dict[str, Any]) -> JetData:
    """The payload's training and test jets for the scan's payload settings (the same jets the scan trained on)."""
    data, _, errors = _payload()
    parsed = _settings(settings)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices of jets without a vertex: expected
            dataset = data.load_dataset(parsed.data)
    except errors.DL1Error as error:
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
    _, train_module, errors = _payload()
    parsed = _settings(settings)
    started = time.monotonic()

    def epoch_done(_key: str, epoch: int, _metrics: dict[str, float]) -> None:
        if on_epoch is not None:
            on_epoch(epoch, parsed.epochs)

    try:
        outcome = train_module.train_combination(dict(parameters), data.handle, parsed, key=key, on_epoch=epoch_done)
    except errors.DL1Error as error:
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
