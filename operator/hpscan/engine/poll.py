"""Poll and fold: the first stage of a step. Each backend says where its shards are and hands over records (and,
for workers that pull, per-epoch reports); the records are folded into the scan's aggregate."""

from __future__ import annotations

from collections.abc import Mapping

from hpscan.api.status import ACTIVE_PHASES, HPScanStatus, Reason, ShardStatus
from hpscan.engine.context import Polled, StepContext
from hpscan.errors import HPScanError


def merge_states(states: dict[int, ShardStatus], found: Mapping[int, ShardStatus]) -> None:
    """Fold one backend's shard states in: a shard's newest job (most moves) speaks for it, an active one first."""
    for index, state in found.items():
        held = states.get(index)
        if held is None or (state.moves, state.phase in ACTIVE_PHASES) >= (held.moves, held.phase in ACTIVE_PHASES):
            states[index] = state


def poll_and_fold(ctx: StepContext, with_progress: bool) -> Polled:
    """Ask every backend for its shards' states, records and (``with_progress``: workers that pull) per-epoch
    reports; fold the records into the aggregate. A backend that fails (an HPScanError, e.g.
    SchedulerUnavailable) makes its sites Unreachable for this step; the other backends go on and nothing recorded
    is lost."""
    polled = Polled()
    for name, backend in ctx.backends.items():
        try:
            backend.track(ctx.scan, ctx.spec)
            merge_states(ctx.states, backend.poll(ctx.scan))
            got = backend.fetch_records(ctx.scan)
            if with_progress:
                polled.progress += backend.fetch_progress(ctx.scan)
            polled.records += got
            polled.new_records += [record for record in got if ctx.agg.add(record)]
            ctx.agg.unreadable[f"{backend.name} channel"] = backend.unreadable(ctx.scan)
            ctx.outages.update({site: why for site, why in backend.outages(ctx.scan).items() if site in ctx.by_site})
        except HPScanError as error:
            ctx.fail_backend(name, str(error))
    return polled


def hold_unanswered(ctx: StepContext, previous: HPScanStatus | None) -> None:
    """A shard on a site that does not answer stays where the last status put it: never placed a second time."""
    for shard in previous.shards if previous is not None else []:
        if shard.index not in ctx.states and shard.site in ctx.outages and shard.phase in ACTIVE_PHASES:
            ctx.states[shard.index] = shard.model_copy(
                update={"reason": Reason.SCHEDULER_UNAVAILABLE, "message": ctx.outages[shard.site]}
            )
