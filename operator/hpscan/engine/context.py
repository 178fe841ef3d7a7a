"""What one step works on while it runs: the scan's shard states as the stages change them, and the sites whose
backend failed this step. The stages of hpscan.engine.step share it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from hpscan.api.contract import ResultRecord
from hpscan.api.spec import HPScanSpec
from hpscan.api.status import ShardStatus
from hpscan.api.trials import Progress
from hpscan.backends.base import Backend, ScanRef, ShardLaunch
from hpscan.core.brokering import Start, Target
from hpscan.core.decisions import Decision
from hpscan.core.results import Aggregate
from hpscan.errors import HPScanError


@dataclass
class StepContext:
    """One step in progress. ``backends`` holds the backends the targets name, by name in sorted order (the order
    every stage calls them in); ``outages`` the sites whose backend failed this step, with why."""

    scan: ScanRef
    spec: HPScanSpec
    agg: Aggregate
    targets: Sequence[Target]
    backends: dict[str, Backend]
    now: datetime
    states: dict[int, ShardStatus]
    outages: dict[str, str] = field(default_factory=dict)
    by_site: dict[str, Target] = field(init=False)

    def __post_init__(self) -> None:
        self.by_site = {t.name: t for t in self.targets}

    def backend_of(self, index: int) -> str | None:
        """The backend of the site a shard is on, None when it is on none (or on a site the scan no longer has)."""
        site = self.states[index].site if index in self.states else None
        return self.by_site[site].backend if site in self.by_site else None

    def fail_backend(self, backend_name: str, why: str) -> None:
        """Every site of ``backend_name`` is Unreachable this step, with ``why``."""
        self.outages.update({t.name: why for t in self.targets if t.backend == backend_name})

    def act(self, backend_name: str, what: str, action: Callable[[], None]) -> bool:
        """Run one backend action; a failure makes that backend's sites Unreachable, the others go on."""
        try:
            action()
        except HPScanError as error:
            self.fail_backend(backend_name, f"{what}: {error}")
            return False
        return True


@dataclass
class Polled:
    """What the backends handed over this step."""

    records: list[ResultRecord] = field(default_factory=list)
    """Every record fetched, repeats included."""
    new_records: list[ResultRecord] = field(default_factory=list)
    """Records that changed the summary, in arrival order."""
    progress: list[Progress] = field(default_factory=list)
    """Per-epoch reports of workers that pull."""


class Launcher(Protocol):
    """How a scan's shards get their work: a planned shard file each (hpscan.engine.act.PlannedShards) or trials
    handed to workers that pull (hpscan.engine.pull). The step calls these in its order."""

    def tell(self, ctx: StepContext, polled: Polled, decision: Decision) -> None:
        """Before any start: what the backends handed over and which shards leave."""

    def launch(self, ctx: StepContext, start: Start) -> ShardLaunch | None:
        """What to submit for ``start``; None when there is nothing to (the shard's state says why)."""

    def submitted(self, launches: Sequence[ShardLaunch], accepted: bool) -> None:
        """Whether the backend took ``launches``."""

    def feed(self, ctx: StepContext) -> None:
        """After the starts: the work of shards that run."""

    def held(self) -> Mapping[int, int] | None:
        """Trials each worker holds, for the status (None: planned shards)."""
