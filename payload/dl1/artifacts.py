"""A trained network as a folder that can be evaluated anywhere: Keras native format, scale dictionary, inputs.

``OUT/models/<combination id>/`` (hpscan.api.contract.MODELS_DIR), written by ``dl1 train-shard`` when the shard
file asks for models (``artifacts.saveModels``):

    model.keras       the network (keras.Sequential, softmax outputs p_u, p_c, p_b), Keras native format
    scale_dict.json   {variable: {shift, scale, default}}: how raw inputs become network inputs
    model.json        id, parameters, inputs (the variables, in order), outputs, metrics, epochs, settings

``load_model`` reads it back; ``SavedNetwork.predict_jets`` takes raw dumper-style jets (any file ``dl1 generate``
or the training-dataset-dumper writes) and applies defaults and scaling itself.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dl1.errors import DataError
from dl1.variables import FLAVOUR_LABELS
from hpscan.api.contract import MODEL_FILE

KERAS_FILE = "model.keras"
SCALE_FILE = "scale_dict.json"
FORMAT = "dl1/keras-v1"
"""model.json's ``format``: what a reader of the folder can expect."""


class KerasCache:
    """One keras.Sequential per architecture, reused: building one costs far more than copying weights into it."""

    def __init__(self) -> None:
        self._models: dict[tuple[int, tuple[int, ...], str], Any] = {}

    def keras_of(self, network: Any) -> Any:
        """``network`` (a dl1.model.MLP) as a keras model holding its weights."""
        key = (network.n_inputs, tuple(network.config.layers), network.config.activation)
        model = self._models.get(key)
        if model is None:
            model = self._models[key] = network.to_keras()
        else:
            model.set_weights(network.get_weights())
        return model


def save_model(
    folder: Path,
    network: Any,
    *,
    combination_id: str,
    parameters: dict[str, Any],
    variables: list[str],
    scale_dict: dict[str, dict[str, float]],
    metrics: dict[str, float],
    epochs: int,
    extra: dict[str, Any] | None = None,
    cache: KerasCache | None = None,
) -> Path:
    """Write the model folder atomically (a partial folder renamed at the end); returns its path."""
    partial = folder.with_name(f".{folder.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    keras_model = (cache or KerasCache()).keras_of(network)
    keras_model.save(partial / KERAS_FILE)
    (partial / SCALE_FILE).write_text(json.dumps(scale_dict, indent=1, sort_keys=True))
    info = {
        "format": FORMAT,
        "id": combination_id,
        "parameters": parameters,
        "layers": list(network.config.layers),
        "activation": network.config.activation,
        "inputs": list(variables),
        "outputs": ["pu", "pc", "pb"],
        "truthLabels": list(FLAVOUR_LABELS),
        "metrics": metrics,
        "epochs": epochs,
        "files": {"model": KERAS_FILE, "scaleDict": SCALE_FILE},
        **(extra or {}),
    }
    (partial / MODEL_FILE).write_text(json.dumps(info, indent=1))
    if folder.exists():
        shutil.rmtree(folder)
    partial.replace(folder)
    return folder


@dataclass
class SavedNetwork:
    """A model folder read back."""

    folder: Path
    info: dict[str, Any]
    variables: list[str]
    scale_dict: dict[str, dict[str, float]]
    model: Any
    """The keras model."""

    @property
    def id(self) -> str:
        return str(self.info.get("id", self.folder.name))

    def predict(self, x: np.ndarray, batch: int = 65536) -> np.ndarray:
        """Softmax outputs (p_u, p_c, p_b) for already scaled inputs."""
        import tensorflow as tf

        parts = [np.asarray(self.model(tf.constant(x[i : i + batch]), training=False)) for i in range(0, len(x), batch)]
        return np.concatenate(parts) if parts else np.zeros((0, 3), dtype=np.float32)

    def predict_jets(self, jets: np.ndarray) -> np.ndarray:
        """Softmax outputs for raw jets (a structured array with this model's input fields)."""
        from dl1.data import apply_scaling

        missing = [v for v in self.variables if v not in (jets.dtype.names or ())]
        if missing:
            raise DataError(f"the jets lack the model's input {missing[0]!r}")
        return self.predict(apply_scaling(jets, self.variables, self.scale_dict))


def load_model(folder: Path) -> SavedNetwork:
    """Read a model folder; DataError names what is missing or unreadable."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such model folder")
    try:
        info = json.loads((folder / MODEL_FILE).read_text())
        scale_dict = json.loads((folder / SCALE_FILE).read_text())
    except OSError as exc:
        raise DataError(f"{folder}: not a dl1 model folder ({exc.filename}: {exc.strerror})") from None
    except ValueError as exc:
        raise DataError(f"{folder}: unreadable model.json or scale_dict.json ({exc})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise DataError(f"{folder}/{MODEL_FILE}: format is {info.get('format')!r}, expected {FORMAT!r}")
    import keras

    try:
        model = keras.models.load_model(folder / KERAS_FILE, compile=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{folder / KERAS_FILE}: cannot load ({exc})") from None
    return SavedNetwork(folder=folder, info=info, variables=list(info["inputs"]), scale_dict=scale_dict, model=model)
