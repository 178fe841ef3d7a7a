"""A surrogate of dl1's per-epoch val_loss curve over the paper's six dimensions, fitted to real trainings.

As YAHPO Gym and HPOBench's surrogate benchmarks do: real trainings at the points of a space-filling design
(``search_design``: scrambled Sobol, each curve to its last epoch) teach a regression model the whole curve as a
function of the point; a strategy's trial at any point of the continuous space then "trains" by reading the
model's curve epoch by epoch. The model is a random forest (scikit-learn's ``RandomForestRegressor``, one
multi-output forest for the 12 epochs' log val_loss, so each predicted curve is an average of real curves and
keeps their shape: it falls, flattens, and a diverging learning rate stays bad at every epoch), because

- it needs no smoothness and no kernel: the space has categories (activation), ordinal widths and a learning rate
  whose good region ends at a cliff where training diverges; a GP's stationary kernel blurs that cliff;
- it averages the trainings' initialisation noise (a point's val_loss moves by ~2% with the seed) instead of
  fitting it, as HPOBench's and YAHPO's random-forest surrogates do;
- it is in scikit-learn, which hpscan's report extra already installs, and fits in a second on 2 cores.

Gradient boosting would need one model per epoch (its curves would not stay curves). ``held_out_error`` measures
the surrogate on rows it did not see (5-fold): on the 194 committed trainings the best-epoch val_loss is predicted
within 1.7% at the median (mean 2.3%; Spearman rank correlation 0.79), about the spread a point's val_loss has
across initialisation seeds; ``bench/search.py`` prints the figures and tests/unit/project/test_bench_search.py keeps the
bound (median < 2.5%, Spearman > 0.7). Epoch wall times (the simulated workers' clocks) come from a
second, small forest on the log of each row's median epoch time.

The benchmark reads the surrogate through ``Tabulated``: the forest evaluated once at every combination of the
discrete axes (3,888) times 96 log-spaced learning rates, linearly interpolated in log learning rate between them
(continuous in the learning rate, and microseconds per trial). The best known value is that table's minimum.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
from search_design import ACTIVATIONS, BATCH_SIZES, LEARNING_RATE, WIDTHS

DIVERGED_LOSS = math.log(3.0)
"""val_loss given to an epoch that was not finite: a network that predicts 1/3 for each flavour (chance)."""
TREES = 200
LEAF = 3
"""Fewest rows in a leaf: every predicted curve averages at least this many real trainings (noise, not fitted)."""
LEARNING_RATES = 96
"""Learning rates per combination of the discrete axes that ``best_known`` evaluates."""


def features(point: dict[str, Any]) -> list[float]:
    """The regression inputs of a point: log2 widths and batch size, log10 learning rate, activation one-hot."""
    return [
        math.log2(point["layer1"]),
        math.log2(point["layer2"]),
        math.log2(point["layer3"]),
        math.log10(point["learning_rate"]),
        math.log2(point["batch_size"]),
        *(float(point["activation"] == a) for a in ACTIVATIONS),
    ]


def log_curve(val_loss: list[float | None]) -> list[float]:
    """A row's regression target: log val_loss per epoch, chance level from the first epoch that diverged on."""
    out: list[float] = []
    for value in val_loss:
        diverged = value is None or not math.isfinite(value) or (out and out[-1] == math.log(DIVERGED_LOSS))
        out.append(math.log(DIVERGED_LOSS) if diverged else math.log(value))
    return out


