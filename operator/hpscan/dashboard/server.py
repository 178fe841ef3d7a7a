"""The dashboard's web server: the page, its scripts and the scan's state as server-sent events, GET only, on
127.0.0.1. A thread polls the source; each change becomes one event for every open page."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from functools import cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15.0
"""An SSE comment this often, so a page whose server died notices (and a proxy keeps the stream open)."""

POLICY = (
    "default-src 'none'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""The page may load nothing from anywhere else (no CDN, no font service). plotly's WebGL parcoords compiles its
shaders' glue with Function (regl): 'unsafe-eval'; plotly sets inline styles: 'unsafe-inline' for styles only."""

STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}


class Source(Protocol):
    """Where a scan's state comes from (a run folder; a scan on the cluster)."""

    def signature(self) -> Any:
        """Cheap to get; changes when the state may have changed."""

    def view(self) -> dict[str, Any]:
        """The page's state (hpscan.dashboard.view.view)."""

    def curve(self, trial_id: str) -> dict[str, Any]:
        """A trial's per-epoch metrics (hpscan.dashboard.view.curve)."""


@cache
def _static(name: str) -> bytes:
    return resources.files("hpscan.dashboard").joinpath("static", name).read_bytes()


@cache
def _plotly_js() -> bytes:
    """plotly.js as the installed plotly package bundles it (what `hpscan report` inlines)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().encode("utf-8")


class Watch:
    """The latest state of a source, numbered; pages wait for a newer one. When reading the source fails (a
    cluster that does not answer), pages keep the last state and are told why, until a read succeeds again."""

    def __init__(self, source: Source, poll_seconds: float = POLL_SECONDS) -> None:
        self.source = source
        self.poll_seconds = poll_seconds
        self.version = 0
        self.payload = b""
        """The latest state as JSON."""
        self.error = ""
        """Why the last read failed; empty when it did not."""
        self._signature: Any = object()
        self._changed = threading.Condition()
        self._stop = threading.Event()

    def _publish(self, payload: bytes, error: str) -> None:
        with self._changed:
            self.version += 1
            self.payload, self.error = payload, error
            self._changed.notify_all()

    def refresh(self) -> bool:
        """Read the source again when its signature changed; True when there is a new state."""
        signature = self.source.signature()
        if signature == self._signature:
            return False
        state = self.source.view()
        self._signature = signature
        self._publish(json.dumps(state, separators=(",", ":"), allow_nan=False, default=str).encode("utf-8"), "")
        return True

    def run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                if not self.refresh() and self.error:
                    self._publish(self.payload, "")  # it answers again, with nothing new
            except Exception as error:  # a half-written file, a cluster that did not answer: try again next poll
                problem = f"{type(error).__name__}: {error}"
                if problem != self.error:
                    self._publish(self.payload, problem)

    def stop(self) -> None:
        self._stop.set()
        with self._changed:
            self._changed.notify_all()

    def frame(self) -> bytes:
        """The server-sent events of the current state: the state, then the problem with reading it, if any."""
        frame = b"data: " + self.payload + b"\n\n"
        if self.error:
            frame += b"event: problem\ndata: " + json.dumps({"error": self.error}).encode("utf-8") + b"\n\n"
        return frame

    def updates(self, after: int) -> Iterator[bytes | None]:
        """The events of each state newer than ``after`` as it comes; None when nothing came for
        KEEPALIVE_SECONDS."""
        while not self._stop.is_set():
            with self._changed:
                if self.version <= after:
                    self._changed.wait(KEEPALIVE_SECONDS)
                newer = self.version > after
                if newer:
                    after, frame = self.version, self.frame()
            yield frame if newer else None  # outside the lock: a slow page never holds up the poll


class _Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the terminal shows the URL only
        pass

    def _send(self, body: bytes, content_type: str, status: HTTPStatus = HTTPStatus.OK) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Security-Policy", POLICY)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def _local_host(self) -> bool:
        """Only pages loaded from this server (a page of another site that points a name at 127.0.0.1 sends its
        own Host: refused)."""
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
        return host in {"127.0.0.1", "localhost", "[::1]"}

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if not self._local_host():
            self._send(b"unknown host\n", "text/plain", HTTPStatus.MISDIRECTED_REQUEST)
        elif url.path in STATIC:
            name, content_type = STATIC[url.path]
            self._send(_static(name), content_type)
        elif url.path == "/plotly.min.js":
            self._send(_plotly_js(), "text/javascript; charset=utf-8")
        elif url.path == "/state.json":
            self._send(self.server.watch.payload, "application/json")
        elif url.path == "/curve.json":
            trial_id = parse_qs(url.query).get("id", [""])[0]
            body = json.dumps(self.server.watch.source.curve(trial_id), allow_nan=False).encode("utf-8")
            self._send(body, "application/json")
        elif url.path == "/events":
            self._events()
        else:
            self._send(b"not found\n", "text/plain", HTTPStatus.NOT_FOUND)

    def _events(self) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            for frame in self.server.watch.updates(after=0):
                self.wfile.write(b": alive\n\n" if frame is None else frame)
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the page was closed


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, watch: Watch, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__((host, port), _Handler)
        self.watch = watch

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/"


def start(source: Source, port: int = 0, poll_seconds: float = POLL_SECONDS) -> DashboardServer:
    """Read the source once, then serve it on 127.0.0.1:``port`` (0: a free port) and poll it, both in threads
    of their own; ``stop(server)`` ends both."""
    watch = Watch(source, poll_seconds)
    watch.refresh()
    server = DashboardServer(watch, port=port)
    threading.Thread(target=watch.run, name="dashboard-poll", daemon=True).start()
    threading.Thread(target=server.serve_forever, name="dashboard-http", daemon=True).start()
    return server


def stop(server: DashboardServer) -> None:
    server.watch.stop()
    server.shutdown()
    server.server_close()
