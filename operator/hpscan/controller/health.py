"""The operator's two health endpoints, on ``hpscan operator --health-port``: they answer different questions, so a
kubelet restarts only an operator that restarting can help.

- ``/livez`` (the liveness probe): is the control loop alive? It fails when kopf's event loop stopped turning (a
  heartbeat task went stale) or when one reconcile step has run for longer than any step can honestly take (a call
  that hangs without a timeout): a restart clears both. An API server that cannot be reached does not fail it:
  a restart cannot fix the network, and restarting every operator at once during an outage only adds load.
- ``/readyz`` (the readiness probe, and what ``helm install --wait`` waits on): can the operator serve? It has
  started (kopf's startup handlers ran, the backends are built) and the API server answers. ``/healthz`` answers
  the same, for probes written against kopf's endpoint before.

The server answers from its own thread, so a stuck event loop cannot keep its own health check green. The decisions
are the pure ``liveness_problem`` and ``readiness_problem``; ``Vitals`` is what the handlers report into.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

WEDGED_AFTER_S = 600.0
"""One reconcile step takes milliseconds to seconds: its Kubernetes requests time out after 30 s, a schedd query
after its own timeout. Ten minutes in one step means a call hangs."""
HEARTBEAT_S = 5.0
LOOP_STALE_AFTER_S = 60.0
"""kopf's event loop runs the watches and hands work to the executor; a minute without a heartbeat means it is
blocked."""
API_CHECK_EVERY_S = 10.0
"""The readiness probe asks the API server at most this often, however often it is probed."""


def liveness_problem(
    loop_beat: float | None,
    in_flight: Mapping[str, float],
    now: float,
    *,
    wedged_after: float = WEDGED_AFTER_S,
    loop_stale_after: float = LOOP_STALE_AFTER_S,
) -> str | None:
    """Why the control loop is not alive, or None. ``loop_beat`` is the event loop's last heartbeat (None before it
    started: an operator still starting is alive), ``in_flight`` when each running reconcile step began."""
    if loop_beat is not None and now - loop_beat > loop_stale_after:
        return f"kopf's event loop has not run for {now - loop_beat:.0f} s"
    wedged = sorted((began, scan) for scan, began in in_flight.items() if now - began > wedged_after)
    if wedged:
        began, scan = wedged[0]
        more = f" (and {len(wedged) - 1} more)" if len(wedged) > 1 else ""
        return f"the reconcile step of {scan} has run for {now - began:.0f} s{more}: a call hangs"
    return None


def readiness_problem(started: bool, api_problem: str | None) -> str | None:
    """Why the operator cannot serve yet, or None."""
    if not started:
        return "the operator is starting (its startup handlers have not finished)"
    if api_problem:
        return f"the API server does not answer: {api_problem}"
    return None


@dataclass
class Vitals:
    """What the operator reports about itself, read by the health endpoints (thread-safe)."""

    check_api: Callable[[], str | None]
    """Ask the API server something cheap: None when it answered, else why not."""
    clock: Callable[[], float] = time.monotonic
    started: bool = False
    loop_beat: float | None = None
    in_flight: dict[str, float] = field(default_factory=dict)
    _api_checked: tuple[float, str | None] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @contextmanager
    def reconciling(self, scan: str) -> Iterator[None]:
        """Around one reconcile step of one scan."""
        with self._lock:
            self.in_flight[scan] = self.clock()
        try:
            yield
        finally:
            with self._lock:
                self.in_flight.pop(scan, None)

    async def beat(self) -> None:
        """The event loop's heartbeat: runs as a task on kopf's loop until the operator stops."""
        while True:
            self.loop_beat = self.clock()
            await asyncio.sleep(HEARTBEAT_S)

    def liveness(self) -> str | None:
        with self._lock:
            in_flight = dict(self.in_flight)
        return liveness_problem(self.loop_beat, in_flight, self.clock())

    def readiness(self) -> str | None:
        if not self.started:
            return readiness_problem(False, None)
        now = self.clock()
        with self._lock:
            checked = self._api_checked
        if checked is None or now - checked[0] >= API_CHECK_EVERY_S:
            checked = (now, self.check_api())
            with self._lock:
                self._api_checked = checked
        return readiness_problem(True, checked[1])


def kubernetes_api_check(timeout_s: float = 5.0) -> Callable[[], str | None]:
    """GET /version with the operator's credentials: the cheapest request every identity may send."""

    def check() -> str | None:
        from kubernetes import client

        try:
            client.VersionApi().get_code(_request_timeout=timeout_s)
        except Exception as error:  # any failure to answer is the answer
            return str(error).splitlines()[0][:300] or type(error).__name__
        return None

    return check


def serve(vitals: Vitals, port: int, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Serve /livez, /readyz and /healthz from a daemon thread; returns the server (``shutdown()`` stops it)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            if path == "/livez":
                problem = vitals.liveness()
            elif path in ("/readyz", "/healthz"):
                problem = vitals.readiness()
            else:
                self.send_error(404)
                return
            body = json.dumps({"ok": problem is None, "problem": problem}).encode()
            self.send_response(200 if problem is None else 503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: not news
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="hpscan-health", daemon=True).start()
    return server
