"""Workers that pull, through the operator's reconcile step: hand-outs reach the channels, a restarted operator
(a fresh memory: kill -9) rebuilds its search from the channels and the budget is spent exactly, a worker that
dies gives its open trial back, and the pruner's stops reach the worker."""

from __future__ import annotations

from pathlib import Path

import yaml

from hpscan.api.contract import ResultRecord
from hpscan.api.status import ShardPhase, ShardStatus
from hpscan.api.trials import Assignment, Progress
from hpscan.backends.base import Backend
from hpscan.controller.reconcile import reconcile_scan


class PullingStandIn(Backend):
    """Stand-in for a batch system with a channel into its jobs (what the Kubernetes and HTCondor channels keep:
    each worker's lines, its records and its reports), with workers the test drives by hand."""

    name = "kubernetes"
    pulls = True

    def __init__(self) -> None:
        self.states: dict[int, ShardStatus] = {}
        self.lines: dict[int, list[dict]] = {}
        self.stops: dict[int, list[str]] = {}
        self.records: list[ResultRecord] = []
        self.reports: list[Progress] = []
        self.submitted: list[int] = []

    def submit(self, scan, spec, launches):
        for launch in launches:
            index = launch.shard_file.shard
            assert launch.shard_file.pull and launch.shard_file.combinations == []
            self.submitted.append(index)
            self.states[index] = ShardStatus(index=index, phase=ShardPhase.RUNNING, site=launch.site.name)

    def poll(self, scan):
        return dict(self.states)

    def fetch_records(self, scan):
        return list(self.records)  # repeats everything, as a restarted operator's first read does

    def fetch_progress(self, scan):
        return list(self.reports)

    def assign(self, scan, shard, lines):
        self.lines.setdefault(shard, []).extend(lines)

    def stop_trials(self, scan, shard, trial_ids):
        self.stops.setdefault(shard, []).extend(trial_ids)

    def assignments(self, scan):
        out = {}
        for shard, lines in self.lines.items():
            out[shard] = Assignment()
            out[shard].fold(lines)
        return out

    def cancel(self, scan, shards=None):
        for i in shards or list(self.states):
            self.states[i] = self.states[i].model_copy(update={"phase": ShardPhase.SUSPENDED})

    # the workers --------------------------------------------------------------------------------------------

    def open_trials(self, shard: int) -> list:
        assignment = Assignment()
        assignment.fold(self.lines.get(shard, []))
        done = {r.id for r in self.records}
        return [t for t in assignment.trials.values() if t.id not in done]

    def train_one(self, shard: int, loss: float) -> None:
        trial = self.open_trials(shard)[0]
        self.reports.append(Progress(id=trial.id, epoch=1, metrics={"val_loss": loss}))
        self.records.append(
            ResultRecord(
                id=trial.id, shard=shard, parameters=trial.parameters, metrics={"val_loss": loss}, status="succeeded"
            )
        )

    def finish(self, shard: int) -> None:
        if {"end": True} in self.lines.get(shard, []) and not self.open_trials(shard):
            self.states[shard] = self.states[shard].model_copy(update={"phase": ShardPhase.SUCCEEDED})


def body(**early) -> dict:
    document = yaml.safe_load(Path("examples/adaptive.yaml").read_text())
    document["spec"]["sites"] = [{"name": "gpu", "kubernetes": {}}]
    document["spec"]["sampling"]["samples"] = 10
    if early:
        document["spec"]["earlyStopping"] = early
    document["metadata"].update({"namespace": "physics", "uid": "u-1", "generation": 1})
    return document


def apply(document: dict, outcome) -> dict:
    return {**document, "status": outcome.status.model_dump(mode="json", by_alias=True, exclude_none=True)}


def test_a_kill_9_of_the_operator_rebuilds_the_search_and_spends_the_budget_exactly():
    backend = PullingStandIn()
    document = body()
    memory, searches = {}, {}
    document = apply(document, reconcile_scan(document, {"kubernetes": backend}, memory, searches=searches))
    assert backend.submitted == [0, 1] and all(len(backend.open_trials(w)) == 2 for w in (0, 1))
    steps = 0
    while document["status"]["phase"] != "Succeeded":
        steps += 1
        assert steps < 60, document["status"]
        for worker in (0, 1):
            if backend.open_trials(worker):
                backend.train_one(worker, loss=1.0 / (steps + worker))
            backend.finish(worker)
        if steps in (2, 5):  # kill -9: the operator's memory is gone; the channels hold what was handed out
            memory, searches = {}, {}
        document = apply(document, reconcile_scan(document, {"kubernetes": backend}, memory, searches=searches))
    status = document["status"]
    assert status["combinations"]["succeeded"] == 10 and status["combinations"]["suggested"] == 10
    ids = [r.id for r in backend.records]
    assert len(ids) == len(set(ids)) == 10  # nothing trained twice, nothing lost
    handed = [line["trial"]["id"] for lines in backend.lines.values() for line in lines if "trial" in line]
    assert sorted(handed) == sorted(ids)  # every hand-out once, across the restarts


