"""Workers that stop trials at ASHA's rungs themselves: the thresholds (hpscan.core.rungs), the worker's rule
(hpscan.api.trials.stops_at_rung), the line that carries them, and the search that sends them (hpscan.core.search).
The thresholds are checked against Optuna's own SuccessiveHalvingPruner: whatever order the other trials' reports
reach the study in, a trial a worker stops is one the study prunes too."""

from __future__ import annotations

import json
import math
import random

import optuna
import pytest
from test_search import record, spec

from hpscan.api.trials import Assignment, Progress, Rung, Rungs, TrialInbox, stops_at_rung
from hpscan.core.planning import plan
from hpscan.core.rungs import RungsSent, promotable_index, rung_epoch, rung_threshold, worker_rungs
from hpscan.core.search import Search
from hpscan.core.search_space import asha_rung_values


def test_rung_epochs_and_optunas_promotion_index():
    assert [rung_epoch(r, 2, 3) for r in range(3)] == [2, 6, 18]
    # among n competing values (the judged trial's own included) the one at this index (best first) still goes on
    assert [promotable_index(n, 3) for n in (1, 2, 3, 5, 6, 9)] == [0, 0, 0, 0, 1, 2]


def test_the_threshold_is_the_one_for_the_most_values_the_rung_can_hold():
    values = [0.5, 0.1, 0.4, 0.3, 0.2]
    # nothing more can come but the judged trial: 6 competing, the 2nd best (0.2) is the worst that goes on
    assert rung_threshold(values, 1, 3, "minimize") == 0.2
    # 4 more may come: 9 competing, the 3rd best goes on whatever they report
    assert rung_threshold(values, 4, 3, "minimize") == 0.3
    assert rung_threshold(values, 4, 3, "maximize") == 0.3
    assert rung_threshold(values, 1, 3, "maximize") == 0.4
    # so many may come that every value known now could still go on: no threshold (the operator's stops remain)
    assert rung_threshold(values, 13, 3, "minimize") is None
    assert rung_threshold([], 1, 3, "minimize") is None
    assert rung_threshold([float("nan"), 0.3], 1, 2, "minimize") == 0.3  # a NaN is never a value at a rung


def test_worker_rungs_lists_only_rungs_with_a_threshold():
    # 6 still to come: rung 0 may hold 9 values (the 3rd best goes on), rung 1 (epoch 6) 7: its one value may too
    line = worker_rungs({0: [0.3, 0.1, 0.2], 1: [0.1]}, 6, "val_loss", "minimize", 2, 3)
    assert line == Rungs(metric="val_loss", goal="minimize", rungs=[Rung(epoch=2, threshold=0.3)])
    assert line.to_wire() == {"metric": "val_loss", "goal": "minimize", "rungs": [{"epoch": 2, "threshold": 0.3}]}


def test_a_worker_stops_only_at_a_rungs_epoch_with_a_worse_value():
    rungs = Rungs(metric="val_loss", rungs=[Rung(epoch=2, threshold=0.3), Rung(epoch=6, threshold=0.2)])
    assert stops_at_rung(rungs, 2, {"val_loss": 0.31})
    assert not stops_at_rung(rungs, 2, {"val_loss": 0.3})  # a tie goes on, as in Optuna
    assert not stops_at_rung(rungs, 3, {"val_loss": 0.9})  # between rungs: only a stop request stops it
    assert stops_at_rung(rungs, 6, {"val_loss": 0.25}) and not stops_at_rung(rungs, 6, {"val_loss": 0.15})
    assert stops_at_rung(rungs, 2, {"val_loss": math.nan})  # Optuna's ASHA prunes a NaN at a rung
    assert not stops_at_rung(rungs, 2, {"loss": 9.0})  # the metric is not reported: no decision
    assert not stops_at_rung(None, 2, {"val_loss": 9.0})
    maximize = Rungs(metric="auc", goal="maximize", rungs=[Rung(epoch=1, threshold=0.8)])
    assert stops_at_rung(maximize, 1, {"auc": 0.7}) and not stops_at_rung(maximize, 1, {"auc": 0.9})


def test_the_newest_rungs_line_counts_and_a_torn_one_is_skipped():
    assignment = Assignment()
    first = {"metric": "val_loss", "rungs": [{"epoch": 1, "threshold": 0.5}]}
    second = {"metric": "val_loss", "rungs": [{"epoch": 1, "threshold": 0.7}]}
    assignment.fold([{"rungs": first}, {"rungs": second}, {"rungs": {"rungs": "torn"}}])
    assert assignment.rungs == Rungs.model_validate(second)
    assert assignment.trials == {} and not assignment.ended


def test_the_payloads_inbox_stops_a_trial_at_its_rung_from_trials_jsonl(tmp_path):
    inbox = TrialInbox(tmp_path)
    rungs = {"metric": "val_loss", "rungs": [{"epoch": 2, "threshold": 0.4}]}
    (tmp_path / "trials.jsonl").write_text(json.dumps({"rungs": rungs}) + "\n")
    inbox.report("c0-a", 1, {"val_loss": 0.9})
    assert not inbox.stopping("c0-a")  # epoch 1 is no rung
    inbox.report("c0-a", 2, {"val_loss": 0.5})
    inbox.report("c1-b", 2, {"val_loss": 0.3})
    assert inbox.stopping("c0-a") and not inbox.stopping("c1-b")
    (tmp_path / "stop.jsonl").write_text('{"id":"c1-b"}\n')
    assert inbox.stopping("c1-b")  # a stop request still stops it, at any epoch
    assert [json.loads(line)["epoch"] for line in (tmp_path / "progress.jsonl").read_text().splitlines()] == [1, 2, 2]


