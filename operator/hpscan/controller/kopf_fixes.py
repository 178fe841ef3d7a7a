"""A fix for a kopf defect that stalls every handler of the operator for good (kopf 1.45; not fixed upstream).

kopf calls no handler until every indexed resource (our shard Jobs and record ConfigMaps, ``@kopf.index``) has
been listed in every watched namespace: each new namespace's watcher holds a "not yet indexed" toggle until its
first listing ends, and every handler waits until all such toggles are on. When a namespace matching the
operator's pattern is deleted before that listing ends (an API server under load answers a list late; a test
or a user creates and deletes a namespace at once), kopf cancels the watcher but never drops its toggle, so no
handler in any namespace runs again: the operator stays alive, idle and silent. Per-object toggles leak the same
way when a worker is cancelled before it handled its object's first event.

The fix wraps kopf's watcher and worker coroutines so that whatever toggle they were given is dropped when they
end, however they end; dropping is idempotent, so the normal path (kopf drops it after the listing) is unchanged.
A stopped watcher's namespace is gone, and so are its objects: nothing is left to wait for. The test is
tests/integration/kubernetes/test_operator_faults.py (a namespace deleted while its listing is held by the fault
proxy), which stalls the operator without this fix.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from kopf._core.reactor import queueing  # kopf's private module: checked on install, see apply()

_APPLIED = "_hpscan_drops_index_toggles"


def _dropping_toggles(coroutine: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    @functools.wraps(coroutine)
    async def run(*args: Any, **kwargs: Any) -> None:
        try:
            await coroutine(*args, **kwargs)
        finally:
            toggles, toggle = kwargs.get("operator_indexed"), kwargs.get("resource_indexed")
            if toggles is not None and toggle is not None:
                await toggles.drop_toggle(toggle)

    setattr(run, _APPLIED, True)
    return run


def apply() -> None:
    """Install the fix once, before kopf runs. Refuses loudly if kopf's internals moved (a kopf upgrade must
    re-check the defect, not silently lose the fix)."""
    for name in ("watcher", "worker"):
        coroutine = getattr(queueing, name, None)
        if coroutine is None:
            raise RuntimeError(f"kopf._core.reactor.queueing.{name} is gone: re-check hpscan/controller/kopf_fixes.py")
        if not getattr(coroutine, _APPLIED, False):
            setattr(queueing, name, _dropping_toggles(coroutine))
