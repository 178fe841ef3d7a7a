"""The planner: deterministic, complete, balanced, and refusing what would not fit."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpscan.api.spec import HPScanSpec
from hpscan.core.planning import MAX_COMBINATIONS, axis_values, plan, position_of
from hpscan.errors import PlanningError


def make_spec(parameters: list[dict], sharding: dict | None = None, sampling: dict | None = None) -> HPScanSpec:
    return HPScanSpec.model_validate(
        {
            "parameters": parameters,
            "sharding": sharding or {"shards": 3},
            "sampling": sampling or {"strategy": "grid"},
            "payload": {"image": "example.org/payload:1"},
        }
    )


def test_log_range_has_exact_ends_and_geometric_steps():
    spec = make_spec([{"name": "lr", "range": {"min": 1e-4, "max": 1e-2, "count": 5, "scale": "log"}}])
    values = axis_values(spec.parameters[0])
    assert values[0] == 1e-4 and values[-1] == 1e-2
    assert values[2] == pytest.approx(1e-3)
    ratios = [b / a for a, b in itertools.pairwise(values)]
    assert all(r == pytest.approx(10**0.5, rel=1e-5) for r in ratios)


def test_integer_step_range_gives_integers():
    spec = make_spec([{"name": "layer1", "range": {"min": 32, "max": 256, "step": 32}}])
    assert axis_values(spec.parameters[0]) == [32, 64, 96, 128, 160, 192, 224, 256]
    assert all(type(v) is int for v in axis_values(spec.parameters[0]))


def test_linear_count_range_with_fractions_stays_float():
    spec = make_spec([{"name": "dropout", "range": {"min": 0, "max": 0.5, "count": 3}}])
    assert axis_values(spec.parameters[0]) == [0.0, 0.25, 0.5]


def test_grid_is_the_cartesian_product_in_order():
    spec = make_spec([{"name": "a", "values": [1, 2]}, {"name": "b", "values": ["x", "y", "z"]}], {"shards": 1})
    planned = plan("s", spec)
    assert [tuple(c.parameters.values()) for c in planned.combinations()] == [
        (1, "x"), (1, "y"), (1, "z"), (2, "x"), (2, "y"), (2, "z"),
    ]  # fmt: skip


def test_seed_scan_gives_800_distinct_combinations_in_10_shards_of_80():
    from hpscan.core.manifest import load_scan

    scan = load_scan(__import__("pathlib").Path("examples/dl1-seed-scan.yaml"))
    planned = plan(scan.metadata.name, scan.spec)
    files = list(planned.shard_files())
    assert len(files) == 10
    assert [len(f.combinations) for f in files] == [80] * 10
    ids = [c.id for f in files for c in f.combinations]
    assert len(set(ids)) == 800
    assert len({tuple(sorted(c.parameters.items())) for f in files for c in f.combinations}) == 800


def test_oversized_grid_is_refused_with_its_size_without_building_it():
    axes = [{"name": f"p{i}", "range": {"min": 1, "max": 100, "count": 100}} for i in range(5)]
    with pytest.raises(PlanningError, match="10,000,000,000 combinations"):
        plan("huge", make_spec(axes))


def test_random_sampling_from_a_huge_grid_is_cheap_and_reproducible():
    axes = [{"name": f"p{i}", "range": {"min": 1, "max": 1000, "count": 1000}} for i in range(6)]
    spec = make_spec(axes, {"combinationsPerShard": 10}, {"strategy": "random", "samples": 50, "seed": 7})
    first, second = plan("r", spec), plan("r", spec)
    assert first.total == 50 and first.shard_count == 5
    assert list(first.combinations()) == list(second.combinations())
    other = plan("r", spec.model_copy(update={"sampling": spec.sampling.model_copy(update={"seed": 8})}))
    assert list(other.combinations()) != list(first.combinations())


def test_random_sampling_with_continuous_axis_stays_in_range_and_reproducible():
    axes = [
        {"name": "lr", "range": {"min": 1e-5, "max": 1e-1, "scale": "log"}},
        {"name": "act", "values": ["relu", "elu"]},
    ]
    spec = make_spec(axes, {"shards": 4}, {"strategy": "random", "samples": 40, "seed": 3})
    planned = plan("r", spec)
    values = [c.parameters["lr"] for c in planned.combinations()]
    assert planned.total == 40
    assert all(1e-5 <= v <= 1e-1 for v in values)
    assert values == [c.parameters["lr"] for c in plan("r", spec).combinations()]


def test_more_samples_than_grid_uses_whole_grid_with_a_note():
    spec = make_spec([{"name": "a", "values": [1, 2, 3]}], {"shards": 1}, {"strategy": "random", "samples": 10})
    planned = plan("r", spec)
    assert planned.total == 3
    assert any("exceeds the grid" in note for note in planned.notes)


def test_more_shards_than_combinations_clamps():
    planned = plan("s", make_spec([{"name": "a", "values": [1, 2]}], {"shards": 5}))
    assert planned.shard_count == 2
    assert planned.notes


def test_owns_rejects_records_of_another_plan():
    planned = plan("s", make_spec([{"name": "a", "values": [1, 2, 3]}]))
    combo = planned.combination(1)
    assert planned.owns(combo.id, combo.parameters)
    assert not planned.owns(combo.id, {"a": 3})
    assert not planned.owns("c9999-00000000", combo.parameters)
    assert not planned.owns("not-an-id", combo.parameters)


axis_strategy = st.one_of(
    st.lists(st.integers(-1000, 1000), min_size=1, max_size=5, unique=True).map(lambda v: {"values": v}),
    st.lists(st.sampled_from(["relu", "elu", "tanh", "gelu", "selu"]), min_size=1, max_size=5, unique=True).map(
        lambda v: {"values": v}
    ),
    st.tuples(st.floats(1e-6, 1.0), st.floats(1.5, 100.0), st.integers(1, 6), st.sampled_from(["linear", "log"])).map(
        lambda t: {"range": {"min": t[0], "max": t[1], "count": t[2], "scale": t[3]}}
    ),
)


@st.composite
def scans(draw):
    axes = draw(st.lists(axis_strategy, min_size=1, max_size=4))
    parameters = [{"name": f"p{i}", **axis} for i, axis in enumerate(axes)]
    sharding = draw(st.one_of(st.builds(lambda n: {"shards": n}, st.integers(1, 12)),
                              st.builds(lambda n: {"combinationsPerShard": n}, st.integers(1, 50))))  # fmt: skip
    sampling = draw(st.one_of(st.just({"strategy": "grid"}),
                              st.builds(lambda n, s: {"strategy": "random", "samples": n, "seed": s},
                                        st.integers(1, 60), st.integers(0, 2**31))))  # fmt: skip
    return make_spec(parameters, sharding, sampling)


@settings(max_examples=150, deadline=None)
@given(scans())
def test_every_combination_is_in_exactly_one_shard_and_sizes_differ_by_at_most_one(spec):
    planned = plan("p", spec)
    files = list(planned.shard_files())
    ids = [c.id for f in files for c in f.combinations]
    assert len(ids) == planned.total == len(set(ids))
    sizes = [len(f.combinations) for f in files]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    assert {position_of(i) for i in ids} == set(range(planned.total))
    if spec.sharding.combinations_per_shard:
        assert planned.shard_count == math.ceil(planned.total / spec.sharding.combinations_per_shard)
    for shard_file in files:
        for combo in shard_file.combinations:
            assert planned.shard_of(position_of(combo.id)) == shard_file.shard
            assert set(combo.parameters) == {p.name for p in spec.parameters}


@settings(max_examples=100, deadline=None)
@given(scans())
def test_same_spec_same_plan(spec):
    again = HPScanSpec.model_validate(spec.model_dump(by_alias=True))
    assert [f.model_dump() for f in plan("p", spec).shard_files()] == [
        f.model_dump() for f in plan("p", again).shard_files()
    ]


def test_limit_is_documented_value():
    assert MAX_COMBINATIONS == 1_000_000


def test_random_sampling_from_a_grid_past_2_to_the_63_points():
    """Eleven axes of 100 points is 10**22 combinations: random.sample's range() overflows there (it used to raise
    OverflowError, an internal error in the CLI and a retry loop in the operator)."""
    axes = [{"name": f"p{i}", "values": list(range(100))} for i in range(11)]
    spec = make_spec(axes, {"shards": 2}, {"strategy": "random", "samples": 30, "seed": 1})
    first, again = plan("big", spec), plan("big", spec)
    combinations = [c for f in first.shard_files() for c in f.combinations]
    assert len({c.id for c in combinations}) == 30
    assert combinations == [c for f in again.shard_files() for c in f.combinations]
    assert all(0 <= v < 100 for c in combinations for v in c.parameters.values())
