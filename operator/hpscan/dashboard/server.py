"""The dashboard's web server: the page, its scripts and the scan's state as server-sent events, GET only, on
127.0.0.1. A thread polls the source; each change becomes one event for every open page."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import threading
import time
from collections.abc import Iterator
from functools import cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from hpscan.errors import HPScanError

POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15.0
"""An SSE comment this often, so a page whose server died notices (and a proxy keeps the stream open)."""

POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""The page may load nothing from anywhere else (no CDN, no font service), and evaluates no string as code (its
parallel coordinates are a canvas, not plotly's WebGL parcoords, whose regl needed 'unsafe-eval'); plotly (a
trial's curve) sets inline styles: 'unsafe-inline' for styles only."""

STATIC = {
    "/": ("hpscan.dashboard", "index.html", "text/html; charset=utf-8"),
    "/dashboard.js": ("hpscan.dashboard", "dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard.css": ("hpscan.dashboard", "dashboard.css", "text/css; charset=utf-8"),
    "/parcoords.js": ("hpscan.report", "parcoords.js", "text/javascript; charset=utf-8"),
}
"""The page's files: its own, and the report's parallel-coordinates drawing (one drawing code for both)."""


class Source(Protocol):
    """Where a scan's state comes from (a run folder; a scan on the cluster)."""

    def signature(self) -> Any:
        """Cheap to get; changes when the state may have changed."""

    def view(self) -> dict[str, Any]:
        """The page's state (hpscan.dashboard.view.view)."""

    def curve(self, trial_id: str) -> dict[str, Any]:
        """A trial's per-epoch metrics (hpscan.dashboard.view.curve)."""


@cache
def _static(package: str, name: str) -> bytes:
    return resources.files(package).joinpath("static", name).read_bytes()


@cache
def _plotly_js() -> bytes:
    """plotly.js as the installed plotly package bundles it (the page loads it to draw a trial's curve)."""
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
        self.streams = 0
        """Pages following it now (open event streams)."""
        self.used_at = time.monotonic()
        """When a page last asked for anything of it (ScanCatalog stops a Watch nobody uses)."""
        self._signature: Any = object()
        self._changed = threading.Condition()
        self._stop = threading.Event()

    @contextlib.contextmanager
    def followed(self) -> Iterator[None]:
        """While a page follows it (its event stream is open), it is not idle."""
        with self._changed:
            self.streams += 1
        try:
            yield
        finally:
            with self._changed:
                self.streams -= 1
                self.used_at = time.monotonic()

    def idle_for(self, now: float) -> float:
        """Seconds since a page last used it; 0 while one follows it."""
        return 0.0 if self.streams else now - self.used_at

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


LOCAL_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]"})


def host_name(header: str) -> str:
    """The name in a Host header, without its port ("[::1]:8080" -> "[::1]")."""
    if header.startswith("["):
        return header[: header.find("]") + 1]
    return header.rsplit(":", 1)[0]


def host_allowed(header: str, names: frozenset[str] = frozenset(), addresses: bool = False) -> bool:
    """A page of another site that points a name of its own at this server (DNS rebinding) sends that name: only
    the loopback names, ``names``, and with ``addresses`` any IP address (a Service's, a pod's, an API server
    reached by address) are answered."""
    name = host_name(header)
    if name in LOCAL_NAMES or name in names:
        return True
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return addresses


class Catalog(Protocol):
    """Many scans behind one server (`hpscan dashboard-server`): an index page at /, each scan's page below
    /scans/<namespace>/<name>/."""

    def index(self) -> bytes:
        """The index page (HTML)."""

    def watch(self, namespace: str, name: str) -> Watch:
        """The scan's Watch, started on first use; raises HPScanError when it cannot be read."""

    def stop(self) -> None:
        """End every Watch's polling."""


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

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        catalog = self.server.catalog
        if not host_allowed(self.headers.get("Host") or "", self.server.host_names, self.server.addresses):
            self._send(b"unknown host\n", "text/plain", HTTPStatus.MISDIRECTED_REQUEST)
        elif url.path == "/healthz":
            self._send(b"ok\n", "text/plain")
        elif catalog is None:
            self._scan_page(self.server.watch, url.path, url.query)
        elif url.path == "/":
            self._send(catalog.index(), "text/html; charset=utf-8")
        elif url.path in STATIC:  # the index's style sheet
            self._scan_page(None, url.path, url.query)
        elif (parts := url.path.split("/", 4))[:2] == ["", "scans"] and len(parts) == 5:
            try:
                watch = catalog.watch(parts[2], parts[3])
            except HPScanError as error:
                self._send(f"{error}\n".encode(), "text/plain; charset=utf-8", HTTPStatus.NOT_FOUND)
            else:
                self._scan_page(watch, "/" + parts[4], url.query)
        else:
            self._send(b"not found\n", "text/plain", HTTPStatus.NOT_FOUND)

    def _scan_page(self, watch: Watch | None, path: str, query: str) -> None:
        """One scan's page and what it asks for, at paths relative to where the page is."""
        if watch is not None:
            watch.used_at = time.monotonic()
        if path in STATIC:
            package, name, content_type = STATIC[path]
            self._send(_static(package, name), content_type)
        elif path == "/plotly.min.js":
            self._send(_plotly_js(), "text/javascript; charset=utf-8")
        elif watch is None:
            self._send(b"not found\n", "text/plain", HTTPStatus.NOT_FOUND)
        elif path == "/state.json":
            self._send(watch.payload, "application/json")
        elif path == "/curve.json":
            trial_id = parse_qs(query).get("id", [""])[0]
            body = json.dumps(watch.source.curve(trial_id), allow_nan=False).encode("utf-8")
            self._send(body, "application/json")
        elif path == "/events":
            self._events(watch)
        else:
            self._send(b"not found\n", "text/plain", HTTPStatus.NOT_FOUND)

    def _events(self, watch: Watch) -> None:
        with watch.followed():
            self._stream(watch)

    def _stream(self, watch: Watch) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            for frame in watch.updates(after=0):
                self.wfile.write(b": alive\n\n" if frame is None else frame)
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the page was closed


class DashboardServer(ThreadingHTTPServer):
    """Serves one scan's page (``watch``), or with ``catalog`` an index of scans and each one's page."""

    daemon_threads = True

    def __init__(
        self,
        watch: Watch | None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        catalog: Catalog | None = None,
        host_names: frozenset[str] = frozenset(),
        addresses: bool = False,
    ) -> None:
        super().__init__((host, port), _Handler)
        self.watch, self.catalog = watch, catalog
        self.host_names, self.addresses = host_names, addresses
        """Host names answered besides the loopback ones, and whether any IP address is (host_allowed)."""

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


def start_catalog(catalog: Catalog, host: str, port: int, host_names: frozenset[str] = frozenset()) -> DashboardServer:
    """Serve the catalog's index and scans on ``host``:``port`` in a thread; any IP address is answered as a Host
    (the Service's, the pod's, an API server's proxy reached by address), and ``host_names``."""
    server = DashboardServer(None, host, port, catalog=catalog, host_names=host_names, addresses=True)
    threading.Thread(target=server.serve_forever, name="dashboard-http", daemon=True).start()
    return server


def stop(server: DashboardServer) -> None:
    if server.watch is not None:
        server.watch.stop()
    if server.catalog is not None:
        server.catalog.stop()
    server.shutdown()
    server.server_close()
