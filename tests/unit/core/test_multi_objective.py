"""Several objectives at once: the spec's rules, the multi-objective study, the Pareto set in the status."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from hpscan.api.contract import ResultRecord
from hpscan.api.spec import HPScanSpec
from hpscan.core.planning import plan
from hpscan.core.ranking import pareto_ids
from hpscan.core.results import aggregate
from hpscan.core.search import Search
from hpscan.core.summary import MAX_STATUS_PARETO, build_status

LIGHT_AND_C = [
    {"metric": "light_rejection_77", "goal": "maximize"},
    {"metric": "c_rejection_77", "goal": "maximize"},
]


def spec(objectives=LIGHT_AND_C, strategy: str = "tpe", samples: int | None = 10, **extra) -> HPScanSpec:
    body: dict = {
        "parameters": [
            {"name": "layer1", "values": [8, 16, 32, 64]},
            {"name": "learning_rate", "range": {"min": 1e-4, "max": 1e-2, "count": 5, "scale": "log"}},
        ],
        "sampling": {"strategy": strategy, **({"samples": samples} if samples else {}), "seed": 2},
        "sharding": {"shards": 2},
        "payload": {"image": "x"},
        **({"objectives": objectives} if objectives is not None else {}),
        **extra,
    }
    return HPScanSpec.model_validate(body)


def test_objectives_make_a_multi_objective_scan_whose_objective_is_the_first():
    scan = spec()
    assert scan.multi_objective and [g.metric for g in scan.goals] == ["light_rejection_77", "c_rejection_77"]
    assert scan.objective.metric == "light_rejection_77" and scan.objective.goal == "maximize"
    # what is written back (a run folder's scan.yaml) validates again to the same spec
    again = HPScanSpec.model_validate(scan.model_dump(mode="json", by_alias=True, exclude_none=True))
    assert again == scan
    shard_file = plan("s", scan).shard_file(0)
    assert [o.metric for o in shard_file.objectives] == ["light_rejection_77", "c_rejection_77"]
    assert shard_file.ranked_metrics() == [
        "light_rejection_77", "light_rejection_77_err", "c_rejection_77", "c_rejection_77_err"
    ]  # fmt: skip
    assert not spec(objectives=None).multi_objective and spec(objectives=None).goals[0].metric == "val_loss"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"objective": {"metric": "val_loss", "goal": "maximize"}}, "give objective or objectives, not both"),
        ({"objectives": [LIGHT_AND_C[0], LIGHT_AND_C[0]]}, "objectives must name different metrics"),
        ({"objectives": LIGHT_AND_C[:1]}, "at least 2 items"),
        ({"objectives": LIGHT_AND_C * 2}, "at most 3 items"),
        ({"earlyStopping": {"strategy": "asha"}}, "a scan with several objectives cannot be pruned"),
        ({"sampling": {"strategy": "cmaes", "samples": 5}}, "cmaes has no multi-objective form"),
        ({"objectives": [{"metric": "rejection at 77%", "goal": "maximize"}, LIGHT_AND_C[1]]}, "should match pattern"),
    ],
)
def test_what_a_multi_objective_scan_refuses_names_the_cause(change, message):
    body = {k: v for k, v in {"objectives": LIGHT_AND_C}.items()} | change
    with pytest.raises(ValidationError, match=message):
        spec(objectives=body.pop("objectives"), **body)


def test_an_objective_equal_to_the_first_of_objectives_is_accepted():
    assert spec(objective=LIGHT_AND_C[0]).objective.metric == "light_rejection_77"


def physics(position_id: str, parameters: dict, light: float, charm: float, shard: int = 0) -> ResultRecord:
    metrics = {"light_rejection_77": light, "light_rejection_77_err": light / 20, "c_rejection_77": charm,
               "c_rejection_77_err": charm / 50, "val_loss": 0.6}  # fmt: skip
    return ResultRecord(id=position_id, shard=shard, parameters=parameters, metrics=metrics, status="succeeded")


@pytest.mark.parametrize("strategy", ["tpe", "nsga2", "qmc"])
def test_a_multi_objective_study_is_told_every_objective_and_spends_its_budget(strategy):
    planned = plan("s", spec(strategy=strategy, samples=10))
    search = Search(planned)
    assert search.study.directions[0].name == "MAXIMIZE" and len(search.study.directions) == 2
    rng = random.Random(0)
    told = 0
    while not search.all_handed_out:
        for c in search.hand_out(0, 2):
            search.record(physics(c.id, c.parameters, rng.uniform(50, 200), rng.uniform(3, 8)))
            told += 1
    assert told == search.handed_out
    done = [t for t in search.study.trials if t.state.name == "COMPLETE"]
    assert len(done) >= 10 and all(len(t.values) == 2 for t in done)
    assert len(search.study.best_trials) >= 1  # Optuna's own Pareto set


def test_a_record_missing_one_objective_is_told_as_failed_not_as_a_point():
    planned = plan("s", spec())
    search = Search(planned)
    [c] = search.hand_out(0, 1)
    search.record(ResultRecord(id=c.id, shard=0, parameters=c.parameters, metrics={"light_rejection_77": 100.0},
                               status="succeeded"))  # fmt: skip
    assert [t.state.name for t in search.study.trials] == ["FAIL"]


def grid_records(scan: HPScanSpec, values: list[tuple[float, float]]) -> list[ResultRecord]:
    planned = plan("s", scan)
    return [
        physics(planned.combination(i).id, planned.combination(i).parameters, light, charm)
        for i, (light, charm) in enumerate(values)
    ]


def test_the_status_holds_the_pareto_set_in_any_order_with_duplicates():
    scan = spec(strategy="grid", samples=None)
    rng = random.Random(1)
    values = [(rng.uniform(50, 200), rng.uniform(3, 8)) for _ in range(20)]
    records = grid_records(scan, values)
    expected = pareto_ids({r.id: [r.metrics["light_rejection_77"], r.metrics["c_rejection_77"]] for r in records},
                          ["maximize", "maximize"])  # fmt: skip
    planned = plan("s", scan)
    for order in range(3):
        shuffled = records + records[:5]
        random.Random(order).shuffle(shuffled)
        status = build_status(planned, aggregate(planned, shuffled), {})
        assert [m.id for m in status.pareto] == expected
        assert status.pareto_size == len(expected) and status.pareto_omitted == 0
    first = status.pareto[0]
    assert set(first.values) == {"light_rejection_77", "c_rejection_77"}
    assert first.errors["light_rejection_77"] == pytest.approx(first.values["light_rejection_77"] / 20)
    assert status.best is not None and status.best.id == first.id  # best: by the first objective


def test_a_long_pareto_set_is_cut_in_the_object_and_counted_whole():
    scan = spec(strategy="grid", samples=None)
    values = [(100.0 + i, 20.0 - i * 0.5) for i in range(20)]  # every point a trade-off: all 20 in the set
    planned = plan("s", scan)
    status = build_status(planned, aggregate(planned, grid_records(scan, values)), {})
    assert status.pareto_size == 20
    assert len(status.pareto) == min(20, MAX_STATUS_PARETO) and status.pareto_omitted == 20 - len(status.pareto)


def test_a_single_objective_scan_has_no_pareto_set():
    scan = spec(objectives=None, strategy="grid", samples=None)
    planned = plan("s", scan)
    status = build_status(planned, aggregate(planned, grid_records(scan, [(100.0, 5.0)])), {})
    assert status.pareto == [] and status.pareto_size is None


def test_leaders_within_errors_are_tied_in_the_status_and_a_clear_best_is_named():
    scan = spec(objectives=None, strategy="grid", samples=None, objective=LIGHT_AND_C[0])
    planned = plan("s", scan)
    close = grid_records(scan, [(211.0, 7.0), (205.0, 7.0), (150.0, 7.0)])  # errors 5% of the value: 10.6, 10.3
    status = build_status(planned, aggregate(planned, close), {})
    assert status.tied == [close[0].id, close[1].id]
    assert status.top[0].error == pytest.approx(211.0 / 20)
    assert "best light_rejection_77 tied within errors: 2 of the 3 best" in (status.message or "")
    apart = grid_records(scan, [(300.0, 7.0), (205.0, 7.0)])
    status = build_status(planned, aggregate(planned, apart), {})
    assert status.tied == [] and "tied" not in (status.message or "")


def test_an_error_that_is_no_error_is_ignored_not_fatal():
    scan = spec(strategy="grid", samples=None)
    planned = plan("s", scan)
    [odd] = grid_records(scan, [(150.0, 5.0)])
    odd = odd.model_copy(
        update={"metrics": odd.metrics | {"light_rejection_77_err": -1.0, "c_rejection_77_err": float("nan")}}
    )
    status = build_status(planned, aggregate(planned, [odd]), {})
    assert status.top[0].error is None and status.pareto[0].errors == {}


def test_set_may_reorder_the_objectives_of_a_local_run():
    from pathlib import Path

    from hpscan.cli.run import apply_overrides
    from hpscan.core.manifest import load_scan

    scan = load_scan(Path("examples/multi-objective.yaml"))
    swapped = apply_overrides(scan, ["objectives=[{metric: c_rejection_77, goal: maximize}, "
                                     "{metric: light_rejection_77, goal: maximize}]"])  # fmt: skip
    assert swapped.spec.objective.metric == "c_rejection_77"
    assert apply_overrides(scan, ["sampling.samples=4"]).spec.objective.metric == "light_rejection_77"