def steady_seconds(epoch_seconds: list[float]) -> float:
    """A row's epoch time: the median of its epochs after the first (which builds the graph)."""
    steady = sorted(epoch_seconds[1:] or epoch_seconds)
    return steady[len(steady) // 2]


def load_rows(path: Path) -> list[dict[str, Any]]:
    """The committed design's rows (bench/data/dl1-design.json)."""
    return json.loads(path.read_text())["rows"]


@dataclass
class Surrogate:
    """val_loss per epoch and epoch seconds at any point of ``search_design.SPACE``."""

    curves_model: Any
    seconds_model: Any
    epochs: int

    def curves(self, points: list[dict[str, Any]]) -> np.ndarray:
        """Predicted val_loss curves, (points, epochs)."""
        return np.exp(self.curves_model.predict(np.array([features(p) for p in points])))


def fit(rows: list[dict[str, Any]], seed: int = 0) -> Surrogate:
    """The surrogate of these rows."""
    from sklearn.ensemble import RandomForestRegressor

    x = np.array([features(r["parameters"]) for r in rows])
    curves = RandomForestRegressor(n_estimators=TREES, min_samples_leaf=LEAF, random_state=seed, n_jobs=1)
    curves.fit(x, np.array([log_curve(r["val_loss"]) for r in rows]))
    seconds = RandomForestRegressor(n_estimators=50, min_samples_leaf=LEAF, random_state=seed, n_jobs=1)
    seconds.fit(x, np.log([steady_seconds(r["epoch_seconds"]) for r in rows]))
    return Surrogate(curves, seconds, epochs=len(rows[0]["val_loss"]))


def held_out_error(rows: list[dict[str, Any]], folds: int = 5, seed: int = 0) -> dict[str, float]:
    """k-fold error of the surrogate on rows it was not fitted to, on what the benchmark ranks by (each row's best
    epoch val_loss): median and mean relative error, and Spearman's rank correlation of predicted vs real."""
    from scipy.stats import spearmanr

    order = np.random.default_rng(seed).permutation(len(rows))
    real: list[float] = []
    predicted: list[float] = []
    for fold in range(folds):
        test = set(order[fold::folds].tolist())
        model = fit([r for i, r in enumerate(rows) if i not in test], seed)
        held = [rows[i] for i in sorted(test)]
        predicted += model.curves([r["parameters"] for r in held]).min(axis=1).tolist()
        real += [math.exp(min(log_curve(r["val_loss"]))) for r in held]
    relative = np.abs(np.array(predicted) / np.array(real) - 1)
    return {
        "median_relative": float(np.median(relative)),
        "mean_relative": float(np.mean(relative)),
        "spearman": float(spearmanr(predicted, real).statistic),
        "rows": float(len(rows)),
    }


@dataclass(frozen=True)
class Tabulated:
    """The surrogate evaluated once at every combination of the discrete axes x ``LEARNING_RATES`` log-spaced
    learning rates, and read between them by linear interpolation in log learning rate: a strategy's trial costs
    microseconds instead of a forest's prediction (milliseconds), and the value is continuous in the learning
    rate (the forest alone is a staircase)."""

    curves: np.ndarray  # (combinations, learning rates, epochs) val_loss
    seconds: np.ndarray  # (combinations, learning rates) epoch wall seconds

    @property
    def epochs(self) -> int:
        return int(self.curves.shape[2])

    @staticmethod
    def combination_index(point: dict[str, Any]) -> int:
        index = 0
        for values, name in DISCRETE_AXES:
            index = index * len(values) + values.index(point[name])
        return index

    def at(self, point: dict[str, Any]) -> tuple[tuple[float, ...], float]:
        """The val_loss curve and the epoch seconds at ``point``."""
        low, high = (math.log(v) for v in LEARNING_RATE)
        where = (math.log(point["learning_rate"]) - low) / (high - low) * (self.curves.shape[1] - 1)
        left = min(max(math.floor(where), 0), self.curves.shape[1] - 2)
        weight = min(max(where - left, 0.0), 1.0)
        c = self.combination_index(point)
        curve = (1 - weight) * self.curves[c, left] + weight * self.curves[c, left + 1]
        seconds = (1 - weight) * self.seconds[c, left] + weight * self.seconds[c, left + 1]
        return tuple(float(v) for v in curve), float(seconds)

    def best_known(self) -> float:
        """The lowest best-epoch val_loss anywhere in the space (interpolation never goes below its two ends)."""
        return float(self.curves.min())

    def share_within(self, target: float) -> float:
        """Share of the tabulated points whose best epoch reaches ``target``: how rare a good point is."""
        return float((self.curves.min(axis=2) <= target).mean())


DISCRETE_AXES: tuple[tuple[list[Any], str], ...] = (
    (WIDTHS, "layer1"),
    (WIDTHS, "layer2"),
    (WIDTHS, "layer3"),
    (BATCH_SIZES, "batch_size"),
    (ACTIVATIONS, "activation"),
)


def dense_combinations() -> list[tuple[Any, ...]]:
    """Every combination of the discrete axes, in ``Tabulated.combination_index`` order."""
    return list(product(*(values for values, _ in DISCRETE_AXES)))


def tabulate(surrogate: Surrogate, learning_rates: int = LEARNING_RATES) -> Tabulated:
    """``Tabulated`` of a fitted surrogate (a few hundred thousand predictions, tens of seconds on 2 cores)."""
    rates = np.geomspace(*LEARNING_RATE, learning_rates)
    combinations = dense_combinations()
    curves = np.empty((len(combinations), learning_rates, surrogate.epochs), dtype=np.float32)
    seconds = np.empty((len(combinations), learning_rates), dtype=np.float32)
    for start in range(0, len(combinations), 256):
        chunk = combinations[start : start + 256]
        x = np.array(
            [
                features(dict(zip([n for _, n in DISCRETE_AXES], c, strict=True), learning_rate=float(lr)))
                for c in chunk
                for lr in rates
            ]
        )
        curves[start : start + len(chunk)] = np.exp(surrogate.curves_model.predict(x)).reshape(
            len(chunk), -1, surrogate.epochs
        )
        seconds[start : start + len(chunk)] = np.exp(surrogate.seconds_model.predict(x)).reshape(len(chunk), -1)
    return Tabulated(curves, seconds)


def surrogate_path(rows_file: Path, cache: Path) -> Path:
    """Where the surrogate of ``rows_file`` is cached: a hash of the file and of the surrogate's settings."""
    import hashlib

    settings = f"{TREES}/{LEAF}/{LEARNING_RATES}/{DIVERGED_LOSS}"
    return cache / f"surrogate-{hashlib.sha256(rows_file.read_bytes() + settings.encode()).hexdigest()[:16]}.npz"


def load_or_tabulate(rows_file: Path, cache: Path, say=print) -> tuple[Tabulated, dict[str, float]]:
    """``Tabulated`` of the surrogate fitted to ``rows_file`` and its ``held_out_error``, cached under the file's
    hash and the surrogate's settings (fitted and measured when new: a minute or two on 2 cores)."""
    path = surrogate_path(rows_file, cache)
    if not path.exists():
        say(f"surrogate: fitting {rows_file.name}, measuring its held-out error and tabulating it into {path} (once)")
        rows = load_rows(rows_file)
        error = held_out_error(rows)
        tabulated = tabulate(fit(rows))
        cache.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.npz")
        np.savez(
            partial, curves=tabulated.curves, seconds=tabulated.seconds, **{k: np.array(v) for k, v in error.items()}
        )
        partial.replace(path)
    with np.load(path) as saved:
        error = {k: float(saved[k]) for k in ("median_relative", "mean_relative", "spearman", "rows")}
        return Tabulated(saved["curves"], saved["seconds"]), error
