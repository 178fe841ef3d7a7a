"""What a test reads of dl1's trial checkpoints (payload/dl1/checkpoint.py): the epoch each one holds."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path


def saved_epochs(paths: Iterable[Path]) -> dict[str, int]:
    """The epoch of each trial's checkpoint (``checkpoints/<id>/state.npz``), by trial id; one being replaced while
    read is left out."""
    import numpy as np

    epochs = {}
    for path in paths:
        try:
            with np.load(path) as stored:
                epochs[path.parent.name] = json.loads(str(stored["meta"]))["epoch"]
        except (OSError, ValueError, KeyError):
            continue  # replaced while read
    return epochs
