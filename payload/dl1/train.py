"""Training: many combinations, fast, on data kept resident on the device.

The fast path has two parts. (1) A whole epoch runs inside one TensorFlow graph: batches are gathered from
tensors that live on the device, so Python and ``model.fit``'s per-step overhead vanish. (2) Several
combinations with the same batch size are trained side by side in that graph (horizontal fusion, as in
HFTA; dl1.fused): one gather feeds all of them, and on a GPU the small networks fill the device together. On a
GPU the step is also XLA-compiled. A combination that diverges or stops early leaves its group; the others go on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dl1.data import Dataset, DataSettings, Split
from dl1.errors import SettingsError
from dl1.fused import Adam, FusedGroup
from dl1.model import MLP, ModelConfig, combination_seed

if TYPE_CHECKING:
    from dl1.checkpoint import TrialCheckpoints


class TrainSettings(BaseModel):
    """``spec.payload.settings`` as the dl1 payload reads them; unknown keys are an error."""

    model_config = ConfigDict(extra="forbid")
    epochs: int = Field(30, ge=1, description="Most epochs per combination.")
    patience: int = Field(5, ge=0, description="Stop after this many epochs without a better val_loss (0: never).")
    optimizer: Literal["adam"] = "adam"
    seed: int = Field(0, ge=0, description="Seed of the weight initialisation and shuffling.")
    fuse: int = Field(
        4, ge=1, le=64, description="Combinations with the same batch size trained together in one graph."
    )
    xla: Literal["auto", "on", "off"] = Field("auto", description="XLA-compile the training step (auto: on a GPU).")
    precision: Literal["float32", "bfloat16"] = Field(
        "float32",
        description="Arithmetic of the training step (weights, optimiser and validation stay float32). bfloat16 "
        "pays off on GPUs from compute capability 8.0; on the 2-core AVX512-BF16 CI machine it did not.",
    )
    layers: list[int] | None = Field(None, description="Default hidden layers when a combination names no layerN.")
    activation: str = "relu"
    learning_rate: float = Field(1e-3, gt=0)
    batch_size: int = Field(15000, ge=1)
    f_c: float = Field(0.018, ge=0.0, le=1.0, description="c fraction of D_b for the record's rejections.")
    f_b: float = Field(0.2, ge=0.0, le=1.0, description="b fraction of D_c for the record's c-tagging rejections.")
    data: DataSettings

    def model_defaults(self) -> ModelConfig:
        """The model a combination gets for the parameters it does not name."""
        base = ModelConfig()
        return ModelConfig(
            layers=tuple(self.layers) if self.layers else base.layers,
            activation=self.activation,
            learning_rate=self.learning_rate,
            batch_size=self.batch_size,
        )


def parse_settings(raw: dict[str, Any]) -> TrainSettings:
    """Validate a shard's settings; ``SettingsError`` names the first bad field."""
    if "data" not in raw:
        raise SettingsError("settings.data is missing: give {synthetic: {jets: N, seed: S}} or {train: PATH}")
    try:
        return TrainSettings.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            raise SettingsError(f"settings.{where}: unknown setting") from None
        raise SettingsError(f"settings.{where}: {err['msg']}") from None


@dataclass
class Outcome:
    """How one combination ended."""

    key: str
    config: ModelConfig
    status: Literal["succeeded", "failed", "pruned"]
    metrics: dict[str, float] = field(default_factory=dict)
    epochs: int = 0
    error: str | None = None
    started: float = 0.0
    finished: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)
    model: MLP | None = None
    resumed_from: list[int] = field(default_factory=list)


