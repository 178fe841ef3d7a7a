"""The backend contract (backend_contract.py) in the fast lane: local processes and the in-memory fake backend,
no cluster. The integration lane runs the same tests for kubernetes, htcondor and the simulation's neighbours."""

from __future__ import annotations

from hpscan.api.spec import HPScan
from hpscan.engine import EngineSettings
from hpscan.local_scan import run_scan, site_from_here
from hpscan.testing.fake_backend import registered
from support.backend_contract import (  # noqa: F401 (the contract's tests, collected here)
    FakeHarness,
    LocalHarness,
    contract_spec,
    harness_fixture,
    test_a_crashed_attempt_is_retried_and_counted,
    test_a_final_exit_fails_the_shard_at_once_and_is_never_retried,
    test_after_a_restart_records_fold_once_and_nothing_is_trained_twice,
    test_cancel_suspends_and_keeps_the_records,
    test_submit_is_idempotent,
    test_what_a_job_records_while_it_stops_is_kept_and_never_trained_again,
    test_workers_that_pull_get_trials_and_stops_and_a_restart_repeats_nothing,
)
from support.run_observers import Quiet

make_harness = harness_fixture({"local": LocalHarness, "fake": FakeHarness})


def test_hpscan_run_site_runs_a_scan_at_a_site_of_the_fake_backend(tmp_path):
    """`hpscan run --site` at any backend whose registry entry submits from here: a crashed attempt is retried,
    every combination recorded once in the run folder, and running it again trains nothing."""
    with registered() as batch:
        spec = contract_spec({"failAttempts": {"0": 1}}, tmp_path / "trained.log", retries=1)
        spec["sites"] = [{"name": "queue", "fake": {}}]
        scan = HPScan.model_validate(
            {"apiVersion": "hpscan.io/v1alpha1", "kind": "HPScan", "metadata": {"name": "f"}, "spec": spec}
        )
        settings = EngineSettings(poll_seconds=0)
        status = run_scan(scan, tmp_path / "run", Quiet(), settings, site=site_from_here(scan, "queue"))
        assert status.phase == "Succeeded" and status.combinations.succeeded == 4, status.message
        assert [s.attempts for s in status.shards] == [2, 1]
        assert len((tmp_path / "run" / "results.jsonl").read_text().splitlines()) == 4
        assert set(batch.trained_count.values()) == {1} and len(batch.trained_count) == 4
        again = run_scan(scan, tmp_path / "run", Quiet(), settings, site=site_from_here(scan, "queue"))
        assert again.phase == "Succeeded" and len(batch.trained_count) == 4 and set(batch.trained_count.values()) == {1}
