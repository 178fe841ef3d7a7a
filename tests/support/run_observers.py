"""A RunObserver (hpscan.local_scan) for tests of `hpscan run` that shows nothing."""

from __future__ import annotations

from typing import Any


class Quiet:
    """Shows nothing. Counts the records it is told of; with ``interrupt_after``, stops the run at that record as a
    Ctrl-C would."""

    def __init__(self, interrupt_after: int | None = None) -> None:
        self.interrupt_after = interrupt_after
        self.records = 0
        self.workers = 0

    def started(self, planned: Any, agg: Any, workers: int) -> None:
        self.workers = workers

    def recorded(self, record: Any, agg: Any) -> None:
        self.records += 1
        if self.interrupt_after is not None and self.records >= self.interrupt_after:
            raise KeyboardInterrupt

    def updated(self, status: Any) -> None:
        pass
