"""The adaptive search ledger (hpscan.core.search): hand-outs within the budget, pruning, take-backs, rebuilds."""

from __future__ import annotations

import pytest

from hpscan.api.contract import ResultRecord
from hpscan.api.parameters import Parameter
from hpscan.api.spec import HPScanSpec
from hpscan.api.trials import Assignment, Progress
from hpscan.core.planning import plan, position_of
from hpscan.core.search import Search, SearchSpace, make_sampler, top_up, workers_to_end


def spec(strategy: str = "tpe", samples: int | None = 12, early: str = "none", **extra: object) -> HPScanSpec:
    body: dict = {
        "parameters": [
            {"name": "learning_rate", "range": {"min": 1e-4, "max": 1e-1, "count": 7, "scale": "log"}},
            {"name": "layer1", "values": [16, 64, 32]},
            {"name": "activation", "values": ["relu", "tanh"]},
        ],
        "sampling": {"strategy": strategy, **({"samples": samples} if samples else {}), "seed": 3},
        "earlyStopping": {"strategy": early, "minEpochs": 1, "reductionFactor": 2},
        "sharding": {"shards": 3},
        "payload": {"image": "x"},
        **extra,
    }
    return HPScanSpec.model_validate(body)


def record(trial_id: str, parameters: dict, status: str = "succeeded", loss: float = 1.0, shard: int = 0):
    metrics = {"val_loss": loss} if status != "failed" else {}
    return ResultRecord(id=trial_id, shard=shard, parameters=parameters, metrics=metrics, status=status)


def test_space_searches_ordered_indices_and_gives_back_the_payloads_values():
    space = SearchSpace(spec().parameters)
    kinds = {a.name: a.kind for a in space.axes}
    assert kinds == {"learning_rate": "ordinal", "layer1": "ordinal", "activation": "categorical"}
    internal = {"learning_rate": 0, "layer1": 2, "activation": "tanh"}
    external = space.external(internal)
    assert external == {"learning_rate": 1e-4, "layer1": 64, "activation": "tanh"}  # layer1 points sorted
    assert space.internal(external) == internal
    continuous = SearchSpace([Parameter.model_validate({"name": "x", "range": {"min": 0.5, "max": 2.0}})])
    assert continuous.external({"x": 1.23456789}) == {"x": 1.23457}


@pytest.mark.parametrize("strategy", ["tpe", "cmaes", "qmc"])  # cmaes needs the cmaes package, qmc scipy
def test_adaptive_trials_stay_within_the_budget_are_distinct_and_belong_to_the_plan(strategy: str):
    planned = plan("s", spec(strategy, samples=12))
    search = Search(planned)
    handed = []
    for worker in range(3):
        handed += search.hand_out(worker, 2)
    assert len(handed) == 6 and search.handed_out == 6
    for combination in handed:  # tell the results, so the sampler learns
        search.record(record(combination.id, combination.parameters, loss=combination.parameters["learning_rate"]))
    while not search.all_handed_out:
        for c in search.hand_out(0, 2):
            search.record(record(c.id, c.parameters, loss=1.0))
            handed.append(c)
    assert len(handed) == 12
    assert len({c.id for c in handed}) == 12
    assert len({tuple(sorted(c.parameters.items())) for c in handed}) == 12  # a repeat is never trained twice
    assert all(planned.owns(c.id, c.parameters) for c in handed)
    assert search.hand_out(1, 5) == []
    assert search.counts == {"suggested": 12, "open": 0, "succeeded": 12, "pruned": 0, "failed": 0}


def test_tpe_is_multivariate_with_the_constant_liar_whatever_optunas_defaults():
    # docs/search.md promises both: the axes' joint density, and trials in flight counted as bad guesses
    sampler = make_sampler(spec("tpe").sampling)
    assert sampler._multivariate is True and sampler._constant_liar is True


def test_a_space_smaller_than_the_budget_ends_once_explored():
    small = spec(samples=50, parameters=[{"name": "activation", "values": ["relu", "tanh", "elu"]}])
    search = Search(plan("s", small))
    seen = []
    while not search.all_handed_out:
        batch = search.hand_out(0, 1)
        for c in batch:
            search.record(record(c.id, c.parameters, loss=len(seen)))
            seen.append(c.parameters["activation"])
        if not batch:
            break
    assert sorted(seen) == ["elu", "relu", "tanh"]
    assert search.explored and search.all_handed_out


def test_asha_stops_a_trial_far_worse_than_the_others_at_its_rung():
    search = Search(plan("s", spec(early="asha")))
    good = search.hand_out(0, 3)
    for c in good:
        assert search.progress([Progress(id=c.id, epoch=1, metrics={"val_loss": 0.5})]) == []
        assert search.progress([Progress(id=c.id, epoch=2, metrics={"val_loss": 0.4})]) == []
    (bad,) = search.hand_out(1, 1)
    stops = search.progress([Progress(id=bad.id, epoch=1, metrics={"val_loss": 9.0})])
    stops += search.progress([Progress(id=bad.id, epoch=2, metrics={"val_loss": 9.0})])
    assert stops == [(1, bad.id)]
    # a stop is sent once; the pruned record is counted as pruned
    assert search.progress([Progress(id=bad.id, epoch=3, metrics={"val_loss": 9.0})]) == []
    search.record(record(bad.id, bad.parameters, status="pruned", loss=9.0, shard=1))
    assert search.counts["pruned"] == 1


