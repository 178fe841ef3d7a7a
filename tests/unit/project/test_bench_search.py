"""The pure parts of bench/search.py, its surrogate and design, and bench/pull.py: what their figures are computed with."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))

import grid_table
import pull
import search
import search_design
import search_surrogate


def test_epochs_to_reach_is_the_spend_when_the_first_trial_gets_within_the_target():
    finished = [(20, 0.80), (40, 0.70), (60, 0.66), (80, 0.60)]
    assert search.epochs_to_reach(finished, target=0.67, budget=1000) == 60
    assert search.epochs_to_reach(finished, target=0.66, budget=1000) == 60  # "within" includes the bound
    assert search.epochs_to_reach(finished, target=0.5, budget=1000) == 1000  # never: the whole budget
    assert search.epochs_to_reach([], target=0.5, budget=7) == 7


def test_a_rows_value_is_its_best_epoch_and_a_diverged_row_never_counts():
    row = grid_table.Row("c0", {}, (0.9, 0.7, 0.75), (1.0, 1.0, 1.0))
    assert row.value == 0.7
    assert grid_table.Row("c1", {}, (0.9, math.inf), (1.0, 1.0)).value == math.inf
    table = grid_table.Table("k", 3, (row, grid_table.Row("c2", {}, (0.8, 0.72, 0.71), (1, 1, 1))))
    assert table.best == 0.7
    assert table.grid_epochs == 6


def test_the_cache_key_follows_the_space_and_the_settings():
    key = grid_table.table_key(grid_table.SPACE, grid_table.SETTINGS)
    assert key == grid_table.table_key(grid_table.SPACE, dict(grid_table.SETTINGS))
    assert key != grid_table.table_key(grid_table.SPACE, {**grid_table.SETTINGS, "epochs": 19})
    assert key != grid_table.table_key(grid_table.SPACE[:-1], grid_table.SETTINGS)


def test_the_space_is_a_valid_200_point_grid_of_dl1_parameters():
    plan = grid_table.grid_plan(grid_table.SPACE)
    assert plan.total == 200
    from dl1.model import parse_combination

    for combination in plan.combinations():
        parse_combination(combination.parameters)  # dl1 accepts every point


def test_static_shards_wait_for_the_slowest_shard_and_pulling_workers_do_not():
    costs = [5.0, 1.0, 5.0, 1.0]
    shards = [0, 1, 0, 1]  # round-robin: both expensive trials land on shard 0
    assert pull.static_wall(costs, shards, [1.0, 1.0]) == 10.0
    assert pull.pulled_wall(costs, [1.0, 1.0]) == 6.0  # 5 on w0; 1 then 5 on w1; the last 1 on w0 at 5


def test_a_fast_worker_pulls_more_trials_than_its_static_share():
    costs = [1.0] * 6
    assert pull.static_wall(costs, [0, 1, 0, 1, 0, 1], [1.0, 0.5]) == 6.0  # the slow shard: 3 trials x 2 s
    assert pull.pulled_wall(costs, [1.0, 0.5]) == 4.0  # the fast worker takes 4 trials, the slow one 2
    assert pull.pulled_wall(costs, [1.0, 0.5], held=2) == 4.0  # holding the next one changes nothing here


def test_a_worker_holding_its_next_trial_can_be_stuck_with_it():
    costs = [1.0, 4.0, 1.0, 1.0]
    # held 1: w0 takes 0 then 2 then 3 while w1 trains 1: done at 4; held 2: w0 holds 0 and 1, w1 holds 2 and 3
    assert pull.pulled_wall(costs, [1.0, 1.0], held=1) == 4.0
    assert pull.pulled_wall(costs, [1.0, 1.0], held=2) == 5.0


def test_the_static_schedule_is_the_planners_round_robin():
    assert pull.shards_of(grid_table.grid_plan(grid_table.SPACE, 4))[:6] == [0, 1, 2, 3, 0, 1]


def test_trial_costs_are_the_steady_epoch_time_times_the_epochs():
    rows = (
        grid_table.Row("c0", {}, (0.9, 0.8, 0.7), (3.0, 1.0, 1.2)),  # the first epoch builds the graph: left out
        grid_table.Row("c1", {}, (0.9,), (2.0,)),
    )
    assert pull.trial_costs(grid_table.Table("k", 3, rows)) == pytest.approx([3 * 1.1, 2.0])


TOY_SPACE = [{"name": "x", "values": list(range(12))}]
NO_STOPPING = {"strategy": "none"}
ASHA = {"strategy": "asha", "minEpochs": 1, "reductionFactor": 3}


def _toy_table(points: int = 12, epochs: int = 9) -> grid_table.Table:
    """Curves that fall faster for higher x (x = 11 is best), odd x twice as slow per epoch."""
    rows = tuple(
        grid_table.Row(
            f"c{x}",
            {"x": x},
            tuple(1.0 + 1.0 / (1 + x * e) for e in range(1, epochs + 1)),
            tuple(2.0 if x % 2 else 1.0 for _ in range(epochs)),
        )
        for x in range(points)
    )
    return grid_table.Table("toy", epochs, rows)


def test_replaying_the_grid_trains_every_point_once_to_its_last_epoch():
    pytest.importorskip("optuna")
    table = _toy_table()
    run = search.replay(table, search.scan_spec(TOY_SPACE, {"strategy": "grid"}, NO_STOPPING, workers=3))
    assert (run.trials, run.pruned, run.failed, run.repeats, run.retrained) == (12, 0, 0, 0, 0)
    assert run.epochs == table.grid_epochs
    assert sorted(v for _, v in run.finished) == sorted(r.value for r in table.rows)
    spent = [epochs for epochs, _ in run.finished]
    assert spent == sorted(spent) and spent[-1] == table.grid_epochs


def test_replaying_with_asha_stops_bad_trials_and_they_cost_only_their_epochs():
    pytest.importorskip("optuna")
    table = _toy_table()
    run = search.replay(table, search.scan_spec(TOY_SPACE, {"strategy": "grid"}, ASHA, workers=3))
    assert run.trials == 12 and run.pruned > 0
    assert len(run.finished) + run.pruned == 12
    # finished trials ran all 9 epochs, pruned ones at least minEpochs and fewer than 9
    assert len(run.finished) * 9 + run.pruned <= run.epochs < len(run.finished) * 9 + run.pruned * 9
    assert min(v for _, v in run.finished) == table.best  # the best curve is never pruned


def test_replaying_tpe_stays_within_its_samples_and_never_trains_a_point_twice():
    pytest.importorskip("optuna")
    table = _toy_table()
    spec = search.scan_spec(TOY_SPACE, {"strategy": "tpe", "samples": 8, "seed": 3}, ASHA, workers=2)
    run = search.replay(table, spec)
    assert 0 < run.trials <= 8
    assert len(run.finished) + run.pruned + run.failed == run.trials
    assert run.retrained == 0
    assert run.epochs <= run.trials * 9


def _fake_cached_table(cache: Path) -> None:
    """A table of the benchmark's real space with made-up curves (no TensorFlow), where the benches look for it."""
    rows = []
    for combination in grid_table.grid_plan(grid_table.SPACE).combinations():
        p = combination.parameters
        floor = 0.6 + 0.05 * abs(math.log10(p["learning_rate"]) + 2.5) + 0.3 / p["layer1"]
        rate = p["learning_rate"] * 300 * 64 / p["batch_size"]
        curve = [floor + 0.3 * math.exp(-rate * e) for e in range(1, 21)]
        seconds = [1.0] + [0.01 * 8000 / p["batch_size"]] * 19
        rows.append({"id": combination.id, "parameters": p, "val_loss": curve, "epoch_seconds": seconds})
    key = grid_table.table_key(grid_table.SPACE, grid_table.SETTINGS)
    (cache / f"search-{key}.json").write_text(json.dumps({"key": key, "epochs": 20, "rows": rows}))


