"""Trial checkpoints (the contract's ``OUT/checkpoints/<combination id>/``): each unfinished trial's whole state at
its last epoch boundary, so that a shard started again in the same folder continues the trial instead of training
it from epoch 0.

A checkpoint holds the weights, Adam's moments and step, the epoch, the early-stopping state (best val_loss, its
weights and metrics, epochs since), the history and the epochs it resumed at before. The RNG needs no state of its
own: the initial weights come from (seed, combination id) and each epoch's order from (seed, epoch), so the epoch
is the RNG state. A checkpoint is one ``state.npz`` replaced atomically, so a process killed while saving leaves
the previous one. It names the settings it was trained with: one from other settings is ignored (and replaced).
Resumed trials are fused only with trials at the same epoch, so each sees the batches it would have seen.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from dl1.model import ModelConfig
    from dl1.train import TrainSettings, _Job

STATE_FILE = "state.npz"

RESULT_NEUTRAL_SETTINGS = frozenset({"fuse", "epochs", "f_c", "f_b"})
"""Settings a checkpoint stays valid across: fusion never changes a trial's result, more or fewer epochs do not
change the epochs already trained, and the records' tagging fractions are not training."""


@dataclass
class TrialState:
    """What one trial's checkpoint holds."""

    epoch: int
    weights: list[np.ndarray]
    adam_m: list[np.ndarray]
    adam_v: list[np.ndarray]
    adam_t: float
    best: float
    best_weights: list[np.ndarray] | None
    best_metrics: dict[str, float]
    since_best: int
    history: list[dict[str, float]]
    started: float
    resumed_from: list[int] = field(default_factory=list)


def fingerprint(settings: TrainSettings, config: ModelConfig) -> str:
    """What a checkpoint must have been trained with to be resumed: the settings (but those that do not change a
    trial's result) and the combination's model."""
    kept = settings.model_dump(mode="json", exclude=set(RESULT_NEUTRAL_SETTINGS))
    model = {"layers": list(config.layers), "activation": config.activation, "lr": config.learning_rate}
    text = json.dumps([kept, model, config.batch_size], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class TrialCheckpoints:
    """The checkpoints of one output folder's trials (``root`` is ``OUT/checkpoints``)."""

    def __init__(self, root: Path, settings: TrainSettings) -> None:
        self.root = root
        self.settings = settings

    def path(self, key: str) -> Path:
        return self.root / key / STATE_FILE

    def load(self, key: str, config: ModelConfig) -> TrialState | None:
        """The trial's state to resume from, or None: no checkpoint, an unreadable one, or one of other settings
        (each said in the log, since a trial that starts again from epoch 0 costs time)."""
        path = self.path(key)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as stored:
                meta = json.loads(str(stored["meta"]))
                arrays = {name: stored[name] for name in stored.files if name != "meta"}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
            _say(f"checkpoint of {key} unreadable ({error}): training it from epoch 0")
            return None
        if meta.get("fingerprint") != fingerprint(self.settings, config):
            _say(f"checkpoint of {key} was trained with other settings: training it from epoch 0")
            return None
        count = meta["variables"]
        state = TrialState(
            epoch=int(meta["epoch"]),
            weights=[arrays[f"w{i}"] for i in range(count)],
            adam_m=[arrays[f"m{i}"] for i in range(count)],
            adam_v=[arrays[f"v{i}"] for i in range(count)],
            adam_t=float(meta["adam_t"]),
            best=float(meta["best"]),
            best_weights=[arrays[f"b{i}"] for i in range(count)] if meta["has_best"] else None,
            best_metrics=meta["best_metrics"],
            since_best=int(meta["since_best"]),
            history=meta["history"],
            started=float(meta["started"]),
            resumed_from=[*meta["resumed_from"], int(meta["epoch"])],
        )
        _say(f"resuming {key} at epoch {state.epoch} from its checkpoint")
        return state

    def apply(self, job: _Job, state: TrialState) -> None:
        """Put a loaded state into a freshly built trial (its model and optimiser already exist)."""
        job.model.set_weights(state.weights)
        for slot, value in zip(job.opt.m, state.adam_m, strict=True):
            slot.assign(value)
        for slot, value in zip(job.opt.v, state.adam_v, strict=True):
            slot.assign(value)
        job.opt.t.assign(state.adam_t)
        job.epochs, job.best, job.best_weights = state.epoch, state.best, state.best_weights
        job.best_metrics, job.since_best, job.history = state.best_metrics, state.since_best, state.history
        job.started, job.resumed_from = state.started, state.resumed_from

    def save(self, job: _Job) -> None:
        """Replace the trial's checkpoint by its state now (call at an epoch boundary)."""
        arrays: dict[str, Any] = {}
        weights = job.model.get_weights()
        for i, (w, m, v) in enumerate(zip(weights, job.opt.m, job.opt.v, strict=True)):
            arrays[f"w{i}"], arrays[f"m{i}"], arrays[f"v{i}"] = w, m.numpy(), v.numpy()
        for i, b in enumerate(job.best_weights or []):
            arrays[f"b{i}"] = b
        meta = {
            "key": job.key,
            "fingerprint": fingerprint(self.settings, job.config),
            "epoch": job.epochs,
            "variables": len(weights),
            "adam_t": float(job.opt.t.numpy()),
            "best": job.best,
            "has_best": job.best_weights is not None,
            "best_metrics": job.best_metrics,
            "since_best": job.since_best,
            "history": job.history,
            "started": job.started,
            "resumed_from": job.resumed_from,
        }
        path = self.path(job.key)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{STATE_FILE}.partial")
        with partial.open("wb") as handle:
            np.savez(handle, meta=np.array(json.dumps(meta)), **arrays)
        os.replace(partial, path)  # atomic: a kill while saving leaves the previous checkpoint

    def clear(self, key: str) -> None:
        """Delete a trial's checkpoint (after its record was appended)."""
        shutil.rmtree(self.root / key, ignore_errors=True)

    def clear_recorded(self, recorded: set[str]) -> None:
        """Delete the checkpoints of trials already recorded (a process killed between a record and the delete)."""
        if self.root.is_dir():
            for folder in self.root.iterdir():
                if folder.name in recorded:
                    shutil.rmtree(folder, ignore_errors=True)
