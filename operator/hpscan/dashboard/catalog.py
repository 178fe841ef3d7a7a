"""Every scan one server may read, for the operator chart's dashboard (`hpscan dashboard-server`): an index page of
the HPScans, each opening the page `hpscan dashboard NAME` serves, below /scans/<namespace>/<name>/.

The index shows what `kubectl get hps` shows (name, phase, progress, best, age), never a manifest. How scans are
listed and read is handed in (the cli layer reads the cluster), so this module is the web side only.
"""

from __future__ import annotations

import html
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from hpscan.dashboard.server import Source, Watch
from hpscan.errors import HPScanError

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
DNS_SUBDOMAIN = re.compile(r"(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


IDLE_SECONDS = 600.0
"""A scan's Watch that no page used for this long stops polling the API server (a later visit starts it again)."""


class NotServed(HPScanError):
    """A scan this server does not show: a name that is no Kubernetes name, or a namespace it does not watch."""

    exit_code = 1
    reason = "NotServed"


def scan_row(body: Mapping[str, Any], now: float) -> dict[str, str]:
    """One HPScan as a row of the index: what `kubectl get hps` prints."""
    meta, status = body.get("metadata") or {}, body.get("status") or {}
    best = status.get("best") or {}
    created = meta.get("creationTimestamp")
    age = ""
    if created:
        seconds = max(0, int(now - datetime.fromisoformat(str(created).replace("Z", "+00:00")).timestamp()))
        age = (
            f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
            if seconds >= 3600
            else f"{seconds // 60}m{seconds % 60:02d}s"
        )
    return {
        "namespace": str(meta.get("namespace") or ""),
        "name": str(meta.get("name") or ""),
        "phase": str(status.get("phase") or "Pending"),
        "progress": str(status.get("progress") or ""),
        "best": "" if best.get("value") is None else f"{best['value']:.4g}",
        "age": age,
    }


def index_page(rows: Sequence[Mapping[str, str]], problem: str = "") -> bytes:
    """The index: one line per scan, its name a link (relative: the page may sit below an API server's proxy) to
    the scan's page. It reloads itself every 10 s (no script: the policy allows only the server's own)."""
    cells = "".join(
        f'<tr><td>{html.escape(r["namespace"])}</td><td><a href="scans/{html.escape(r["namespace"])}/'
        f'{html.escape(r["name"])}/">{html.escape(r["name"])}</a></td><td class="phase {html.escape(r["phase"])}">'
        f"{html.escape(r['phase'])}</td><td>{html.escape(r['progress'])}</td><td>{html.escape(r['best'])}</td>"
        f"<td>{html.escape(r['age'])}</td></tr>"
        for r in sorted(rows, key=lambda r: (r["namespace"], r["name"]))
    )
    empty = "" if rows else '<p class="empty">no HPScan this dashboard may read</p>'
    said = f'<p id="problem" class="problem">cannot list the scans: {html.escape(problem)}</p>' if problem else ""
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<meta http-equiv="refresh" content="10">\n'
        '<title>hpscan scans</title>\n<link rel="icon" href="data:,">\n<link rel="stylesheet" href="dashboard.css">\n'
        "</head>\n<body>\n<header><h1>HPScans</h1></header>\n"
        f'{said}<section><table id="scans"><thead><tr><th>namespace</th><th>name</th><th>phase</th><th>done</th>'
        f"<th>best</th><th>age</th></tr></thead><tbody>{cells}</tbody></table>{empty}</section>\n</body>\n</html>\n"
    ).encode()


class ScanCatalog:
    """The scans of ``namespaces`` (empty: every namespace ``list_scans`` returns), each read through a Source
    from ``open_source(namespace, name)`` when its page is first asked for, then polled in a thread of its own."""

    def __init__(
        self,
        list_scans: Callable[[], list[dict[str, Any]]],
        open_source: Callable[[str, str], Source],
        namespaces: Sequence[str] = (),
        poll_seconds: float = 1.0,
        clock: Callable[[], float] = time.time,
        idle_seconds: float = IDLE_SECONDS,
    ) -> None:
        self.list_scans, self.open_source = list_scans, open_source
        self.namespaces = frozenset(namespaces)
        self.poll_seconds, self.clock, self.idle_seconds = poll_seconds, clock, idle_seconds
        self._watches: dict[tuple[str, str], Watch] = {}
        self._lock = threading.Lock()

    def index(self) -> bytes:
        with self._lock:
            self._stop_idle()
        try:
            bodies = self.list_scans()
        except HPScanError as error:
            return index_page([], str(error))
        rows = [scan_row(body, self.clock()) for body in bodies]
        return index_page([r for r in rows if not self.namespaces or r["namespace"] in self.namespaces])

    def watch(self, namespace: str, name: str) -> Watch:
        if not (DNS_LABEL.fullmatch(namespace) and DNS_SUBDOMAIN.fullmatch(name)):
            raise NotServed(f"{namespace}/{name}: not a namespace and HPScan name")
        if self.namespaces and namespace not in self.namespaces:
            raise NotServed(
                f"namespace {namespace}: not watched by this dashboard ({', '.join(sorted(self.namespaces))})"
            )
        with self._lock:  # one Watch per scan, however many pages open it at once
            self._stop_idle()
            watch = self._watches.get((namespace, name))
            if watch is None:
                watch = Watch(self.open_source(namespace, name), self.poll_seconds)
                watch.refresh()
                threading.Thread(target=watch.run, name=f"dashboard-poll-{namespace}-{name}", daemon=True).start()
                self._watches[(namespace, name)] = watch
        return watch

    def _stop_idle(self) -> None:
        """Stop the Watches no page used for idle_seconds: each polls the API server once a second."""
        now = time.monotonic()
        for key, watch in list(self._watches.items()):
            if watch.idle_for(now) > self.idle_seconds:
                watch.stop()
                del self._watches[key]

    def stop(self) -> None:
        with self._lock:
            for watch in self._watches.values():
                watch.stop()
