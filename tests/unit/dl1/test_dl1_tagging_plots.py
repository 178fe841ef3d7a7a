"""dl1's ROC figures through puma-hep as installed (the fast suite and the lowest lane draw them; the slow
retraining test draws them too, behind its fake training): curves named by atlas-ftag-tools Labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dl1.report.performance import TaggerScores, evaluate, flavour_counts
from dl1.report.tagging_plots import draw_c_tagging, draw_roc

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def performances():
    rng = np.random.default_rng(3)
    truth = rng.choice([0, 4, 5], size=4000, p=[0.6, 0.1, 0.3])
    means = np.array([{0: [2.0, 0.0, 0.0], 4: [0.0, 1.0, 0.0], 5: [0.0, 0.0, 3.5]}[t] for t in truth])
    logits = means + rng.normal(0, 1.5, size=(len(truth), 3))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    network = evaluate(TaggerScores("best", "best network", probabilities=probabilities), truth)
    bdt = evaluate(TaggerScores("bdt", "BDT (one output)", discriminant=logits[:, 2] - logits[:, 0]), truth)
    return [network, bdt], flavour_counts(truth)


def test_the_b_tagging_rocs_with_ratios_to_the_bdt_are_drawn(tmp_path: Path, performances):
    taggers, counts = performances
    path = draw_roc(taggers, "bdt", counts, tmp_path / "roc.png", "toy jets")
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_the_c_tagging_rocs_are_drawn(tmp_path: Path, performances):
    taggers, counts = performances
    networks = [t for t in taggers if t.c_tagging]
    assert networks  # the three-output tagger has D_c curves: the figure is not empty
    path = draw_c_tagging(networks, counts, tmp_path / "c-tagging.png", "toy jets")
    assert path.read_bytes()[:8] == PNG_MAGIC
