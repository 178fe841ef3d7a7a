"""Hand out: the trials of a scan whose workers pull (plan.pull), as the step's Launcher. The scan's Search
(hpscan.core.search) keeps the ledger; this module only tells it what the backends said, asks it what to send,
and sends it through the workers' channels (Backend.assign, Backend.stop_trials).

Each step it tells the search what was recorded and reported, takes back the trials of workers that leave,
hands trials to starting and running workers, sends the pruner's stops, and tells workers when no more will come.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Literal

from hpscan.api.status import ACTIVE_PHASES, Reason, ShardPhase
from hpscan.api.trials import Assignment, trial_lines
from hpscan.backends.base import ShardLaunch
from hpscan.core.brokering import Start
from hpscan.core.decisions import Decision
from hpscan.core.search import Search
from hpscan.engine.act import nothing_left
from hpscan.engine.context import Launcher, Polled, StepContext


def pull_launcher(ctx: StepContext, search: Search | None) -> Launcher:
    """The Launcher of a scan whose workers pull. A restarted shell first reads back what the workers' channels
    hold; while a channel does not answer it may hold hand-outs, so nothing is handed out (or started) until it
    does."""
    if search is None:
        return HeldBack()
    if not search.rebuilt:
        if ctx.outages:
            return HeldBack()
        channels: dict[int, Assignment] = {}
        for backend in ctx.backends.values():
            channels |= backend.assignments(ctx.scan)
        search.rebuild(channels, [], [])  # this step's records and reports follow (repeated after a restart)
    return PullingWorkers(search)


class HeldBack:
    """Workers that pull while their trials are unknown: none starts, nothing is handed out."""

    def tell(self, ctx: StepContext, polled: Polled, decision: Decision) -> None:
        """Told once the search is rebuilt: the channels hand their records over again."""

    def launch(self, ctx: StepContext, start: Start) -> ShardLaunch | None:
        return None

    def submitted(self, launches: Sequence[ShardLaunch], accepted: bool) -> None:
        """Nothing is launched."""

    def feed(self, ctx: StepContext) -> None:
        """Nothing is handed out."""

    def held(self) -> Mapping[int, int] | None:
        return None


class PullingWorkers:
    """Workers that pull, with the scan's search."""

    def __init__(self, search: Search) -> None:
        self.search = search
        self.handed: dict[int, list[dict]] = {}  # first trials of the workers starting this step, sent once submitted

    def tell(self, ctx: StepContext, polled: Polled, decision: Decision) -> None:
        """Tell the search what was reported and recorded; the trials of workers that leave go back (withdrawn
        from their channel), and a worker whose job ended well without recording all it held fails
        (RecordsMissing)."""
        self.search.tell(polled.progress, polled.records)
        leaving = set(decision.withdraw) | {i for i, st in ctx.states.items() if st.phase not in ACTIVE_PHASES}
        for worker in sorted(leaving):
            back = self.search.left(worker, ended_well=ctx.states[worker].phase == ShardPhase.SUCCEEDED)
            if back and (owner := ctx.backend_of(worker)) is not None:
                withdraw = partial(ctx.backends[owner].assign, ctx.scan, worker, trial_lines([], back))
                ctx.act(owner, "taking trials back", withdraw)
        for worker, missing in self.search.missing_records().items():
            if worker in ctx.states:
                ctx.states[worker] = ctx.states[worker].model_copy(
                    update={
                        "phase": ShardPhase.FAILED,
                        "reason": Reason.RECORDS_MISSING,
                        "message": f"the worker ended well without recording {missing} trial(s) it was handed",
                    }
                )

    def launch(self, ctx: StepContext, start: Start) -> ShardLaunch | None:
        """A worker starts with its first trials; more come while it runs. None when the budget is spent."""
        trials = self.search.trials_to_start(start.shard, ctx.spec.sampling.trials_per_worker)
        if trials is None:
            ctx.states[start.shard] = nothing_left(start)
            return None
        self.handed[start.shard] = trial_lines(trials)  # sent with the other workers' lines, in feed
        return ShardLaunch(ctx.agg.plan.shard_file(start.shard), ctx.by_site[start.site].site, start.moves)

    def submitted(self, launches: Sequence[ShardLaunch], accepted: bool) -> None:
        """A submitted worker's first trials wait for its channel; a submit that failed gives them back (they
        never left; earlier hand-outs to that worker may be in training and stay its own)."""
        for launch in launches:
            worker = launch.shard_file.shard
            if not accepted:
                self.search.give_back([line["trial"]["id"] for line in self.handed.get(worker, []) if "trial" in line])
            elif worker in self.handed:
                self.search.send(worker, self.handed[worker])

    def feed(self, ctx: StepContext) -> None:
        """Top running workers up to spec.sampling.trialsPerWorker open trials, tell each, once, when the budget is
        handed out, and send every active worker's waiting lines (ASHA's newest rung thresholds too) and stops. A
        worker only submitted (Pending) keeps what it got at launch. A channel that refuses keeps its lines waiting
        for the next step: the trials stay that worker's (it may hold them already, if the call failed after it took
        effect: channels ignore a trial handed twice), so no trial goes to a second worker while the first may
        train it."""
        running = [i for i, state in ctx.states.items() if state.phase == ShardPhase.RUNNING]
        self.search.feed(running, ctx.spec.sampling.trials_per_worker)
        active = {i for i, state in ctx.states.items() if state.phase in ACTIVE_PHASES}
        self.search.share_rungs(active)  # ASHA's thresholds as they change: workers stop trials at rungs themselves
        for worker, lines in sorted(self.search.waiting_lines().items()):
            if worker in active and _to_channel(ctx, worker, "assign", lines, "handing out trials"):
                self.search.sent(worker)
        for worker, ids in sorted(self.search.waiting_stops().items()):
            if worker in active and _to_channel(ctx, worker, "stop_trials", ids, "stopping a pruned trial"):
                self.search.stops_sent(worker)

    def held(self) -> Mapping[int, int] | None:
        return self.search.held()


def _to_channel(
    ctx: StepContext, worker: int, method: Literal["assign", "stop_trials"], what: Sequence, doing: str
) -> bool:
    """Send trial lines (assign) or trial ids to stop (stop_trials) to a worker's channel through its backend; False
    when the worker has no backend or the call failed (that backend's sites are Unreachable, see StepContext.act)."""
    name = ctx.backend_of(worker)
    if name is None:
        return False
    return ctx.act(name, doing, partial(getattr(ctx.backends[name], method), ctx.scan, worker, what))
