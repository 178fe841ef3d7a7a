"""hpscan.controller.kopf_fixes on kopf's own watcher: a watcher cancelled before its first listing ended (its
namespace deleted) must not leave the operator waiting for that listing (every handler blocked for good)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import kopf
import pytest
from kopf._cogs.aiokits import aiotoggles
from kopf._cogs.clients import watching
from kopf._cogs.structs import references
from kopf._core.reactor import queueing

from hpscan.controller import kopf_fixes

JOBS = references.Resource("batch", "v1", "jobs", namespaced=True)


async def a_listing_that_never_ends(**_: Any) -> AsyncIterator[Any]:
    """Stands in for an API server that holds the first list of a namespace's Jobs (the integration test holds a
    real one with the fault proxy)."""
    await asyncio.Event().wait()
    yield  # pragma: no cover - never reached


async def handlers_ready_after_a_cancelled_watcher() -> bool:
    toggles = aiotoggles.ToggleSet(all)
    not_listed = await toggles.make_toggle(name="jobs@gone")
    task = asyncio.create_task(
        queueing.watcher(
            namespace="gone",
            settings=kopf.OperatorSettings(),
            resource=JOBS,
            processor=lambda **_: asyncio.sleep(0),
            operator_indexed=toggles,
            resource_indexed=not_listed,
        )
    )
    await asyncio.sleep(0.05)
    task.cancel()  # kopf's orchestrator stops the watcher of a deleted namespace this way
    await asyncio.gather(task, return_exceptions=True)
    return toggles.is_on()


@pytest.fixture
def slow_listing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watching, "infinite_watch", a_listing_that_never_ends)


@pytest.fixture
def kopf_as_shipped(monkeypatch: pytest.MonkeyPatch) -> None:
    """kopf's queueing module without the fix (restored after the test, whatever apply() did before)."""
    for name in ("watcher", "worker"):
        coroutine = getattr(queueing, name)
        monkeypatch.setattr(queueing, name, getattr(coroutine, "__wrapped__", coroutine))


def test_kopf_as_shipped_waits_for_a_cancelled_watchers_listing_for_good(slow_listing, kopf_as_shipped):
    """The defect itself: if kopf fixes it, this fails, and kopf_fixes can go."""
    assert not asyncio.run(handlers_ready_after_a_cancelled_watcher())


def test_with_the_fix_a_cancelled_watcher_no_longer_blocks_the_handlers(slow_listing, kopf_as_shipped):
    kopf_fixes.apply()
    assert asyncio.run(handlers_ready_after_a_cancelled_watcher())


def test_applying_twice_wraps_once(kopf_as_shipped):
    kopf_fixes.apply()
    first = queueing.watcher
    kopf_fixes.apply()
    assert queueing.watcher is first and first.__wrapped__ is not first
