"""The real dl1 trainings behind bench/search.py's surrogate: a scrambled Sobol design over the paper's six dimensions.

The paper's scan spans six dimensions: three hidden layers, the learning rate, the batch size and the activation
(dl1 has no dropout). ``SPACE`` is that space as an HPScan's ``spec.parameters``: the widths and the batch size on
powers of two (dl1 wants integers), the learning rate a continuous log range, three activations: 6^3 x 6 x 3 =
3,888 points per learning rate, continuous in the learning rate. ``design`` draws ``DESIGN_POINTS`` points of it
with scrambled Sobol (space-filling: every one-dimensional projection evenly covered, unlike a random draw); each
is trained for real (``dl1.train.train_many``, TensorFlow, synthetic jets, 12 epochs with patience 0 so every
curve runs to its last epoch; networks of one batch size fused ``FUSE`` to a graph, which changes no result), and
its per-epoch val_loss, epoch wall times and best-epoch physics (light and c rejection at 77% b-efficiency, the
network's parameter count) are kept. On the 2 shared CPU cores (one TensorFlow thread, under nice) a design point
costs a few CPU seconds; the committed design is as many points as 45 minutes of wall time trained, in Sobol order.

Each finished row is appended to ``~/.cache/hpscan-bench/design-<key>.jsonl`` at once (the key: the space, the
settings, the design and this layout's version), so a stopped run resumes where it stopped and no training is
lost; ``export`` writes the compact copy committed under ``bench/data/`` (values to 4 significant digits) that CI
and everyone else read instead of training.

    nice -n 10 .venv/bin/python bench/search_design.py train [--points N]   # TF limited to 1 thread
    .venv/bin/python bench/search_design.py export                          # -> bench/data/dl1-design.json
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

WIDTHS = [8, 16, 32, 64, 128, 256]
BATCH_SIZES = [32, 64, 128, 256, 512, 1024]
ACTIVATIONS = ["relu", "elu", "tanh"]
LEARNING_RATE = (1.0e-4, 2.0e-2)

SPACE: list[dict[str, Any]] = [
    {"name": "layer1", "values": WIDTHS},
    {"name": "layer2", "values": WIDTHS},
    {"name": "layer3", "values": WIDTHS},
    {"name": "learning_rate", "range": {"min": LEARNING_RATE[0], "max": LEARNING_RATE[1], "scale": "log"}},
    {"name": "batch_size", "values": BATCH_SIZES},
    {"name": "activation", "values": ACTIVATIONS},
]
"""The paper's six dimensions as an HPScan's ``spec.parameters`` (the learning rate continuous)."""

FUSE = 8
"""Networks of one batch size trained together in one graph (dl1's ``fuse``): on a CPU a small batch's step is
mostly overhead, which fused networks share (the 8 networks of a group still train independently)."""
BLOCK = 24
"""Design points handed to one ``train_many`` call (grouped there by batch size, ``FUSE`` at a time)."""

SETTINGS: dict[str, Any] = {
    "epochs": 12,  # ASHA's rungs at 1, 3 and 9 epochs (its default reductionFactor 3); 2 shared cores
    "patience": 0,  # every curve complete: pruning is the strategies' business, not the payload's
    "fuse": FUSE,
    "seed": 0,
    "data": {"synthetic": {"jets": 36000, "seed": 1}},  # 6,000 validation jets
}
"""``spec.payload.settings`` of every training of the design."""

DESIGN_POINTS = 512
"""Sobol points (a power of two keeps the design balanced; a run stopped early keeps its first rows)."""
DESIGN_SEED = 0
LAYOUT_VERSION = 2
"""Bumped when a row's layout or the way rows are filled changes (a new cache key)."""

CACHE = Path.home() / ".cache" / "hpscan-bench"
COMMITTED = Path(__file__).resolve().parent / "data" / "dl1-design.json"
SIGNIFICANT = 4


def design_key(space: list[dict[str, Any]], settings: dict[str, Any], points: int = DESIGN_POINTS) -> str:
    """Cache key of a design's trainings: the space, the settings, the design and the row layout."""
    text = json.dumps(
        {"space": space, "settings": settings, "points": points, "seed": DESIGN_SEED, "version": LAYOUT_VERSION},
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def point_of(unit: Sequence[float]) -> dict[str, Any]:
    """A point of ``SPACE`` from six coordinates in [0, 1): lists by equal slices, the learning rate log-uniform."""

    def pick(values: list[Any], u: float) -> Any:
        return values[min(int(u * len(values)), len(values) - 1)]

    low, high = (math.log(v) for v in LEARNING_RATE)
    return {
        "layer1": pick(WIDTHS, unit[0]),
        "layer2": pick(WIDTHS, unit[1]),
        "layer3": pick(WIDTHS, unit[2]),
        "learning_rate": float(f"{math.exp(low + unit[3] * (high - low)):.4g}"),
        "batch_size": pick(BATCH_SIZES, unit[4]),
        "activation": pick(ACTIVATIONS, unit[5]),
    }


def design(points: int = DESIGN_POINTS, seed: int = DESIGN_SEED) -> list[dict[str, Any]]:
    """The design's points, in Sobol order (any prefix of a power-of-two length is itself balanced)."""
    from scipy.stats import qmc

    return [point_of(u) for u in qmc.Sobol(d=len(SPACE), scramble=True, seed=seed).random(points)]


def n_parameters(point: dict[str, Any], inputs: int = 44) -> int:
    """Weights and biases of dl1's network at ``point`` (``inputs`` -> layer1..3 -> 3), as dl1 records them."""
    widths = [inputs, point["layer1"], point["layer2"], point["layer3"], 3]
    return sum(a * b + b for a, b in itertools.pairwise(widths))


# -- training (TensorFlow) ----------------------------------------------------------------------------------------


def group_seconds(
    events: list[tuple[str, int, float]], groups: dict[str, int], started: float
) -> dict[str, list[float]]:
    """Epoch wall seconds per network from ``(key, epoch, time)`` events in the order they came: a fused group's
    epoch takes from its previous epoch's last report (or the previous group's last report) to this epoch's last,
    split evenly over the group's networks."""
    sizes: dict[int, int] = {}
    for group in groups.values():
        sizes[group] = sizes.get(group, 0) + 1
    last_of: dict[tuple[int, int], float] = {}
    for key, epoch, at in events:
        last_of[(groups[key], epoch)] = at
    start_of: dict[int, float] = {}
    previous = started
    for key, _, at in events:
        start_of.setdefault(groups[key], previous)
        previous = at
    out: dict[str, list[float]] = {}
    for key, epoch, _ in events:
        group = groups[key]
        begin = last_of.get((group, epoch - 1), start_of[group])
        out.setdefault(key, []).append(round((last_of[(group, epoch)] - begin) / sizes[group], 4))
    return out


def fused_groups(block: list[tuple[int, dict[str, Any]]]) -> dict[str, int]:
    """The fused group of each network of a block, as ``train_many`` forms them (by batch size, ``FUSE`` at a
    time, in order)."""
    by_batch: dict[int, list[str]] = {}
    for index, point in block:
        by_batch.setdefault(point["batch_size"], []).append(f"d{index}")
    groups: dict[str, int] = {}
    for keys in by_batch.values():
        for start in range(0, len(keys), FUSE):
            number = len(set(groups.values()))
            groups.update({key: number for key in keys[start : start + FUSE]})
    return groups


def train_block(data, dataset, block: list[tuple[int, dict[str, Any]]], train_settings) -> list[dict[str, Any]]:
    """Design points trained fused by batch size: per network its val_loss and wall seconds per epoch, and its
    best epoch's rejections and parameter count."""
    from dl1.model import parse_combination
    from dl1.record_metrics import parameter_count, tagging_record_metrics
    from dl1.train import train_many

    curves: dict[str, list[float | None]] = {}
    events: list[tuple[str, int, float]] = []
    outcomes: dict[str, Any] = {}

    def on_epoch(key: str, epoch: int, entry: dict[str, float]) -> None:
        events.append((key, epoch, time.perf_counter()))
        curves.setdefault(key, []).append(entry["val_loss"] if math.isfinite(entry["val_loss"]) else None)

    def on_done(outcome) -> None:
        physics: dict[str, float] = {}
        if outcome.model is not None:
            probs = outcome.model.predict(dataset.validation.x)
            tagging = tagging_record_metrics(probs, dataset.validation.y, train_settings.f_c, train_settings.f_b)
            physics = {k: tagging[k] for k in ("light_rejection_77", "c_rejection_77") if k in tagging}
            physics["n_parameters"] = float(parameter_count(outcome.model))
            outcome.model = None  # free it: a block holds 24
        outcomes[outcome.key] = (outcome.error, physics)

    jobs = [(f"d{index}", parse_combination(point, train_settings.model_defaults())) for index, point in block]
    started = time.perf_counter()
    train_many(data, jobs, train_settings, on_done, on_epoch=on_epoch, keep_models=True)
    seconds = group_seconds(events, fused_groups(block), started)
    return [
        {
            "index": index,
            "parameters": point,
            "val_loss": curves.get(f"d{index}", []),
            "epoch_seconds": seconds.get(f"d{index}", []),
            "metrics": outcomes[f"d{index}"][1],
            "error": outcomes[f"d{index}"][0],
        }
        for index, point in block
    ]


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows a (possibly interrupted) run appended; a torn last line is left out."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def train(points: int, cache: Path, say: Callable[[str], None] = print) -> Path:
    """Train the design's first ``points`` points not yet in the cache, appending each row as it finishes."""
    import tensorflow as tf

    from dl1.data import load_dataset
    from dl1.train import ResidentData, parse_settings

    tf.config.threading.set_intra_op_parallelism_threads(1)  # 2 shared cores: one thread, under nice
    tf.config.threading.set_inter_op_parallelism_threads(1)
    path = cache / f"design-{design_key(SPACE, SETTINGS)}.jsonl"
    cache.mkdir(parents=True, exist_ok=True)
    done = {row["index"] for row in read_rows(path)}
    train_settings = parse_settings(SETTINGS)
    dataset = load_dataset(SETTINGS["data"], with_test=False)
    data = ResidentData(dataset.train, dataset.validation)
    say(f"design: {len(done)} of {points} trained in {path}; {dataset.describe()}")
    started = time.perf_counter()
    todo = [(index, point) for index, point in enumerate(design()[:points]) if index not in done]
    with path.open("a") as out:
        for start in range(0, len(todo), BLOCK):
            rows = train_block(data, dataset, todo[start : start + BLOCK], train_settings)
            out.write("".join(json.dumps(row) + "\n" for row in rows))
            out.flush()
            say(f"{start + len(rows)} of {len(todo)} trained ({time.perf_counter() - started:.0f} s so far)")
    return path


def export(cache: Path, target: Path = COMMITTED) -> dict[str, Any]:
    """The compact copy of the cached rows (4 significant digits), written to ``target``."""
    import tensorflow as tf

    from dl1.data import load_dataset

    rows = sorted(read_rows(cache / f"design-{design_key(SPACE, SETTINGS)}.jsonl"), key=lambda r: r["index"])

    def short(value: float | None) -> float | None:
        return None if value is None else float(f"{value:.{SIGNIFICANT}g}")

    table = {
        "key": design_key(SPACE, SETTINGS),
        "space": SPACE,
        "settings": SETTINGS,
        "design": {"kind": "scrambled Sobol", "seed": DESIGN_SEED, "points": DESIGN_POINTS},
        "about": {
            "tensorflow": tf.__version__,
            "data": load_dataset(SETTINGS["data"], with_test=False).describe(),
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        "rows": [
            {
                "index": r["index"],
                "parameters": r["parameters"],
                "val_loss": [short(v) for v in r["val_loss"]],
                "epoch_seconds": [short(s) for s in r["epoch_seconds"]],
                "metrics": {k: short(v) for k, v in r["metrics"].items()},
            }
            for r in rows
        ],
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(table, separators=(",", ":")) + "\n")
    return table


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["train", "export"])
    parser.add_argument("--points", type=int, default=DESIGN_POINTS, help="train the design's first N points")
    parser.add_argument("--cache", type=Path, default=CACHE, help="folder of the trained rows")
    args = parser.parse_args(argv)
    if args.action == "train":
        train(args.points, args.cache)
    else:
        table = export(args.cache)
        print(f"{len(table['rows'])} rows -> {COMMITTED} ({COMMITTED.stat().st_size} bytes)")


if __name__ == "__main__":
    sys.exit(main())