def test_a_worker_is_sent_thresholds_only_when_they_changed():
    sent = RungsSent()
    rungs = Rungs(metric="val_loss", rungs=[Rung(epoch=1, threshold=0.5)])
    assert sent.lines(rungs, [0, 1]) == {0: [{"rungs": rungs.to_wire()}], 1: [{"rungs": rungs.to_wire()}]}
    assert sent.lines(rungs, [0, 1]) == {}
    assert sent.lines(Rungs(metric="val_loss"), [2]) == {} and sent.lines(None, [2]) == {}
    sent.forget(1)
    assert list(sent.lines(rungs, [0, 1])) == [1]


def asha_study(reduction_factor: int) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=reduction_factor)
    return optuna.create_study(direction="minimize", pruner=pruner)


@pytest.mark.parametrize("seed", range(40))
def test_a_trial_a_worker_stops_is_pruned_by_optunas_asha_whenever_its_report_arrives(seed: int):
    """Trials report their rung-0 value to a real study in a random order; at a random moment the workers get the
    thresholds (values so far, the rest still to come), and every trial a worker would stop with them is pruned
    by Optuna when its report arrives later. The thresholds do stop some trials (the rule is not vacuous)."""
    rng = random.Random(seed)
    reduction_factor = rng.choice([2, 3, 4])
    budget = rng.randint(4, 30)
    values = [round(rng.random(), 2) for _ in range(budget)]  # rounded: ties happen
    study = asha_study(reduction_factor)
    trials = [study.ask() for _ in range(budget)]
    order = rng.sample(range(budget), budget)
    cut = rng.randint(1, budget - 1)
    for i in order[:cut]:
        trials[i].report(values[i], 1)
        trials[i].should_prune()
    held = asha_rung_values(study)
    assert sorted(held[0]) == sorted(values[i] for i in order[:cut])  # Optuna keeps rung values where we read them
    line = worker_rungs(held, budget - cut, "val_loss", "minimize", 1, reduction_factor)
    stopped = {i for i in order[cut:] if stops_at_rung(line, 1, {"val_loss": values[i]})}
    for i in order[cut:]:
        trials[i].report(values[i], 1)
        if i in stopped:
            assert trials[i].should_prune(), (values[i], line, sorted(asha_rung_values(study)[0]))
        else:
            trials[i].should_prune()


def test_the_rule_stops_trials_once_the_rung_holds_enough_values():
    stopped = 0
    for seed in range(40):
        rng = random.Random(seed)
        budget, cut = 18, 12
        values = [rng.random() for _ in range(budget)]
        line = worker_rungs({0: values[:cut]}, budget - cut, "val_loss", "minimize", 1, 3)
        stopped += sum(stops_at_rung(line, 1, {"val_loss": v}) for v in values[cut:])
    assert stopped > 40 * 6 // 3  # most of the late trials worse than the best third stop at the rung


def test_the_search_sends_thresholds_as_they_change_and_no_stop_for_a_trial_its_worker_stopped():
    search = Search(plan("s", spec("tpe", samples=9, early="asha")))
    trials = search.hand_out(0, 3) + search.hand_out(1, 3)
    search.share_rungs([0, 1])
    assert search.waiting_lines() == {}  # no value at any rung yet: nothing to send
    reports = [Progress(id=c.id, epoch=1, metrics={"val_loss": 0.1 * (k + 1)}) for k, c in enumerate(trials[:4])]
    search.tell(reports, [])
    # 4 values at rung 0 (epoch 1), but every open trial may still add one (taken back, trained again): 13 may
    # compete, and the 6th best would go on: no threshold yet
    assert search.rungs() == Rungs(metric="val_loss", goal="minimize", rungs=[])
    search.tell([], [record(c.id, c.parameters, loss=0.1 * (k + 1)) for k, c in enumerate(trials[:4])])
    rungs = search.rungs()
    # 4 recorded, 2 open, 3 not handed out: 9 may compete, the 4th best goes on (rf 2)
    assert rungs is not None and rungs.rungs == [Rung(epoch=1, threshold=0.4)]
    search.share_rungs([0, 1])
    # worker 0 recorded all it holds (trials 0-2): only worker 1 has trials left to stop
    assert {w: [line for line in lines if "rungs" in line] for w, lines in search.waiting_lines().items()} == {
        1: [{"rungs": rungs.to_wire()}]
    }
    search.sent(1)
    search.share_rungs([0, 1])
    assert search.waiting_lines() == {}  # unchanged: not sent again
    # trials[4] ran on worker 1, which stopped it itself at epoch 1: its report and its record come in one step
    late = trials[4]
    search.tell(
        [Progress(id=late.id, epoch=1, metrics={"val_loss": 0.9})], [record(late.id, late.parameters, "pruned", 0.9)]
    )
    stops = [i for ids in search.waiting_stops().values() for i in ids]
    assert search.counts["pruned"] == 1 and late.id not in stops  # no stop request after the fact


def test_median_pruning_and_several_objectives_send_no_thresholds():
    assert Search(plan("s", spec("tpe", samples=6, early="median"))).rungs() is None
    assert Search(plan("s", spec("tpe", samples=6))).rungs() is None