def _fake_surrogate(cache: Path) -> None:
    """A made-up surrogate table (no forest, no TensorFlow) where bench/search.py looks for the committed design's."""
    import numpy as np

    combinations, rates, epochs = 6**3 * 6 * 3, 4, 20
    floor = 0.6 + 0.1 * np.random.default_rng(0).random((combinations, rates, 1))
    curves = (floor + 0.3 * np.exp(-np.arange(1, epochs + 1) / 3.0)).astype(np.float32)
    error = {"median_relative": 0.02, "mean_relative": 0.03, "spearman": 0.9, "rows": 8.0}
    path = search_surrogate.surrogate_path(search_design.COMMITTED, cache)
    np.savez(path, curves=curves, seconds=np.ones((combinations, rates), np.float32), **error)


def test_both_benches_end_with_their_figure(tmp_path, capsys):
    pytest.importorskip("optuna")
    _fake_cached_table(tmp_path)
    _fake_surrogate(tmp_path)
    search.main(["--cache", str(tmp_path), "--seeds", "2", "--samples", "20", "--mo-samples", "8"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.fullmatch(r"fraction_of_grid_epochs=\d+\.\d{3}", last)
    pull.main(["--cache", str(tmp_path)])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.fullmatch(r"pulled_over_static=\d\.\d{3}", last)
    assert float(last.split("=")[1]) < 1  # 10 static shards of this grid each get one batch size: pulling wins


# -- the surrogate benchmark ----------------------------------------------------------------------------------------


def test_the_hypervolume_is_the_staircase_the_front_dominates_up_to_the_reference():
    front = [(0.5, 3.0), (0.6, 2.0)]
    assert search.hypervolume_2d(front, (0.8, 5.0)) == pytest.approx(0.1 * 2.0 + 0.2 * 3.0)
    # a dominated point, and points beyond the reference, add nothing
    assert search.hypervolume_2d([*front, (0.7, 4.0), (0.9, 1.0), (0.4, 6.0)], (0.8, 5.0)) == pytest.approx(0.8)
    assert search.hypervolume_2d([], (0.8, 5.0)) == 0.0
    assert search.pareto_front([(0.5, 3.0), (0.6, 2.0), (0.7, 4.0)]) == [(0.5, 3.0), (0.6, 2.0)]


def _small_tabulated(rates: int = 3, epochs: int = 2) -> search_surrogate.Tabulated:
    import numpy as np

    combinations = len(search_surrogate.dense_combinations())
    curves = np.arange(combinations * rates * epochs, dtype=np.float32).reshape(combinations, rates, epochs)
    return search_surrogate.Tabulated(curves, np.ones((combinations, rates), np.float32))


def test_the_tabulated_surrogate_is_exact_at_its_learning_rates_and_linear_in_log_between():
    tabulated = _small_tabulated()
    low, high = search_design.LEARNING_RATE
    point = {"layer1": 8, "layer2": 8, "layer3": 8, "batch_size": 32, "activation": "relu"}
    assert tabulated.at({**point, "learning_rate": low})[0] == (0.0, 1.0)
    assert tabulated.at({**point, "learning_rate": high})[0] == (4.0, 5.0)
    assert tabulated.at({**point, "learning_rate": math.sqrt(low * high)})[0] == pytest.approx((2.0, 3.0))
    assert tabulated.at({**point, "learning_rate": low * (high / low) ** 0.25})[0] == pytest.approx((1.0, 2.0))
    last = {"layer1": 256, "layer2": 256, "layer3": 256, "batch_size": 1024, "activation": "tanh"}
    assert tabulated.at({**last, "learning_rate": low})[0][0] == tabulated.curves[-1, 0, 0]
    assert tabulated.best_known() == 0.0
    assert tabulated.share_within(0.0) == pytest.approx(1 / tabulated.curves[:, :, 0].size)


def test_a_diverged_epoch_and_every_one_after_it_count_as_chance():
    chance = math.log(search_surrogate.DIVERGED_LOSS)
    assert search_surrogate.log_curve([0.9, None, 0.8]) == pytest.approx([math.log(0.9), chance, chance])
    assert search_surrogate.log_curve([0.9, math.nan]) == pytest.approx([math.log(0.9), chance])


def test_a_fused_groups_epoch_time_is_split_over_its_networks():
    block = [(0, {"batch_size": 32}), (1, {"batch_size": 64}), (2, {"batch_size": 32})]
    groups = search_design.fused_groups(block)
    assert groups == {"d0": 0, "d2": 0, "d1": 1}
    # group 0 (two networks): epochs end at 4 and 6; group 1 (one): at 7 and 8; training started at 0
    events = [("d0", 1, 3.9), ("d2", 1, 4.0), ("d0", 2, 5.9), ("d2", 2, 6.0), ("d1", 1, 7.0), ("d1", 2, 8.0)]
    seconds = search_design.group_seconds(events, groups, started=0.0)
    assert seconds == {"d0": [2.0, 1.0], "d2": [2.0, 1.0], "d1": [1.0, 1.0]}


def test_replaying_two_objectives_records_both_and_counts_every_finished_trial():
    pytest.importorskip("optuna")
    source = search.SurrogateSource(_small_tabulated(epochs=3))
    strategy = search.Strategy("tpe", {"strategy": "tpe", "samples": 10}, objectives=search.OBJECTIVES)
    run = search.replay(source, strategy.spec(seed=1, workers=2))
    assert run.trials == 10 and len(run.values) == len(run.finished) == 10 and run.epochs == 30
    assert all(set(v) == {"val_loss", "n_parameters"} for v in run.values)
    assert search.front_hypervolume(run) >= 0.0


def test_the_committed_design_is_the_sobol_design_trained_by_dl1():
    from dl1.model import parse_combination

    table = json.loads(search_design.COMMITTED.read_text())
    assert search_design.COMMITTED.stat().st_size < 1_000_000
    assert table["key"] == search_design.design_key(search_design.SPACE, search_design.SETTINGS)
    rows = table["rows"]
    assert len(rows) >= 190  # 194 points: what 45 minutes of training on the 2 shared cores gave
    points = search_design.design()
    for row in rows:
        assert row["parameters"] == points[row["index"]]
        parse_combination(row["parameters"])  # dl1 accepts every point
        assert len(row["val_loss"]) == len(row["epoch_seconds"]) == search_design.SETTINGS["epochs"]
        if "n_parameters" in row["metrics"]:  # dl1's own count agrees with the benchmark's (its second objective)
            count = search_design.n_parameters(row["parameters"])
            assert row["metrics"]["n_parameters"] == float(f"{count:.{search_design.SIGNIFICANT}g}")  # as committed


def test_the_surrogate_predicts_trainings_it_was_not_fitted_to_within_its_bound():
    pytest.importorskip("sklearn")
    # bench/search_surrogate.py's docstring: 5-fold median 1.7%, mean 2.3%, Spearman 0.79 on the 194 committed rows
    error = search_surrogate.held_out_error(search_surrogate.load_rows(search_design.COMMITTED))
    assert error["median_relative"] < 0.025 and error["mean_relative"] < 0.03
    assert error["spearman"] > 0.7  # it ranks the trainings as they came out, which is what the strategies use


def test_a_rung_at_the_last_epoch_prunes_nothing_as_dl1_ends_that_epoch_anyway():
    pytest.importorskip("optuna")
    table = _toy_table()  # 9 epochs: minEpochs 3 and reductionFactor 3 put rungs at 3 and 9
    asha = {"strategy": "asha", "minEpochs": 3, "reductionFactor": 3}
    best_first = [{"name": "x", "values": list(range(11, -1, -1))}]  # later trials are worse: some reach 9 and lose
    run = search.replay(table, search.scan_spec(best_first, {"strategy": "grid"}, asha, workers=3))
    assert run.pruned > 0 and len(run.finished) + run.pruned == 12
    # every pruned trial stopped at the rung of epoch 3: none at 9, where it had finished
    assert run.epochs == len(run.finished) * 9 + run.pruned * 3
