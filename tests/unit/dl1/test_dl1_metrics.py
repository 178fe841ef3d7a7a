"""Tagging metrics against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from dl1.metrics import b_discriminant, c_discriminant, rejections, tagging_metrics


def test_b_discriminant_is_the_dl1_formula():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    expected = np.log(np.array([0.1, 0.8]) / (0.08 * np.array([0.2, 0.1]) + 0.92 * np.array([0.7, 0.1])))
    assert b_discriminant(probs, f_c=0.08) == pytest.approx(expected, rel=1e-9)
    c_expected = np.log(np.array([0.2, 0.1]) / (0.2 * np.array([0.1, 0.8]) + 0.8 * np.array([0.7, 0.1])))
    assert c_discriminant(probs, f_b=0.2) == pytest.approx(c_expected, rel=1e-9)


def test_rejection_at_a_working_point_by_hand():
    # 10 b jets with D = 1..10; at 50% efficiency the cut is the median of the b jets (5.5)
    disc = np.concatenate([np.arange(1.0, 11.0), [6.0, 0.0, 0.0, 0.0], [7.0, 8.0, 0.0, 0.0]])
    y = np.array([2] * 10 + [0] * 4 + [1] * 4)
    rej = rejections(disc, y, signal=2, efficiencies=[0.5])
    assert rej["light"][0] == pytest.approx(4.0)  # 1 of 4 light jets above 5.5
    assert rej["c"][0] == pytest.approx(2.0)  # 2 of 4 c jets above 5.5


def test_tagging_metrics_shape_and_values():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 2000)
    logits = rng.normal(size=(6000, 3))
    logits[np.arange(6000), y] += 2.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    metrics = tagging_metrics(probs, y, f_c=0.018)
    assert set(metrics["working_points"]) == {"60", "70", "77", "85"}
    wp = metrics["working_points"]
    # tighter working points reject more
    assert wp["60"]["light_rejection"] > wp["77"]["light_rejection"] > wp["85"]["light_rejection"] > 1
    # the cut is the 23rd percentile of D_b for b jets
    d = b_discriminant(probs, 0.018)
    cut = wp["77"]["cut"]
    assert np.mean(d[y == 2] > cut) == pytest.approx(0.77, abs=0.002)
    assert wp["77"]["light_rejection"] == pytest.approx(1 / np.mean(d[y == 0] > cut), rel=1e-6)
    assert len(metrics["roc"]["b_efficiency"]) == len(metrics["roc"]["light_rejection"]) == 100
    scan = metrics["fc_scan_77"]
    assert len(scan["f_c"]) == len(scan["light_rejection"]) == len(scan["c_rejection"])
    # more weight on c in the denominator rejects c better and light worse
    assert scan["c_rejection"][-1] > scan["c_rejection"][0]
    assert scan["light_rejection"][-1] < scan["light_rejection"][0]
    assert metrics["jets"] == {"light": 2000, "c": 2000, "b": 2000}


def test_tagging_metrics_refuses_a_test_set_without_all_flavours():
    with pytest.raises(ValueError, match="light, c and b"):
        tagging_metrics(np.full((4, 3), 1 / 3), np.array([2, 2, 0, 0]))
