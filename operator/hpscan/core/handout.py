"""The pure hand-out rules of workers that pull (hpscan.core.search keeps the ledger they serve)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["top_up", "workers_to_end"]


def top_up(open_counts: Mapping[int, int], per_worker: int) -> dict[int, int]:
    """How many new trials each running worker gets: enough to hold ``per_worker`` open ones."""
    return {w: per_worker - n for w, n in sorted(open_counts.items()) if n < per_worker}


def workers_to_end(running: Iterable[int], ended: Iterable[int], all_handed_out: bool) -> list[int]:
    """Running workers whose channel must now say "no more trials" (once each)."""
    if not all_handed_out:
        return []
    told = set(ended)
    return sorted(w for w in running if w not in told)
