"""The multi-objective example (examples/multi-objective.yaml) reduced to test size, and its front: shared by the
local, pool and operator tests of a two-objective scan."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from PIL import Image

from hpscan.core.ranking import pareto_ids

OBJECTIVES = ("light_rejection_77", "c_rejection_77")
SAMPLES = 6
SETTINGS = {  # the example's dl1 settings, reduced: 3 epochs on 48k synthetic jets
    "epochs": 3,
    "patience": 3,
    "fuse": 1,
    "batch_size": 1000,
    "f_c": 0.018,
    "data": {"synthetic": {"jets": 48000, "seed": 1}},
}


def points_of(records: Iterable[dict]) -> dict[str, list[float]]:
    """Each record's two rejections, by id."""
    return {r["id"]: [r["metrics"][m] for m in OBJECTIVES] for r in records}


def front_of(records: Iterable[dict]) -> list[str]:
    """The non-dominated records' ids, computed here from the records (both rejections maximised)."""
    return pareto_ids(points_of(records), ["maximize", "maximize"])


def drawn_front(figure: Path) -> list[str]:
    """The trial ids pareto-front.png says it joins (the report writes them into its PNG text)."""
    with Image.open(figure) as image:
        return sorted(json.loads(image.text["hpscan"])["pareto"])
