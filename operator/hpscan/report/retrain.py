"""The one place the report knows the dl1 payload's Python API: load its jets, train one combination, predict.

Everything else in hpscan.report works on plain numpy arrays, so another payload needs only another module like
this one. Truth labels are HadronConeExclTruthLabelID (5 b, 4 c, 0 light); probabilities are (p_u, p_c, p_b).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hpscan.api.contract import ParameterValue
from hpscan.report.rundir import ReportError


@dataclass(frozen=True)
class JetData:
    """Training and held-out test jets, as the payload splits them."""

    train_x: np.ndarray
    train_truth: np.ndarray
    test_x: np.ndarray
    test_truth: np.ndarray
    description: str
    """One line for plot labels, e.g. "synthetic jets (40,000, seed 1)"."""
    handle: Any = None
    """The payload's own data object, handed back to train()."""


@dataclass(frozen=True)
class Trained:
    """One retrained network's outputs on the test jets."""

    probabilities: np.ndarray
    """(n_test, 3): p_u, p_c, p_b."""
    epochs: int | None
    seconds: float
    test_loss: float | None


def _dl1() -> Any:
    try:
        import dl1
    except ImportError:
        raise ReportError("--retrain needs the dl1 payload: pip install 'hpscan[payload,tf-cpu]'") from None
    return dl1


def load_jets(settings: dict[str, Any]) -> JetData:
    """The payload's training and test jets for the scan's payload settings."""
    _dl1()
    raise ReportError("the dl1 payload in this installation has no data-loading API the report knows")


def train(data: JetData, parameters: dict[str, ParameterValue], settings: dict[str, Any]) -> Trained:
    """Retrain one combination on the full training set and predict the test jets."""
    _dl1()
    raise ReportError("the dl1 payload in this installation has no training API the report knows")
