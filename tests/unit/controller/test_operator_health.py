"""The operator's health endpoints answer two different questions (controller/health.py): /livez fails only for what
a restart fixes (a stopped event loop, a reconcile step that hangs), /readyz for what it does not (still starting,
an API server that does not answer). Served for real on a loopback port, with a clock the test moves."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from hpscan.controller.health import (
    API_CHECK_EVERY_S,
    LOOP_STALE_AFTER_S,
    WEDGED_AFTER_S,
    Vitals,
    liveness_problem,
    readiness_problem,
    serve,
)


def test_a_starting_operator_is_alive_but_not_ready():
    assert liveness_problem(None, {}, now=1000.0) is None
    assert readiness_problem(False, None) == "the operator is starting (its startup handlers have not finished)"


def test_a_stale_event_loop_is_not_alive():
    assert liveness_problem(100.0, {}, now=100.0 + LOOP_STALE_AFTER_S) is None
    problem = liveness_problem(100.0, {}, now=100.0 + LOOP_STALE_AFTER_S + 1)
    assert problem == f"kopf's event loop has not run for {LOOP_STALE_AFTER_S + 1:.0f} s"


def test_a_hanging_reconcile_step_is_named_the_oldest_first():
    now = 5000.0
    in_flight = {"ns/fresh": now - 3, "ns/stuck": now - WEDGED_AFTER_S - 200, "ns/slow": now - WEDGED_AFTER_S - 10}
    problem = liveness_problem(now, in_flight, now)
    assert (
        problem == f"the reconcile step of ns/stuck has run for {WEDGED_AFTER_S + 200:.0f} s (and 1 more): a call hangs"
    )
    assert liveness_problem(now, {"ns/fresh": now - 3}, now) is None


def test_an_api_server_that_does_not_answer_makes_it_unready_not_dead():
    assert readiness_problem(True, "connection refused") == "the API server does not answer: connection refused"
    assert readiness_problem(True, None) is None


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def served() -> Iterator[tuple[Vitals, Clock, list[str | None], int]]:
    clock, answers, asked = Clock(), [None], []

    def check_api() -> str | None:
        asked.append(answers[0])
        return answers[0]

    vitals = Vitals(check_api=check_api, clock=clock)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = serve(vitals, port, host="127.0.0.1")
    try:
        yield vitals, clock, answers, port
    finally:
        server.shutdown()
        server.server_close()


def get(port: int, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_endpoints_answer_each_question_apart(served):
    vitals, clock, answers, port = served
    assert get(port, "/livez") == (200, {"ok": True, "problem": None})
    assert get(port, "/readyz")[0] == 503  # not started yet
    vitals.started, vitals.loop_beat = True, clock.now
    assert get(port, "/readyz") == (200, {"ok": True, "problem": None})
    assert get(port, "/healthz")[0] == 200  # the path kopf's endpoint had

    # the API server goes away: unready, still alive (the answer is cached between checks)
    answers[0] = "connection refused"
    assert get(port, "/readyz")[0] == 200
    clock.now += API_CHECK_EVERY_S
    assert get(port, "/readyz") == (503, {"ok": False, "problem": "the API server does not answer: connection refused"})
    assert get(port, "/livez")[0] == 200
    answers[0] = None

    # a reconcile step hangs: dead, still ready; it ends, and the operator is alive again
    with vitals.reconciling("team-a/scan"):
        vitals.loop_beat = clock.now = clock.now + WEDGED_AFTER_S + 1
        status, body = get(port, "/livez")
        assert status == 503 and body["problem"].startswith("the reconcile step of team-a/scan has run for")
        assert get(port, "/readyz")[0] == 200
    assert get(port, "/livez")[0] == 200
