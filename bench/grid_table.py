"""The 200-point tabular grid of real dl1 trainings that bench/pull.py costs its trials by (and bench/search.py
replayed before its surrogate): the whole grid of a fixed 4-parameter dl1 space trained once, for real
(``dl1.train.train_many``, TensorFlow, synthetic jets, patience 0 so every curve runs to the last epoch), each
combination's per-epoch val_loss and epoch wall times kept. Cached in ~/.cache/hpscan-bench/ under a key of the
space and the settings; trained on first use (minutes).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SPACE: list[dict[str, Any]] = [
    {"name": "learning_rate", "range": {"min": 1.0e-4, "max": 1.0e-2, "count": 5, "scale": "log"}},
    {"name": "layer1", "values": [16, 32, 64, 128]},
    {"name": "layer2", "values": [16, 64]},
    {"name": "batch_size", "values": [32, 64, 128, 256, 512]},
]
"""The scan's parameters, as in an HPScan's ``spec.parameters``: 5 x 4 x 2 x 5 = 200 grid points."""

SETTINGS: dict[str, Any] = {
    "epochs": 20,
    "patience": 0,  # every curve complete: pruning is the strategies' business, not the payload's
    "fuse": 1,  # one combination per graph, so each epoch time is that combination's own
    "seed": 0,
    "data": {"synthetic": {"jets": 36000, "seed": 1}},  # 6,000 validation jets: val_loss noise well under 1%
}
"""``spec.payload.settings`` of the grid that fills the table."""

TABLE_VERSION = 1
"""Bumped when the table's layout or the way it is filled changes (a new cache key)."""

CACHE = Path.home() / ".cache" / "hpscan-bench"


# -- the table ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One grid point's real training: val_loss and wall seconds per epoch (a failed one ends non-finite)."""

    id: str
    parameters: dict[str, Any]
    val_loss: tuple[float, ...]
    epoch_seconds: tuple[float, ...]
    metrics: Mapping[str, float] = field(default_factory=dict)  # what its record carries besides val_loss

    @property
    def value(self) -> float:
        """What the payload records for the full run: the best epoch's val_loss (inf when it diverged)."""
        finite = [v for v in self.val_loss if math.isfinite(v)]
        return min(finite) if finite and len(finite) == len(self.val_loss) else math.inf


@dataclass(frozen=True)
class Table:
    key: str
    epochs: int
    rows: tuple[Row, ...]
    about: dict[str, Any] = field(default_factory=dict)

    @property
    def best(self) -> float:
        return min(r.value for r in self.rows)

    @property
    def grid_epochs(self) -> int:
        """Trial-epochs of the full grid: every combination to its last epoch (or the epoch it failed at)."""
        return sum(len(r.val_loss) for r in self.rows)

    def row(self, parameters: Mapping[str, Any]) -> Row:
        """The row of a point of the table (KeyError naming the point when it is not one)."""
        key = json.dumps(dict(parameters), sort_keys=True)
        for row in self.rows:
            if json.dumps(row.parameters, sort_keys=True) == key:
                return row
        raise KeyError(f"{dict(parameters)} is not a point of the table")


def table_key(space: list[dict[str, Any]], settings: dict[str, Any]) -> str:
    """Cache key of a table: the space, the settings and the table's layout version."""
    text = json.dumps({"space": space, "settings": settings, "version": TABLE_VERSION}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def grid_plan(space: list[dict[str, Any]], shards: int = 1):
    """hpscan's own plan of the grid (its combinations in plan order, round-robin shards)."""
    from hpscan.api.spec import HPScanSpec
    from hpscan.core.planning import plan

    spec = HPScanSpec.model_validate(
        {
            "parameters": space,
            "sampling": {"strategy": "grid"},
            "sharding": {"shards": shards},
            "gpu": {"count": 0, "required": False},
            "payload": {"image": "registry.example.org/hpscan/dl1-payload:0.1.0"},
        }
    )
    return plan("search-bench", spec)


def train_grid(space: list[dict[str, Any]], settings: dict[str, Any]) -> dict[str, Any]:
    """Train every grid point for real, one after the other, and return the table as JSON-ready data."""
    import tensorflow as tf
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from dl1.data import load_dataset
    from dl1.train import ResidentData, device_name, parse_settings

    train_settings = parse_settings(settings)
    combinations = list(grid_plan(space).combinations())
    dataset = load_dataset(settings["data"], with_test=False)
    data = ResidentData(dataset.train, dataset.validation)
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    with Progress(
        TextColumn("training the grid"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True
    ) as progress:
        task = progress.add_task("grid", total=len(combinations))
        for combination in combinations:
            rows.append(_train_one(data, combination, train_settings))
            progress.advance(task)
    return {
        "key": table_key(space, settings),
        "space": space,
        "settings": settings,
        "epochs": settings["epochs"],
        "about": {
            "device": device_name(),
            "tensorflow": tf.__version__,
            "cpus": os.cpu_count(),
            "data": dataset.describe(),
            "train_seconds": round(time.perf_counter() - started, 1),
            "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        "rows": rows,
    }


def _train_one(data, combination, train_settings) -> dict[str, Any]:
    """One grid point trained alone: its val_loss and wall seconds per epoch (the first includes building it)."""
    from dl1.model import parse_combination
    from dl1.train import train_many

    curve: list[float] = []
    seconds: list[float] = []
    errors: list[str] = []
    last = time.perf_counter()

    def on_epoch(_key: str, _epoch: int, entry: dict[str, float]) -> None:
        nonlocal last
        now = time.perf_counter()
        curve.append(entry["val_loss"])
        seconds.append(now - last)
        last = now

    def on_done(outcome) -> None:
        if outcome.error:
            errors.append(outcome.error)

    config = parse_combination(combination.parameters, train_settings.model_defaults())
    train_many(data, [(combination.id, config)], train_settings, on_done, on_epoch=on_epoch)
    return {
        "id": combination.id,
        "parameters": combination.parameters,
        "val_loss": [v if math.isfinite(v) else None for v in curve],
        "epoch_seconds": seconds,
        "error": errors[0] if errors else None,
    }


def table_from_json(raw: dict[str, Any]) -> Table:
    rows = tuple(
        Row(
            id=r["id"],
            parameters=r["parameters"],
            val_loss=tuple(math.inf if v is None else float(v) for v in r["val_loss"]),
            epoch_seconds=tuple(float(s) for s in r["epoch_seconds"]),
        )
        for r in raw["rows"]
    )
    return Table(key=raw["key"], epochs=int(raw["epochs"]), rows=rows, about=raw.get("about", {}))


def load_or_train(
    space: list[dict[str, Any]], settings: dict[str, Any], cache: Path, say: Callable[[str], None] = print
) -> Table:
    """The table of this space and these settings: from the cache, or trained now (and cached, atomically)."""
    path = cache / f"search-{table_key(space, settings)}.json"
    if path.exists():
        say(f"table: {path} (cached; delete it to train again)")
        return table_from_json(json.loads(path.read_text()))
    say(f"table: training the {len(list(grid_plan(space).combinations()))}-point grid once, into {path}")
    raw = train_grid(space, settings)
    cache.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(raw))
    partial.replace(path)
    say(f"table: trained in {raw['about']['train_seconds']} s on {raw['about']['device']}, written to {path}")
    return table_from_json(raw)
