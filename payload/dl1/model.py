"""The DL1-style network of one combination: dense layers -> softmax over (u, c, b).

``parse_combination`` turns a combination's parameters into a ``ModelConfig`` (and refuses names it does not
understand); ``MLP`` holds the weights as plain TensorFlow variables so the training loop can fuse several
networks into one graph; ``MLP.to_keras`` gives the same network as a Keras model for saving or plotting.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from dl1.errors import ParameterError

if TYPE_CHECKING:
    import tensorflow as tf

DL1R_LAYERS = (256, 128, 60, 48, 36, 24, 12, 6)
"""umami's DL1r hidden layers, used when a combination names no ``layerN``."""

ACTIVATIONS = ("relu", "elu", "selu", "tanh", "sigmoid", "gelu", "swish", "silu", "leaky_relu", "softplus", "linear")
"""Activations a combination may name."""

KNOWN_PARAMETERS = "layer1 ... layerN, learning_rate, batch_size, activation"

_LAYER = re.compile(r"^layer([1-9][0-9]*)$")


@dataclass(frozen=True)
class ModelConfig:
    """What one combination trains: architecture and the optimiser knobs a scan may vary."""

    layers: tuple[int, ...] = DL1R_LAYERS
    activation: str = "relu"
    learning_rate: float = 1e-3
    batch_size: int = 15000


def parse_combination(parameters: dict[str, Any], defaults: ModelConfig | None = None) -> ModelConfig:
    """The ``ModelConfig`` of a combination; unknown names or bad values raise ``ParameterError``.

    ``layer1`` ... ``layerN`` must be consecutive from 1 and replace the default layers as a whole.
    """
    base = defaults or ModelConfig()
    layers: dict[int, int] = {}
    values: dict[str, Any] = {}
    for name, value in parameters.items():
        match = _LAYER.match(name)
        if match:
            if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value or value < 1:
                raise ParameterError(f"parameter {name!r}: a layer width must be a positive integer, got {value!r}")
            layers[int(match.group(1))] = int(value)
        elif name == "learning_rate":
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < float("inf"):
                raise ParameterError(f"parameter 'learning_rate': must be a positive number, got {value!r}")
            values["learning_rate"] = float(value)
        elif name == "batch_size":
            if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value or value < 1:
                raise ParameterError(f"parameter 'batch_size': must be a positive integer, got {value!r}")
            values["batch_size"] = int(value)
        elif name == "activation":
            if not isinstance(value, str) or value.lower() not in ACTIVATIONS:
                raise ParameterError(f"parameter 'activation': {value!r} is not one of {', '.join(ACTIVATIONS)}")
            values["activation"] = value.lower()
        else:
            raise ParameterError(f"unknown parameter {name!r}: the dl1 payload understands {KNOWN_PARAMETERS}")
    if layers:
        order = sorted(layers)
        if order != list(range(1, len(order) + 1)):
            missing = next(i for i in range(1, order[-1] + 1) if i not in layers)
            raise ParameterError(f"parameter 'layer{missing}' is missing: layers must be numbered 1..N without gaps")
        values["layers"] = tuple(layers[i] for i in order)
    return ModelConfig(
        layers=values.get("layers", base.layers),
        activation=values.get("activation", base.activation),
        learning_rate=values.get("learning_rate", base.learning_rate),
        batch_size=values.get("batch_size", base.batch_size),
    )


def combination_seed(seed: int, key: str) -> int:
    """A 32-bit seed for one combination: stable across processes (unlike ``hash``)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def activation_fn(name: str):
    """The TensorFlow function of an activation name."""
    import tensorflow as tf

    table = {
        "relu": tf.nn.relu,
        "elu": tf.nn.elu,
        "selu": tf.nn.selu,
        "tanh": tf.math.tanh,
        "sigmoid": tf.math.sigmoid,
        "gelu": tf.nn.gelu,
        "swish": tf.nn.silu,
        "silu": tf.nn.silu,
        "leaky_relu": tf.nn.leaky_relu,
        "softplus": tf.math.softplus,
        "linear": tf.identity,
    }
    return table[name]


class MLP:
    """Dense network ``inputs -> layers -> 3 logits``, Glorot-uniform weights, zero biases (umami's DL1)."""

    def __init__(self, n_inputs: int, config: ModelConfig, seed: int) -> None:
        import tensorflow as tf

        self.config = config
        self.n_inputs = n_inputs
        rng = np.random.default_rng(seed)
        self.variables: list[tf.Variable] = []
        prev = n_inputs
        for width in (*config.layers, 3):
            limit = np.sqrt(6.0 / (prev + width))
            self.variables.append(tf.Variable(rng.uniform(-limit, limit, (prev, width)).astype(np.float32)))
            self.variables.append(tf.Variable(np.zeros(width, dtype=np.float32)))
            prev = width
        self._act = activation_fn(config.activation)

    def logits(self, x: tf.Tensor, compute_dtype: str = "float32") -> tf.Tensor:
        """Pre-softmax outputs (float32) for a batch; ``compute_dtype="bfloat16"`` runs the layers in bfloat16.

        The weights stay float32 either way (mixed precision): only the products are rounded.
        """
        import tensorflow as tf

        # matmul + bias_add (not +) lets grappler fuse them (and relu) into one oneDNN kernel
        weights = self.variables if compute_dtype == "float32" else [tf.cast(v, compute_dtype) for v in self.variables]
        h = x if compute_dtype == "float32" else tf.cast(x, compute_dtype)
        for i in range(0, len(weights) - 2, 2):
            h = self._act(tf.nn.bias_add(tf.matmul(h, weights[i]), weights[i + 1]))
        out = tf.nn.bias_add(tf.matmul(h, weights[-2]), weights[-1])
        return out if compute_dtype == "float32" else tf.cast(out, tf.float32)

    def get_weights(self) -> list[np.ndarray]:
        """Copies of the weights (kernel, bias per layer)."""
        return [v.numpy().copy() for v in self.variables]

    def set_weights(self, weights: list[np.ndarray]) -> None:
        """Load weights from ``get_weights``."""
        for var, value in zip(self.variables, weights, strict=True):
            var.assign(value)

    def predict(self, x: np.ndarray, batch: int = 65536) -> np.ndarray:
        """Softmax outputs (u, c, b) for scaled inputs, float32 (jets, 3)."""
        import tensorflow as tf

        out = [tf.nn.softmax(self.logits(tf.constant(x[i : i + batch]))).numpy() for i in range(0, len(x), batch)]
        return np.concatenate(out) if out else np.zeros((0, 3), dtype=np.float32)

    def to_keras(self):
        """The same network as a ``keras.Sequential`` (softmax output), weights copied."""
        import keras

        layers: list[Any] = [keras.Input((self.n_inputs,))]
        layers += [keras.layers.Dense(w, activation=self.config.activation) for w in self.config.layers]
        layers.append(keras.layers.Dense(3, activation="softmax"))
        model = keras.Sequential(layers)
        model.set_weights(self.get_weights())
        return model
