"""Prometheus metrics of the operator, served on --metrics-port (the chart's metrics Service points at it)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

SCANS = Gauge("hpscan_scans", "HPScans watched, by phase.", ["phase"])
SHARDS = Gauge("hpscan_shards", "Shards of watched HPScans, by phase.", ["phase"])
COMBINATIONS = Gauge("hpscan_combinations", "Combinations of watched HPScans, by state.", ["state"])
RECONCILE_SECONDS = Histogram(
    "hpscan_reconcile_seconds",
    "Time of one reconcile step of one HPScan.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
API_REQUESTS = Counter("hpscan_api_requests_total", "Requests the operator sent to the Kubernetes API.", ["method"])
API_ERRORS = Counter("hpscan_api_errors_total", "Kubernetes API requests that failed.", ["status"])

_by_scan: dict[str, tuple[str, dict[str, int], dict[str, int]]] = {}


def serve(port: int) -> None:
    start_http_server(port)


def observe_scan(uid: str, phase: str, shard_phases: dict[str, int], combinations: dict[str, int]) -> None:
    """Remember one scan's latest numbers and refresh the gauges (sums over scans)."""
    _by_scan[uid] = (phase, shard_phases, combinations)
    _refresh()


def forget_scan(uid: str) -> None:
    _by_scan.pop(uid, None)
    _refresh()


def _refresh() -> None:
    for gauge in (SCANS, SHARDS, COMBINATIONS):
        gauge.clear()
    for phase, shards, combinations in _by_scan.values():
        SCANS.labels(phase).inc()
        for shard_phase, n in shards.items():
            SHARDS.labels(shard_phase).inc(n)
        for state, n in combinations.items():
            COMBINATIONS.labels(state).inc(n)


@contextmanager
def timed_reconcile() -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        RECONCILE_SECONDS.observe(time.perf_counter() - start)


def count_api_requests(api_client: Any) -> Any:
    """Wrap an ApiClient so every request it sends (and every failed one) is counted."""
    original: Callable[..., Any] = api_client.call_api

    @functools.wraps(original)
    def counted(method: str, *args: Any, **kwargs: Any) -> Any:
        API_REQUESTS.labels(method).inc()
        try:
            response = original(method, *args, **kwargs)
        except Exception as error:  # an ApiException carries the server's answer (e.g. a routine 409); else no answer
            status = getattr(error, "status", None)
            API_ERRORS.labels(str(status) if status else "unreachable").inc()
            raise
        if getattr(response, "status", 200) >= 400:
            API_ERRORS.labels(str(response.status)).inc()
        return response

    api_client.call_api = counted
    return api_client
