"""The aggregator: the same summary whatever the order, duplicates ignored, the right top-k, a small status."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from hpscan.api.contract import ResultRecord, parse_records
from hpscan.api.spec import HPScanSpec
from hpscan.core.planning import plan
from hpscan.core.results import aggregate


def make_plan(n: int = 40, goal: str = "minimize", top_k: int = 5, shards: int = 4):
    spec = HPScanSpec.model_validate(
        {
            "objective": {"metric": "val_loss", "goal": goal},
            "parameters": [{"name": "x", "range": {"min": 0, "max": n - 1, "step": 1}}],
            "sharding": {"shards": shards},
            "payload": {"image": "p"},
            "topK": top_k,
        }
    )
    return plan("t", spec)


def record(planned, position: int, value: float | None, status: str = "succeeded") -> ResultRecord:
    combo = planned.combination(position)
    metrics = {} if value is None else {"val_loss": value}
    return ResultRecord(
        id=combo.id, shard=planned.shard_of(position), parameters=combo.parameters, metrics=metrics, status=status
    )


def summary_of(agg):
    return (
        agg.succeeded,
        agg.failed,
        agg.shard_done,
        agg.shard_failed,
        [(e.id, e.value) for e in agg.top],
    )


record_specs = st.lists(
    st.tuples(
        st.integers(0, 39),
        st.one_of(st.floats(0, 10, allow_nan=False), st.just(float("nan"))),
        st.sampled_from(["succeeded", "failed"]),
    ),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(record_specs, st.randoms(use_true_random=False), st.sampled_from(["minimize", "maximize"]))
def test_same_summary_in_any_order_and_with_duplicates(specs, rnd, goal):
    planned = make_plan(goal=goal)
    records = [record(planned, p, v, s) for p, v, s in specs]
    shuffled = records + records[: len(records) // 2]  # duplicates too
    rnd.shuffle(shuffled)
    assert summary_of(aggregate(planned, records)) == summary_of(aggregate(planned, shuffled))


@settings(max_examples=200, deadline=None)
@given(record_specs, st.sampled_from(["minimize", "maximize"]), st.integers(1, 7))
def test_top_k_is_the_k_best_of_each_combinations_best_value(specs, goal, k):
    planned = make_plan(goal=goal, top_k=k)
    agg = aggregate(planned, [record(planned, p, v, s) for p, v, s in specs])
    best_per_position: dict[int, float] = {}
    for position, value, status in specs:
        if status == "succeeded" and value == value:
            old = best_per_position.get(position)
            better = old is None or (value < old if goal == "minimize" else value > old)
            best_per_position[position] = value if better else old
    sign = 1 if goal == "minimize" else -1
    expected = sorted(best_per_position.items(), key=lambda kv: (sign * kv[1], planned.combination(kv[0]).id))[:k]
    assert [(e.id, e.value) for e in agg.top] == [(planned.combination(p).id, v) for p, v in expected]
    succeeded = set(best_per_position)
    failed = {p for p, _, _ in specs} - succeeded
    assert (agg.succeeded, agg.failed) == (len(succeeded), len(failed))


def test_failed_then_succeeded_counts_once_as_succeeded():
    planned = make_plan()
    agg = aggregate(planned, [record(planned, 3, None, "failed"), record(planned, 3, 0.5)])
    assert (agg.succeeded, agg.failed, agg.recorded) == (1, 0, 1)
    assert agg.shard_done[planned.shard_of(3)] == 1


def test_records_of_another_scan_are_ignored_and_counted():
    planned = make_plan()
    other = make_plan(n=50)
    stray = record(other, 45, 0.1)
    agg = aggregate(planned, [stray, record(planned, 1, 0.9)])
    assert agg.foreign == 1 and agg.recorded == 1 and agg.best.value == 0.9


def test_unreadable_lines_are_reported_and_the_rest_kept():
    planned = make_plan()
    good = json.dumps(record(planned, 2, 0.3).to_wire())
    lines = [good + "\n", "{not json\n", '{"id": "x"}\n', good[:20]]
    records, problems = parse_records(lines)
    assert len(records) == 1
    assert [p.line for p in problems] == [2, 3, 4]
    assert "not JSON" in problems[0].reason and "shard" in problems[1].reason


def test_a_scan_of_100000_combinations_keeps_a_small_summary_and_status():
    from hpscan.core.summary import build_status

    spec = HPScanSpec.model_validate(
        {
            "parameters": [
                {"name": "x", "range": {"min": 0, "max": 999, "step": 1}},
                {"name": "y", "range": {"min": 1e-5, "max": 1e-1, "count": 100, "scale": "log"}},
            ],
            "sharding": {"shards": 10},
            "payload": {"image": "p"},
        }
    )
    planned = plan("big", spec)
    assert planned.total == 100_000
    agg = aggregate(planned, (record(planned, p, p / 1000) for p in range(0, 100_000, 3)))
    assert len(agg.states) == 100_000  # one byte per combination, whatever the number of records
    assert len(agg.top) == 5 and agg.top[0].value == 0.0
    status = build_status(planned, agg, shard_states={})
    assert len(json.dumps(status.to_wire())) < 4096


def test_epochs_saved_by_resuming_are_counted_beside_those_saved_by_pruning():
    from hpscan.core.summary import build_status

    planned = make_plan()

    def trained(position: int, status: str, epochs: int, resumed_from: list[int] | None) -> ResultRecord:
        return record(planned, position, 0.5, status).model_copy(
            update={"epochs": epochs, "max_epochs": 10, "resumed_from": resumed_from}
        )

    records = [
        trained(1, "succeeded", 10, [3, 7]),  # interrupted twice: 3 + 7 epochs not trained again
        trained(2, "pruned", 4, [2]),  # resumed at 2, then pruned at 4: 6 saved by pruning
        trained(3, "succeeded", 10, None),
        trained(1, "succeeded", 10, [3, 7]),  # the same record handed over twice counts once
    ]
    training = build_status(planned, aggregate(planned, records), {}).training
    assert (training.epochs, training.epochs_saved, training.epochs_resumed) == (24, 6, 12)
    assert training.to_wire() == {"epochs": 24, "epochsSaved": 6, "epochsResumed": 12}
