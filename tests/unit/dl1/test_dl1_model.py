"""Combination parameters -> model configuration: what the payload accepts and refuses at shard start."""

from __future__ import annotations

import pytest

from dl1.errors import ParameterError
from dl1.model import DL1R_LAYERS, ModelConfig, combination_seed, parse_combination


def test_layers_in_order_and_optimiser_knobs():
    config = parse_combination(
        {"layer2": 32, "layer1": 64, "layer3": 8, "learning_rate": 0.003, "batch_size": 512, "activation": "ELU"}
    )
    assert config == ModelConfig(layers=(64, 32, 8), activation="elu", learning_rate=0.003, batch_size=512)


def test_defaults_fill_what_a_combination_does_not_name():
    defaults = ModelConfig(layers=(16,), batch_size=100)
    assert parse_combination({"learning_rate": 0.01}, defaults) == ModelConfig(
        layers=(16,), learning_rate=0.01, batch_size=100
    )
    assert parse_combination({}).layers == DL1R_LAYERS


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"layer1": 32, "dropout": 0.1}, "unknown parameter 'dropout'"),
        ({"layer1": 32, "layer3": 8}, "'layer2' is missing"),
        ({"layer1": 0}, "positive integer"),
        ({"layer1": 3.5}, "positive integer"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"learning_rate": "fast"}, "learning_rate"),
        ({"batch_size": True}, "batch_size"),
        ({"activation": "cosine"}, "'cosine' is not one of"),
    ],
)
def test_bad_parameters_name_the_parameter(parameters, message):
    with pytest.raises(ParameterError, match=message):
        parse_combination(parameters)


def test_combination_seed_is_stable_and_distinct():
    assert combination_seed(1, "abc") == combination_seed(1, "abc")
    assert combination_seed(1, "abc") != combination_seed(1, "abd")
    assert combination_seed(1, "abc") != combination_seed(2, "abc")
    assert combination_seed(0, "x") == 634768859  # fixed across processes and machines