def test_a_worker_that_dies_gives_its_open_trials_to_another_and_they_are_not_run_twice():
    backend = PullingStandIn()
    document = body()
    memory, searches = {}, {}
    document = apply(document, reconcile_scan(document, {"kubernetes": backend}, memory, searches=searches))
    lost = [t.id for t in backend.open_trials(1)]
    backend.states[1] = backend.states[1].model_copy(update={"phase": ShardPhase.FAILED, "reason": "PayloadFailed"})
    document = apply(document, reconcile_scan(document, {"kubernetes": backend}, memory, searches=searches))
    assert {"withdraw": lost[0]} in backend.lines[1]
    for _ in range(4):  # worker 0 takes them as it frees up (after its own two)
        backend.train_one(0, 0.5)
        document = apply(document, reconcile_scan(document, {"kubernetes": backend}, memory, searches=searches))
    assert set(lost) <= {r.id for r in backend.records if r.shard == 0}


def test_the_pruners_stop_reaches_the_worker_of_a_hopeless_trial():
    backend = PullingStandIn()
    document = body(strategy="asha", minEpochs=1, reductionFactor=2)
    memory, searches = {}, {}
    document = apply(document, reconcile_scan(document, {"kubernetes": backend}, memory, searches=searches))
    good = backend.open_trials(0)
    for trial in good:
        backend.reports.append(Progress(id=trial.id, epoch=1, metrics={"val_loss": 0.5}))
    document = apply(document, reconcile_scan(document, {"kubernetes": backend}, memory, searches=searches))
    bad = backend.open_trials(1)[0]
    backend.reports.append(Progress(id=bad.id, epoch=1, metrics={"val_loss": 5.0}))
    document = apply(document, reconcile_scan(document, {"kubernetes": backend}, memory, searches=searches))
    assert backend.stops == {1: [bad.id]}


class FlakyChannel(PullingStandIn):
    """The stand-in whose channel refuses the next ``failures`` hand-outs (a 5xx, a schedd that does not answer)."""

    def __init__(self, failures: int = 0) -> None:
        super().__init__()
        self.failures = failures

    def assign(self, scan, shard, lines):
        if self.failures:
            self.failures -= 1
            from hpscan.errors import SchedulerUnavailable

            raise SchedulerUnavailable("the channel did not answer")
        super().assign(scan, shard, lines)


def test_a_failed_top_up_keeps_the_trial_in_training_with_its_worker_and_sends_the_new_ones_again():
    backend = FlakyChannel()
    document = body()
    memory, searches = {}, {}
    document = apply(document, reconcile_scan(document, {"kubernetes": backend}, memory, searches=searches))
    training = backend.open_trials(0)[1]  # worker 0 trains its second trial while the top-up after its first fails
    backend.train_one(0, 0.5)
    backend.failures = 1
    document = apply(document, reconcile_scan(document, {"kubernetes": backend}, memory, searches=searches))
    for _ in range(3):
        document = apply(document, reconcile_scan(document, {"kubernetes": backend}, memory, searches=searches))
    handed = [line["trial"]["id"] for lines in backend.lines.values() for line in lines if "trial" in line]
    assert handed.count(training.id) == 1  # never handed to a second worker while worker 0 trains it
    assert not any("withdraw" in line for line in backend.lines[0])
    assert len(backend.open_trials(0)) == 2  # the top-up arrived once the channel answered again


def test_a_failed_first_hand_out_is_sent_again_so_the_worker_never_starves():
    backend = FlakyChannel(failures=1)  # the hand-out right after worker 0's submit fails
    document = body()
    memory, searches = {}, {}
    document = apply(document, reconcile_scan(document, {"kubernetes": backend}, memory, searches=searches))
    document = apply(document, reconcile_scan(document, {"kubernetes": backend}, memory, searches=searches))
    assert len(backend.open_trials(0)) == 2 and len(backend.open_trials(1)) == 2
    steps = 0
    while document["status"]["phase"] != "Succeeded":
        steps += 1
        assert steps < 60, document["status"]
        for worker in (0, 1):
            if backend.open_trials(worker):
                backend.train_one(worker, loss=1.0 / (steps + worker))
            backend.finish(worker)
        document = apply(document, reconcile_scan(document, {"kubernetes": backend}, memory, searches=searches))
    ids = [r.id for r in backend.records]
    assert len(ids) == len(set(ids)) == 10
