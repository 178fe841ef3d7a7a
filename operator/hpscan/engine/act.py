"""Act: the stage of a step that carries out the decision through the backends. Stop and withdraw, start (each
shard's work from a Launcher: its planned shard file here, trials for workers that pull in hpscan.engine.pull),
then the states of shards that did not start, and, once the scan has ended, stop what still runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial

from hpscan.api.contract import ShardFile
from hpscan.api.spec import HPScanSpec
from hpscan.api.status import ACTIVE_PHASES, TERMINAL_SCAN_PHASES, HPScanStatus, Reason, ShardPhase, ShardStatus
from hpscan.backends.base import Backend, ScanRef, ShardLaunch
from hpscan.core.brokering import Start
from hpscan.core.decisions import Decision
from hpscan.core.planning import position_of
from hpscan.core.results import Aggregate
from hpscan.engine.context import Launcher, Polled, StepContext


def remaining_shard_file(agg: Aggregate, shard: int) -> ShardFile:
    """The shard's file with only the combinations not yet recorded: a moved shard trains nothing twice, whatever
    its new site's channel holds."""
    full = agg.plan.shard_file(shard)
    todo = [c for c in full.combinations if not agg.states[position_of(c.id)]]
    return full.model_copy(update={"combinations": todo})


def nothing_left(start: Start) -> ShardStatus:
    """A shard about to start with nothing left to do: it is done where the decision put it."""
    return ShardStatus(index=start.shard, site=start.site, phase=ShardPhase.SUCCEEDED, moves=start.moves)


class PlannedShards:
    """The Launcher of planned scans: each shard gets the combinations of its file not yet recorded."""

    def tell(self, ctx: StepContext, polled: Polled, decision: Decision) -> None:
        """Planned shards need nothing from a step but their states."""

    def launch(self, ctx: StepContext, start: Start) -> ShardLaunch | None:
        shard_file = remaining_shard_file(ctx.agg, start.shard)
        if not shard_file.combinations:  # everything was recorded before its job could end where it was
            ctx.states[start.shard] = nothing_left(start)
            return None
        return ShardLaunch(shard_file, ctx.by_site[start.site].site, start.moves)

    def submitted(self, launches: Sequence[ShardLaunch], accepted: bool) -> None:
        """A planned shard's file travels with its job: nothing to follow up."""

    def feed(self, ctx: StepContext) -> None:
        """A running planned shard has its whole file already."""

    def held(self) -> Mapping[int, int] | None:
        return None


def stop_and_withdraw(ctx: StepContext, decision: Decision) -> None:
    """Cancel the shards the decision stops (suspend) and the jobs of shards that move, backend by backend."""
    for name, backend in ctx.backends.items():
        if stop := [i for i in decision.stop if ctx.backend_of(i) in (name, None)]:
            ctx.act(name, "stopping shards", partial(backend.cancel, ctx.scan, stop))
        if leave := [i for i in decision.withdraw if ctx.backend_of(i) == name]:
            ctx.act(name, "removing jobs of shards that move", partial(backend.cancel, ctx.scan, leave))


def start_shards(ctx: StepContext, decision: Decision, launcher: Launcher) -> set[int]:
    """Submit the shards the decision starts, each backend its own in one call; returns those submitted. A shard
    submitted is Pending until a backend reports it."""
    started: set[int] = set()
    for name, backend in ctx.backends.items():
        mine = [s for s in decision.start if ctx.by_site[s.site].backend == name]
        launches = [launch for start in mine if (launch := launcher.launch(ctx, start)) is not None]
        if not launches:
            continue
        accepted = ctx.act(
            name, f"submitting {len(launches)} shard(s)", partial(_send, backend, ctx.scan, ctx.spec, launches)
        )
        if accepted:
            for launch in launches:
                index = launch.shard_file.shard
                site = next(s.site for s in mine if s.shard == index)
                ctx.states[index] = ShardStatus(index=index, site=site, moves=launch.moves)
                started.add(index)
        launcher.submitted(launches, accepted)
    return started


def _send(backend: Backend, scan: ScanRef, spec: HPScanSpec, launches: list[ShardLaunch]) -> None:
    backend.prepare(scan, spec, launches[0].shard_file.shards)
    backend.submit(scan, spec, launches)


def settle_unstarted(ctx: StepContext, decision: Decision, started: set[int]) -> None:
    """The states of the shards the decision moved, kept waiting or stopped, unless they started this step."""
    for index, (reason, message) in decision.withdraw.items():
        if index not in started:
            ctx.states[index] = ctx.states[index].model_copy(
                update={"phase": ShardPhase.PENDING, "reason": reason, "message": message}
            )
    for index, message in decision.waiting.items():
        if index not in started:
            ctx.states[index] = ctx.states[index].model_copy(
                update={"phase": ShardPhase.PENDING, "reason": Reason.NO_USABLE_SITE, "message": message}
            )
    for index in decision.stop:
        ctx.states[index] = ctx.states[index].model_copy(update={"phase": ShardPhase.SUSPENDED})


def stop_when_ended(ctx: StepContext, status: HPScanStatus) -> None:
    """A scan that ended (e.g. too many failed combinations) stops what still runs."""
    if status.phase not in TERMINAL_SCAN_PHASES:
        return
    active = [i for i, state in ctx.states.items() if state.phase in ACTIVE_PHASES]
    for name, backend in ctx.backends.items():
        if mine_active := [i for i in active if ctx.backend_of(i) in (name, None)]:
            ctx.act(name, "stopping shards", partial(backend.cancel, ctx.scan, mine_active))
