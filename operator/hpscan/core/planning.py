"""Manifest -> combinations -> shards. Pure and deterministic: the same spec always gives the same plan.

A combination's *position* is its place in the plan (0..total-1). Its id is ``c<position>-<hash>``: the position
lets the aggregator index a combination without a lookup table, the hash of the parameters lets anyone check that
a record belongs to this plan. Shards take positions round-robin (shard = position % shards), so shard sizes
differ by at most one and every shard gets a mix of cheap and expensive combinations.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from hpscan.api.contract import ArtifactRequest, Combination, ParameterValue, ShardFile
from hpscan.api.parameters import Parameter, ValueRange
from hpscan.api.spec import HPScanSpec
from hpscan.errors import PlanningError

MAX_COMBINATIONS = 1_000_000
"""The most combinations one scan may have; larger scans are refused before anything is built."""

SIGNIFICANT_DIGITS = 6
"""Generated floats are rounded to this many significant digits so ids and tables stay readable."""


def _round(value: float) -> float:
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def _as_ints_if_integral(values: list[float]) -> list[ParameterValue]:
    """Layer widths written as a range stay integers; anything fractional stays a float. A point a few ulps off a
    whole number (a log range's exp(log(x)): 2..1024 gives 7.999999999999998) counts as that whole number."""
    whole = [round(v) for v in values]
    if all(abs(v - w) <= 1e-9 * abs(v) for v, w in zip(values, whole, strict=True)):
        return [int(w) for w in whole]
    return [_round(v) for v in values]


def _sample_ordinals(rng: random.Random, grid: int, count: int) -> list[int]:
    """``count`` distinct ordinals of a grid of ``grid`` points. random.sample needs len(range(grid)), which
    overflows past 2**63 points; there, draws are so sparse that rejecting the rare repeat is cheap."""
    if grid <= sys.maxsize:
        return rng.sample(range(grid), count)
    picked: set[int] = set()
    while len(picked) < count:
        picked.add(rng.randrange(grid))
    return list(picked)


def _range_size(r: ValueRange) -> int | None:
    if r.count is not None:
        return r.count
    if r.step is not None:
        return math.floor((r.max - r.min) / r.step + 1e-9) + 1
    return None


def axis_size(parameter: Parameter) -> int | None:
    """Number of points on an axis, or None for a continuous range (random sampling only)."""
    if parameter.values is not None:
        return len(parameter.values)
    assert parameter.range is not None
    return _range_size(parameter.range)


def axis_values(parameter: Parameter) -> list[ParameterValue]:
    """The points of a discrete axis, in order."""
    if parameter.values is not None:
        return list(parameter.values)
    r = parameter.range
    assert r is not None
    size = _range_size(r)
    if size is None:
        raise PlanningError(f"parameter {parameter.name!r}: a continuous range has no list of points")
    if r.step is not None:
        return _as_ints_if_integral([r.min + i * r.step for i in range(size)])
    if size == 1:
        return _as_ints_if_integral([r.min])
    if r.scale == "log":
        lo, hi = math.log(r.min), math.log(r.max)
        points = [math.exp(lo + i * (hi - lo) / (size - 1)) for i in range(size)]
    else:
        points = [r.min + i * (r.max - r.min) / (size - 1) for i in range(size)]
    values = _as_ints_if_integral(points)
    if isinstance(values[0], float):  # the ends as the user wrote them, not rounded like the points between
        values[0], values[-1] = r.min, r.max
    return values


def _draw(rng: random.Random, parameter: Parameter, discrete: list[ParameterValue] | None) -> ParameterValue:
    if discrete is not None:
        return discrete[rng.randrange(len(discrete))]
    r = parameter.range
    assert r is not None
    if r.scale == "log":
        return _round(math.exp(rng.uniform(math.log(r.min), math.log(r.max))))
    return _round(rng.uniform(r.min, r.max))


def combination_id(position: int, parameters: dict[str, ParameterValue], width: int) -> str:
    """``c<position>-<8 hex of the parameters' hash>``, e.g. ``c0042-1f3a9b0c``."""
    canonical = json.dumps(parameters, sort_keys=True, separators=(",", ":"))
    return f"c{position:0{width}d}-{hashlib.sha256(canonical.encode()).hexdigest()[:8]}"


def position_of(combination_id_: str) -> int:
    """The plan position encoded in a combination id (ValueError when it is not an hpscan id)."""
    head, _, digest = combination_id_.partition("-")
    if not head.startswith("c") or len(digest) != 8:
        raise ValueError(f"not an hpscan combination id: {combination_id_!r}")
    return int(head[1:])


@dataclass(frozen=True)
class Plan:
    """The planned scan. Combinations are built on demand, shard by shard, so a big plan stays small in memory."""

    scan: str
    spec: HPScanSpec
    total: int
    shard_count: int
    notes: tuple[str, ...] = ()
    pull: bool = False
    """Shards are workers that pull trials (spec.pull): which shard runs a combination is known from its record."""
    adaptive: bool = False
    """Trials are suggested while the scan runs (tpe, cmaes, qmc): positions are known, parameters only once a
    trial is handed out (hpscan.core.search)."""
    # Exactly one of these describes the combinations: grid positions decode to axis indices; random plans
    # keep their sampled grid ordinals, or (with continuous axes) the drawn values themselves.
    _axes: tuple[tuple[ParameterValue, ...], ...] = field(default=(), repr=False)
    _ordinals: tuple[int, ...] | None = field(default=None, repr=False)
    _drawn: tuple[tuple[ParameterValue, ...], ...] | None = field(default=None, repr=False)

    @property
    def parameter_names(self) -> list[str]:
        return [p.name for p in self.spec.parameters]

    @property
    def id_width(self) -> int:
        return max(4, len(str(self.total - 1)))

    def _values_at(self, position: int) -> tuple[ParameterValue, ...]:
        if self._drawn is not None:
            return self._drawn[position]
        ordinal = self._ordinals[position] if self._ordinals is not None else position
        picked: list[ParameterValue] = []
        for axis in reversed(self._axes):  # the last axis varies fastest, as in itertools.product
            ordinal, index = divmod(ordinal, len(axis))
            picked.append(axis[index])
        return tuple(reversed(picked))

    def combination(self, position: int) -> Combination:
        """The combination at a plan position (not for adaptive plans: their trials are suggested as they go)."""
        if self.adaptive:
            raise PlanningError(f"{self.spec.sampling.strategy} trials are suggested while the scan runs")
        if not 0 <= position < self.total:
            raise IndexError(f"position {position} outside a plan of {self.total}")
        parameters = dict(zip(self.parameter_names, self._values_at(position), strict=True))
        return Combination(id=combination_id(position, parameters, self.id_width), parameters=parameters)

    def combinations(self) -> Iterator[Combination]:
        """Every combination, in plan order."""
        return (self.combination(p) for p in range(self.total))

    def shard_of(self, position: int) -> int:
        return position % self.shard_count

    def shard_size(self, shard: int) -> int:
        """Combinations of a shard; for workers that pull, those it gets at once (hpscan.core.search hands out
        the rest while it runs)."""
        if self.pull:
            return 0
        return len(range(shard, self.total, self.shard_count))

    def shard_combinations(self, shard: int) -> list[Combination]:
        if self.pull:
            return []
        return [self.combination(p) for p in range(shard, self.total, self.shard_count)]

    def shard_file(self, shard: int) -> ShardFile:
        """The input file of one shard (what the payload reads)."""
        if not 0 <= shard < self.shard_count:
            raise IndexError(f"shard {shard} outside 0..{self.shard_count - 1}")
        return ShardFile(
            scan=self.scan,
            shard=shard,
            shards=self.shard_count,
            objective=self.spec.objective,
            objectives=self.spec.objectives or [],
            gpu=self.spec.gpu,
            settings=self.spec.payload.settings,
            combinations=self.shard_combinations(shard),
            artifacts=ArtifactRequest(save_models=self.spec.artifacts.save_models),
            pull=self.pull,
        )

    def shard_files(self) -> Iterator[ShardFile]:
        return (self.shard_file(s) for s in range(self.shard_count))

    def owns(self, combination_id_: str, parameters: dict[str, ParameterValue]) -> bool:
        """Whether a record's id and parameters belong to this plan (guards against mixing scans)."""
        try:
            position = position_of(combination_id_)
        except ValueError:
            return False
        if not 0 <= position < self.total:
            return False
        if self.adaptive:  # no list to look in: the id must name these very parameters and the axes hold them
            inside = all(name in parameters for name in self.parameter_names) and len(parameters) == len(
                self.parameter_names
            )
            return inside and combination_id(position, parameters, self.id_width) == combination_id_
        return combination_id(position, parameters, self.id_width) == combination_id_


def _shard_count(spec: HPScanSpec, total: int) -> int:
    if spec.sharding.shards is not None:
        return max(1, min(spec.sharding.shards, total))
    assert spec.sharding.combinations_per_shard is not None
    return max(1, math.ceil(total / spec.sharding.combinations_per_shard))


def plan(scan: str, spec: HPScanSpec) -> Plan:
    """Plan a scan: its combinations and shards. Refuses scans over MAX_COMBINATIONS before building anything."""
    sizes = [axis_size(p) for p in spec.parameters]
    notes: list[str] = []
    ordinals: tuple[int, ...] | None = None
    drawn: tuple[tuple[ParameterValue, ...], ...] | None = None
    axes: tuple[tuple[ParameterValue, ...], ...] = ()

    if spec.sampling.adaptive:
        samples = spec.sampling.samples
        assert samples is not None
        if samples > MAX_COMBINATIONS:
            raise PlanningError(f"sampling.samples is {samples:,}, more than the limit of {MAX_COMBINATIONS:,}")
        grid = math.prod(s for s in sizes) if all(s is not None for s in sizes) else None  # type: ignore[misc]
        if grid is not None and samples > grid:
            notes.append(f"sampling.samples ({samples}) exceeds the {grid} points of the space; it ends when explored")
        total = samples
    elif spec.sampling.strategy == "grid":
        total = math.prod(s or 0 for s in sizes)
        if total > MAX_COMBINATIONS:
            shape = " x ".join(str(s) for s in sizes)
            raise PlanningError(
                f"the grid has {total:,} combinations ({shape}), more than the limit of {MAX_COMBINATIONS:,}; "
                "use fewer points per axis or sampling.strategy: random"
            )
        axes = tuple(tuple(axis_values(p)) for p in spec.parameters)
    else:
        samples = spec.sampling.samples
        assert samples is not None
        if samples > MAX_COMBINATIONS:
            raise PlanningError(f"sampling.samples is {samples:,}, more than the limit of {MAX_COMBINATIONS:,}")
        rng = random.Random(spec.sampling.seed)
        if all(s is not None for s in sizes):
            grid = math.prod(s for s in sizes if s is not None)
            if samples > grid:
                notes.append(f"sampling.samples ({samples}) exceeds the grid ({grid}); the whole grid is used")
            # Sampling grid ordinals without replacement never materialises the grid.
            ordinals = tuple(sorted(_sample_ordinals(rng, grid, min(samples, grid))))
            axes = tuple(tuple(axis_values(p)) for p in spec.parameters)
            total = len(ordinals)
        else:
            discrete = [axis_values(p) if s is not None else None for p, s in zip(spec.parameters, sizes, strict=True)]
            seen: set[tuple[ParameterValue, ...]] = set()
            picked: list[tuple[ParameterValue, ...]] = []
            for _ in range(samples * 20):  # bounded: a small discrete space may not hold `samples` distinct points
                point = tuple(_draw(rng, p, d) for p, d in zip(spec.parameters, discrete, strict=True))
                if point not in seen:
                    seen.add(point)
                    picked.append(point)
                    if len(picked) == samples:
                        break
            if len(picked) < samples:
                notes.append(f"only {len(picked)} distinct combinations could be drawn of {samples} asked")
            drawn = tuple(picked)
            total = len(drawn)

    if total == 0:
        raise PlanningError("the scan has no combinations")
    shard_count = _shard_count(spec, total)
    if spec.sharding.shards is not None and spec.sharding.shards > total:
        notes.append(f"sharding.shards ({spec.sharding.shards}) exceeds the combinations; using {shard_count} shards")
    return Plan(
        scan=scan,
        spec=spec,
        total=total,
        shard_count=shard_count,
        notes=tuple(notes),
        pull=spec.pull,
        adaptive=spec.sampling.adaptive,
        _axes=axes,
        _ordinals=ordinals,
        _drawn=drawn,
    )


def axis_preview(values: Sequence[ParameterValue], limit: int = 6) -> str:
    """A short text of an axis' points for summaries: ``32, 64, 96, ... (10)``."""
    shown = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values[:limit])
    return shown + (f", ... ({len(values)})" if len(values) > limit else "")
