"""`hpscan run`'s live view (rich bars), fed records and status updates at made-up times: the text it draws."""

from __future__ import annotations

import io
import re

from rich.console import Console

from hpscan.api.contract import ResultRecord
from hpscan.api.spec import HPScan
from hpscan.api.status import ShardPhase, ShardStatus
from hpscan.cli.run import LiveObserver
from hpscan.core.planning import Plan, plan
from hpscan.core.results import Aggregate, aggregate
from hpscan.core.summary import build_status

SCAN = HPScan.model_validate(
    {
        "apiVersion": "hpscan.io/v1alpha1",
        "kind": "HPScan",
        "metadata": {"name": "toy"},
        "spec": {
            "parameters": [{"name": "x", "values": [1, 2, 3, 4]}, {"name": "act", "values": ["relu", "elu"]}],
            "sharding": {"shards": 2},
            "gpu": {"count": 0, "required": False},
            "payload": {"image": "local"},
        },
    }
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class View:
    """A LiveObserver on a made-up clock, driven the way local_scan drives it."""

    def __init__(self, workers: int = 1) -> None:
        self.clock = Clock()
        self.planned: Plan = plan("toy", SCAN.spec)
        self.agg: Aggregate = aggregate(self.planned, [])
        self.observer = LiveObserver(Console(file=io.StringIO(), width=150), clock=self.clock)
        self.observer.started(self.planned, self.agg, workers)
        self.phases = {0: ShardPhase.RUNNING, 1: ShardPhase.PENDING}
        self.poll(at=0.0)

    def poll(self, at: float) -> None:
        self.clock.now = 1000.0 + at
        states = {i: ShardStatus(index=i, site="local", phase=phase) for i, phase in self.phases.items()}
        self.observer.updated(build_status(self.planned, self.agg, states))

    def record(self, shard: int, at: float, then_poll: bool = True) -> None:
        self.clock.now = 1000.0 + at
        done = self.agg.shard_done[shard]
        combination = self.planned.shard_combinations(shard)[done]
        record = ResultRecord(
            id=combination.id,
            shard=shard,
            parameters=combination.parameters,
            metrics={"val_loss": 0.5 + done / 10},
            status="succeeded",
        )
        assert self.agg.add(record)
        self.observer.recorded(record, self.agg)
        if then_poll:
            self.poll(at)

    def text(self, at: float) -> str:
        self.clock.now = 1000.0 + at
        console = Console(file=io.StringIO(), width=150, color_system=None)
        console.print(self.observer.live.renderable)
        self.observer.stop()
        return re.sub(r"[━╺╸]+", " ", console.file.getvalue())  # type: ignore[attr-defined]


def eta(text: str) -> str:
    found = re.search(r"ETA (\S+( \(overdue\))?)", text)
    assert found, text
    return found.group(1)


def test_the_eta_counts_down_between_records_and_grows_in_a_stall():
    view = View(workers=1)
    for at in (10.0, 12.0, 14.0):  # shard 0: first record 10 s after its start, then one every 2 s
        view.record(0, at)
    # shard 0: one left, due in 2 s; then shard 1: 10 s start-up and 3 more at 2 s
    assert eta(view.text(at=14.0)) == "0:00:18"
    view.poll(at=15.0)
    assert eta(view.text(at=15.0)) == "0:00:17"  # no record since: it still counts down
    assert eta(view.text(at=16.0)) == "0:00:16"  # drawn between polls, it moves too
    view.record(0, at=16.0)  # shard 0 is done on time
    view.phases = {0: ShardPhase.SUCCEEDED, 1: ShardPhase.RUNNING}
    view.poll(at=16.5)
    assert eta(view.text(at=20.0)) == "0:00:13"  # shard 1's start-up (10 s) and 3 records at 2 s
    view.record(1, at=26.5)
    view.record(1, at=28.5)
    assert eta(view.text(at=28.5)) == "0:00:04"
    # shard 1 stalls: the ETA neither sits nor stays at zero; it says the scan is late and grows with the wait
    # (the last record is still to come after the overdue one: at the shard's own pace as if that came now)
    late = [eta(view.text(at=at)) for at in (31.0, 40.0, 60.0, 90.0)]
    assert late == ["0:00:03", "0:00:07 (overdue)", "0:00:17 (overdue)", "0:00:32 (overdue)"], late
    assert "10.0/min" in view.text(at=36.0) and "6.0/min" in view.text(at=60.0)  # 6 records: the rate falls too


def test_a_shard_bar_moves_with_its_record_not_at_the_next_status():
    view = View(workers=2)
    view.record(0, at=5.0, then_poll=False)
    text = view.text(at=5.0)
    assert re.search(r"1/8", text), text
    assert re.search(r"shard\s+0\s+1/4", text), text  # before local_scan's next status update


def test_before_any_record_the_eta_is_unknown_and_the_rate_is_zero():
    view = View(workers=2)
    text = view.text(at=30.0)
    assert eta(text) == "-:--:--"
    assert "0.0/min" in text and "0:00:30" in text  # elapsed, on the view's own clock
