"""The backend contract (backend_contract.py) in the fast lane: local processes and the in-memory fake backend,
no cluster. The integration lane runs the same tests for kubernetes, htcondor and the simulation's neighbours."""

from __future__ import annotations

from backend_contract import (  # noqa: F401 (the contract's tests, collected here)
    FakeHarness,
    LocalHarness,
    harness_fixture,
    test_a_crashed_attempt_is_retried_and_counted,
    test_a_final_exit_fails_the_shard_at_once_and_is_never_retried,
    test_after_a_restart_records_fold_once_and_nothing_is_trained_twice,
    test_cancel_suspends_and_keeps_the_records,
    test_submit_is_idempotent,
    test_workers_that_pull_get_trials_and_stops_and_a_restart_repeats_nothing,
)

make_harness = harness_fixture({"local": LocalHarness, "fake": FakeHarness})
