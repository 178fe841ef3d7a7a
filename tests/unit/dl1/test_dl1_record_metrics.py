"""The physics every dl1 record carries (dl1.record_metrics): names, values against atlas-ftag-tools, errors, cost."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from dl1.metrics import b_discriminant, c_discriminant, rejection_error, rejections
from dl1.record_metrics import inference_ms_per_1k_jets, parameter_count, tagging_record_metrics


def toy_outputs(jets_per_flavour: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Softmax outputs (u, c, b) of a tagger that leans towards the truth, as atlas-ftag-tools' mock does."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1, 2], jets_per_flavour)
    logits = rng.normal(size=(len(y), 3))
    logits[np.arange(len(y)), y] += 1.2
    return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True), y


def test_every_working_point_has_its_rejection_and_error_under_the_documented_names():
    probs, y = toy_outputs()
    metrics = tagging_record_metrics(probs, y, f_c=0.018, f_b=0.2)
    expected = {
        f"{prefix}{flavour}_rejection_{wp}{suffix}"
        for prefix, flavours, wps in (
            ("", ("light", "c"), (60, 70, 77, 85)),
            ("ctag_", ("light", "b"), (20, 30, 40, 50)),
        )
        for flavour, wp, suffix in itertools.product(flavours, wps, ("", "_err"))
    }
    assert set(metrics) == expected
    assert all(isinstance(v, float) and np.isfinite(v) for v in metrics.values())


def test_values_are_atlas_ftag_tools_rejections_at_the_scans_f_c_rounded_to_four_digits():
    probs, y = toy_outputs()
    metrics = tagging_record_metrics(probs, y, f_c=0.08, f_b=0.3)
    b_tagging = rejections(b_discriminant(probs, 0.08), y, 2, [0.77])
    assert metrics["light_rejection_77"] == pytest.approx(float(b_tagging["light"][0]), rel=5e-4)
    assert metrics["c_rejection_77"] == pytest.approx(float(b_tagging["c"][0]), rel=5e-4)
    assert metrics["light_rejection_77_err"] == pytest.approx(
        rejection_error(float(b_tagging["light"][0]), 3000), rel=5e-4
    )
    c_tagging = rejections(c_discriminant(probs, 0.3), y, 1, [0.3])
    assert metrics["ctag_b_rejection_30"] == pytest.approx(float(c_tagging["b"][0]), rel=5e-4)
    assert len(f"{metrics['light_rejection_77']:g}".replace(".", "").lstrip("0")) <= 4
    # another f_c gives other rejections: the record follows the scan's f_c
    assert tagging_record_metrics(probs, y, f_c=0.5, f_b=0.3)["c_rejection_77"] != metrics["c_rejection_77"]


def test_tighter_working_points_reject_more_and_errors_grow_with_the_rejection():
    metrics = tagging_record_metrics(*toy_outputs(), f_c=0.018, f_b=0.2)
    light = [metrics[f"light_rejection_{wp}"] for wp in (60, 70, 77, 85)]
    assert light == sorted(light, reverse=True)
    errors = [metrics[f"light_rejection_{wp}_err"] for wp in (60, 70, 77, 85)]
    assert errors == sorted(errors, reverse=True)


def test_a_rejection_no_background_jet_passes_is_left_out_with_its_error():
    _, y = toy_outputs()
    perfect = np.eye(3)[y] * 0.98 + 0.01  # every jet tagged as what it is: no light jet passes any b cut
    metrics = tagging_record_metrics(perfect, y, f_c=0.018, f_b=0.2)
    assert "light_rejection_77" not in metrics and "light_rejection_77_err" not in metrics


def test_a_validation_split_without_c_jets_is_a_clear_error():
    probs, y = toy_outputs()
    keep = y != 1
    with pytest.raises(ValueError, match="no c jets"):
        tagging_record_metrics(probs[keep], y[keep], f_c=0.018, f_b=0.2)


class StandInNetwork:
    """Stands in for dl1.model.MLP: its weights' shapes and a forward pass that takes a known time per call."""

    def __init__(self, shapes: list[tuple[int, ...]], clock: list[float], seconds_per_call: float) -> None:
        self.variables = [np.zeros(shape) for shape in shapes]
        self.clock, self.seconds_per_call = clock, seconds_per_call
        self.calls: list[int] = []

    def predict(self, x: np.ndarray) -> np.ndarray:
        self.calls.append(len(x))
        self.clock[0] += self.seconds_per_call
        return np.zeros((len(x), 3))


def test_the_cost_counts_weights_and_biases_and_times_the_fastest_pass_per_thousand_jets():
    now = [0.0]
    network = StandInNetwork([(44, 16), (16,), (16, 3), (3,)], now, seconds_per_call=0.002)
    assert parameter_count(network) == 44 * 16 + 16 + 16 * 3 + 3
    x = np.zeros((4000, 44), dtype=np.float32)
    assert inference_ms_per_1k_jets(network, x, clock=lambda: now[0]) == pytest.approx(0.5)  # 2 ms per 4,000 jets
    assert network.calls[0] == 1  # a warm-up pass first, then the timed passes over every jet
    assert set(network.calls[1:]) == {4000}
    with pytest.raises(ValueError, match="no jets"):
        inference_ms_per_1k_jets(network, x[:0])
