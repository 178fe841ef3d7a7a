"""The machinery every backend shares (hpscan.backends.base): per-scan tables, error wrapping, de-duplication."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hpscan.api.spec import HPScan
from hpscan.backends.base import ScanRef, ScanTable, SeenKeys, batch_call, manifest_uid
from hpscan.errors import BackendError, SchedulerUnavailable


@dataclass
class Held:
    scan: ScanRef
    seen: set[str] = field(default_factory=set)


def test_a_scan_has_one_entry_until_it_is_forgotten_and_then_starts_afresh():
    table = ScanTable(Held, key=lambda scan: scan.uid)
    scan = ScanRef("scan", "team", uid="u1")
    table.open(scan).seen.add("c0")
    assert table.open(ScanRef("scan", "team", uid="u1")).seen == {"c0"}  # the same scan: the same entry
    assert table.get(ScanRef("scan", "team", uid="u2")) is None  # recreated under the same name: another scan
    assert scan in table and len(table) == 1 and table.keys() == {"u1"}

    assert table.drop(scan) is not None
    assert table.get(scan) is None and len(table) == 0 and table.drop(scan) is None
    assert table.open(scan).seen == set()


def test_by_default_scans_are_told_apart_by_namespace_and_name():
    table = ScanTable(Held)
    table.open(ScanRef("scan", "team", uid="u1"))
    assert ScanRef("scan", "team", uid="u2") in table
    assert ScanRef("scan", "other") not in table


def test_a_failed_call_raises_the_backends_error_after_the_cleanup_and_without_the_clients_traceback():
    dropped = []

    def failed(error: Exception) -> SchedulerUnavailable:
        return SchedulerUnavailable(f"did not answer: {error}")

    expected = pytest.raises(SchedulerUnavailable, match="did not answer: connection refused")
    with expected as raised, batch_call(failed, after=lambda: dropped.append(1)):
        raise ConnectionRefusedError("connection refused")
    assert dropped == [1]
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_a_call_that_succeeds_cleans_nothing_up():
    dropped = []
    with batch_call(lambda error: BackendError(str(error)), after=lambda: dropped.append(1)):
        pass
    assert dropped == []


def test_each_record_is_handed_over_once_though_the_batch_system_shows_it_again():
    seen = SeenKeys()
    assert seen.first_seen(["a", "b", "a"], key=str) == ["a", "b"]
    assert seen.first_seen(["b", "c"], key=str) == ["c"]
    assert "a" in seen and len(seen) == 3


def test_a_call_that_catches_only_its_clients_errors_lets_any_other_pass_unchanged():
    with pytest.raises(BackendError, match="refused"), batch_call(BackendError, catching=(PermissionError,)):
        raise PermissionError("refused")
    with pytest.raises(KeyError), batch_call(BackendError, catching=(PermissionError,)):
        raise KeyError("a bug, not the batch system's answer")


def test_a_manifest_run_again_into_its_folder_is_the_same_scan_and_into_another_folder_a_new_one(tmp_path):
    scan = HPScan.model_validate(
        {
            "metadata": {"name": "dl1"},
            "spec": {
                "parameters": [{"name": "lr", "values": [0.1]}],
                "sharding": {"shards": 1},
                "payload": {"image": "x"},
            },
        }
    )
    first = manifest_uid("dl1", scan.spec, tmp_path / "run")
    assert first.startswith("manifest-") and first == manifest_uid("dl1", scan.spec, tmp_path / "x" / ".." / "run")
    assert manifest_uid("dl1", scan.spec, tmp_path / "run-2") != first  # its jobs' sandboxes are not in the first
    assert manifest_uid("other", scan.spec, tmp_path / "run") != first
    changed = scan.spec.model_copy(update={"retries": scan.spec.retries + 1})
    assert manifest_uid("dl1", changed, tmp_path / "run") != first
    assert manifest_uid("dl1", scan.spec, Path("run")) == manifest_uid("dl1", scan.spec, Path("run").resolve())