def test_a_trial_taken_back_from_a_worker_that_left_goes_to_the_next_worker_once():
    search = Search(plan("s", spec(early="median")))
    first = search.hand_out(0, 2)
    assert search.take_back(0) == [c.id for c in first]
    again = search.hand_out(1, 3)
    assert [c.id for c in again[:2]] == [c.id for c in first]  # the same trials, same ids: never run twice
    assert search.handed_out == 3
    assert search.open_trials(0) == [] and len(search.open_trials(1)) == 3


def test_a_worker_started_again_is_topped_up_and_one_with_nothing_left_does_not_start():
    """The shell's ask/tell surface (hpscan.engine.pull): a worker submitted before and started again never gets a
    second first batch; once the budget is handed out it gets the end line once, and a new worker none at all."""
    search = Search(plan("s", spec("random", samples=4)))
    first = search.trials_to_start(0, 2)
    assert first is not None and len(first) == 2
    assert search.trials_to_start(0, 2) == []  # it holds two open trials: it starts with those
    search.feed([0, 1], per_worker=3)  # 0 topped up to three, 1 gets the last: the budget (4) is spent
    kinds = {worker: [next(iter(line)) for line in lines] for worker, lines in search.waiting_lines().items()}
    assert kinds == {0: ["trial", "end"], 1: ["trial", "end"]}
    search.sent(0)  # worker 1's channel refused: its lines wait, the end line is not added twice
    search.feed([0, 1], per_worker=3)
    assert list(search.waiting_lines()) == [1] and len(search.waiting_lines()[1]) == 2
    assert search.ended_workers == {0}
    search.tell([], [record(c.id, c.parameters) for c in first])
    assert search.trials_to_start(2, 2) is None  # nothing left to hand out and it holds nothing: no job


def test_a_worker_that_ended_well_holding_trials_is_counted_short_and_its_trials_go_back():
    search = Search(plan("s", spec("random", samples=4)))
    held = search.hand_out(0, 2)
    search.tell([], [record(held[0].id, held[0].parameters)])
    assert search.left(0, ended_well=True) == [held[1].id]
    assert search.missing_records() == {0: 1}
    assert search.left(1, ended_well=False) == [] and search.missing_records() == {0: 1}
    assert [c.id for c in search.hand_out(1, 1)] == [held[1].id]  # handed out again, same id


def test_rebuilt_from_the_channels_it_hands_out_only_what_is_left_of_the_budget():
    planned = plan("s", spec(samples=10, early="asha"))
    search = Search(planned)
    assignments = {0: Assignment(), 1: Assignment()}
    records, progress = [], []
    for worker in (0, 1):
        for c in search.hand_out(worker, 3):
            assignments[worker].trials[c.id] = c
            progress.append(Progress(id=c.id, epoch=1, metrics={"val_loss": 1.0}))
    done = list(assignments[0].trials.values())[:2]
    records = [record(c.id, c.parameters, loss=0.5) for c in done]

    rebuilt = Search(planned)
    assert rebuilt.rebuild(assignments, records, progress) == []
    assert rebuilt.handed_out == 6
    assert rebuilt.counts == {"suggested": 6, "open": 4, "succeeded": 2, "pruned": 0, "failed": 0}
    rest = []
    while not rebuilt.all_handed_out:
        rest += rebuilt.hand_out(0, 2)
    assert len(rest) == 4
    held = {i for a in assignments.values() for i in a.trials}
    assert not held & {c.id for c in rest}
    assert {c.id for c in rest}.isdisjoint(held)


def test_grid_workers_get_every_combination_once_in_a_seeded_shuffled_order():
    planned = plan("s", spec(strategy="grid", samples=None, sharding={"shards": 2, "pull": True}))
    search, again = Search(planned), Search(planned)
    handed = [c.id for c in search.hand_out(1, planned.total)]
    assert sorted(handed) == sorted(c.id for c in planned.combinations())
    assert handed != [c.id for c in planned.combinations()]  # not the plan's axis order: fair early rungs
    assert [c.id for c in again.hand_out(0, 5)] == handed[:5]  # the same seed, the same order
    assert planned.shard_file(0).pull and planned.shard_file(0).combinations == []
    rebuilt = Search(planned)
    taken = Assignment()
    taken.fold([{"trial": planned.combination(position_of(i)).model_dump()} for i in handed[:7]])
    rebuilt.rebuild({0: taken}, [], [])
    assert [c.id for c in rebuilt.hand_out(1, 3)] == handed[7:10]  # a restart goes on where the order was


def test_tpe_spends_its_budget_on_a_small_discrete_space_instead_of_repeating_itself():
    small = spec(samples=40)  # 7 x 3 x 2 = 42 points: TPE keeps suggesting what it holds near the end
    search = Search(plan("s", small))
    seen = []
    while not search.all_handed_out:
        for c in search.hand_out(0, 2):
            lr = c.parameters["learning_rate"]
            search.record(record(c.id, c.parameters, loss=abs(lr - 0.01) + (c.parameters["layer1"] == 16)))
            seen.append(tuple(sorted(c.parameters.items())))
    assert len(seen) == len(set(seen)) == 40 and not search.explored


def test_pull_defaults_and_refusals():
    assert spec().pull and spec(strategy="grid", samples=None, early="asha").pull
    assert not spec(strategy="random").pull
    with pytest.raises(ValueError, match="needs workers that pull"):
        spec(sharding={"shards": 2, "pull": False})
    with pytest.raises(ValueError, match="tpe sampling needs samples"):
        spec(samples=None)


def test_hand_out_rules():
    assert top_up({0: 0, 1: 2, 2: 1}, 2) == {0: 2, 2: 1}
    assert workers_to_end([0, 1, 2], [1], all_handed_out=True) == [0, 2]
    assert workers_to_end([0, 1], [], all_handed_out=False) == []