def device_name() -> str:
    """Where training runs: ``"GPU:0 <name>"`` when TensorFlow sees a GPU, else ``"CPU"``."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "CPU"
    details = tf.config.experimental.get_device_details(gpus[0])
    return f"GPU:0 {details.get('device_name', 'GPU')}".strip()


class ResidentData:
    """Training and validation tensors placed once on the training device."""

    @staticmethod
    def device_for_this_machine() -> str:
        """``/GPU:0`` when TensorFlow sees a GPU, else ``/CPU:0``."""
        import tensorflow as tf

        return "/GPU:0" if tf.config.list_logical_devices("GPU") else "/CPU:0"

    def __init__(self, train: Split, validation: Split) -> None:
        import tensorflow as tf

        self.n_train = len(train)
        self.n_val = len(validation)
        self.n_inputs = train.x.shape[1]
        self.device = self.device_for_this_machine()
        with tf.device(self.device):
            self.x = tf.constant(train.x)
            self.y = tf.constant(train.y.astype(np.int32))
            self.w = tf.constant(train.weights.astype(np.float32))
            self.x_val = tf.constant(validation.x)
            self.y_val = tf.constant(validation.y.astype(np.int32))
            self.w_val = tf.constant(validation.weights.astype(np.float32))


@dataclass
class _Job:
    key: str
    config: ModelConfig
    model: MLP
    opt: Adam
    started: float
    best: float = math.inf
    best_weights: list[np.ndarray] | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    since_best: int = 0
    epochs: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: list[int] = field(default_factory=list)


def train_many(
    data: ResidentData,
    jobs: Sequence[tuple[str, ModelConfig]],
    settings: TrainSettings,
    on_done: Callable[[Outcome], None],
    on_epoch: Callable[[str, int, dict[str, float]], None] | None = None,
    keep_models: bool = False,
    should_stop: Callable[[str], bool] | None = None,
    checkpoints: TrialCheckpoints | None = None,
) -> None:
    """Train each ``(key, config)``; call ``on_done`` the moment a combination finishes (in finishing order).

    ``should_stop(key)`` is asked after every epoch of every combination (hpscan's early stopping): when it says
    yes, that combination ends ``pruned`` with its last epoch's metrics; the others of its group go on.

    Combinations with the same batch size are fused ``settings.fuse`` at a time. A combination whose training
    or validation loss is not finite is reported failed at once; the others go on. Early stopping keeps the
    weights of the best ``val_loss`` epoch. An exception inside one group's training marks that group's
    combinations failed with the reason and moves on.

    With ``checkpoints`` each trial resumes from its checkpoint (fused only with trials at the same epoch), saves
    one after every epoch it goes on from, and loses it once ``on_done`` has returned.
    """
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # a new group traces a new graph on purpose: no retracing warnings
    xla = settings.xla == "on" or (settings.xla == "auto" and data.device.startswith("/GPU"))
    compute_dtype = settings.precision
    resumed = {key: checkpoints.load(key, config) for key, config in jobs} if checkpoints else {}
    by_batch: dict[tuple[int, int], list[tuple[str, ModelConfig]]] = {}
    for key, config in jobs:
        epoch = state.epoch if (state := resumed.get(key)) else 0
        by_batch.setdefault((min(config.batch_size, data.n_train), epoch), []).append((key, config))
    if checkpoints is not None:
        on_done = _clearing(on_done, checkpoints)

    for (batch_size, _), members in by_batch.items():
        for start in range(0, len(members), settings.fuse):
            chunk = members[start : start + settings.fuse]
            active: list[_Job] = []
            now = time.time()
            with tf.device(data.device):
                for key, config in chunk:
                    model = MLP(data.n_inputs, config, combination_seed(settings.seed, key))
                    active.append(_Job(key, config, model, Adam(model.variables, config.learning_rate), started=now))
                    if checkpoints is not None and (state := resumed.get(key)):
                        checkpoints.apply(active[-1], state)
            _train_group(
                data,
                active,
                batch_size,
                xla,
                compute_dtype,
                settings,
                on_done,
                on_epoch,
                keep_models,
                should_stop,
                checkpoints,
            )


def _clearing(on_done: Callable[[Outcome], None], checkpoints: TrialCheckpoints) -> Callable[[Outcome], None]:
    def done(outcome: Outcome) -> None:
        on_done(outcome)  # the record first: a kill between the two resumes a trial that is then skipped
        checkpoints.clear(outcome.key)

    return done


def _finish(
    job: _Job,
    status: Literal["succeeded", "failed", "pruned"],
    on_done: Callable[[Outcome], None],
    keep: bool,
    error: str | None = None,
) -> None:
    if status == "succeeded" and job.best_weights is not None:
        job.model.set_weights(job.best_weights)
    metrics = {"succeeded": dict(job.best_metrics), "pruned": dict(job.history[-1]) if job.history else {}}
    on_done(
        Outcome(
            key=job.key,
            config=job.config,
            status=status,
            metrics=metrics.get(status, {}),
            epochs=job.epochs,
            error=error,
            started=job.started,
            finished=time.time(),
            history=job.history,
            model=job.model if keep and status == "succeeded" else None,
            resumed_from=job.resumed_from,
        )
    )


def _train_group(
    data: ResidentData,
    active: list[_Job],
    batch_size: int,
    xla: bool,
    compute_dtype: str,
    settings: TrainSettings,
    on_done: Callable[[Outcome], None],
    on_epoch: Callable[[str, int, dict[str, float]], None] | None,
    keep: bool,
    should_stop: Callable[[str], bool] | None = None,
    checkpoints: TrialCheckpoints | None = None,
) -> None:
    import tensorflow as tf

    group: FusedGroup | None = None
    members: tuple[int, ...] = ()
    resumed_at = active[0].epochs if active else 0  # a group's trials are all at one epoch
    for epoch in range(resumed_at + 1, settings.epochs + 1):
        if not active:
            return
        ids = tuple(id(j) for j in active)
        if group is None or ids != members:  # rebuilt (re-traced) only when the group's members change
            with tf.device(data.device):
                group = FusedGroup(
                    data, [j.model for j in active], [j.opt for j in active], batch_size, xla, compute_dtype
                )
            members = ids
        # the order of an epoch depends on (seed, epoch) only: fusing combinations never changes their results
        order = np.random.default_rng([settings.seed, epoch]).permutation(data.n_train)
        perm = tf.constant(order.astype(np.int32))
        try:
            with tf.device(data.device):
                train_loss = group.epoch(perm).numpy()
                val_loss, val_acc = (t.numpy() for t in group.validate())
        except (tf.errors.OpError, ValueError, RuntimeError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            for j in active:
                _finish(j, "failed", on_done, keep, f"training failed: {reason}")
            return
        still: list[_Job] = []
        for k, j in enumerate(active):
            j.epochs = epoch
            entry = {"loss": float(train_loss[k]), "val_loss": float(val_loss[k]), "val_accuracy": float(val_acc[k])}
            j.history.append(entry)
            if on_epoch is not None:
                on_epoch(j.key, epoch, entry)
            if not (math.isfinite(entry["loss"]) and math.isfinite(entry["val_loss"])):
                _finish(
                    j,
                    "failed",
                    on_done,
                    keep,
                    f"diverged: loss is not finite at epoch {epoch} (learning rate {j.config.learning_rate:g})",
                )
                continue
            if should_stop is not None and epoch < settings.epochs and should_stop(j.key):  # the last one ends anyway
                _finish(j, "pruned", on_done, keep)
                continue
            if entry["val_loss"] < j.best:
                j.best = entry["val_loss"]
                j.best_weights = j.model.get_weights()
                j.best_metrics = {**entry, "best_epoch": float(epoch)}
                j.since_best = 0
            else:
                j.since_best += 1
            if settings.patience and j.since_best >= settings.patience:
                _finish(j, "succeeded", on_done, keep)
                continue
            still.append(j)
        active = still
        if checkpoints is not None:
            for j in active:
                checkpoints.save(j)
    for j in active:
        _finish(j, "succeeded", on_done, keep)


def train_combination(
    parameters: dict[str, Any],
    dataset: Dataset,
    settings: TrainSettings | dict[str, Any],
    key: str = "retrain",
    include_validation: bool = False,
    on_epoch: Callable[[str, int, dict[str, float]], None] | None = None,
) -> Outcome:
    """Train one combination and return its ``Outcome`` with the trained ``model`` (for the report).

    With ``include_validation`` the network trains on train + validation (early stopping then watches the
    validation split it also trains on, so set ``patience`` to 0 and pick ``epochs``).
    """
    from dl1.model import parse_combination

    ts = settings if isinstance(settings, TrainSettings) else parse_settings(settings)
    config = parse_combination(parameters, ts.model_defaults())
    train = dataset.train
    if include_validation:
        v = dataset.validation
        train = Split(
            x=np.concatenate([train.x, v.x]),
            y=np.concatenate([train.y, v.y]),
            weights=np.concatenate([train.weights, v.weights]),
            jets=np.concatenate([train.jets, v.jets]),
        )
    data = ResidentData(train, dataset.validation)
    result: list[Outcome] = []
    train_many(data, [(key, config)], ts, result.append, on_epoch=on_epoch, keep_models=True)
    return result[0]
