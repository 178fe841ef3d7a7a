"""Trial checkpoints in the scan's object store (hpscan.job.checkpoints), the pure decisions: when to upload, which
trials changed, which keys are whose, what to restore and what to prune. The uploads themselves run against a real
S3 server in tests/integration/store/test_checkpoint_store.py."""

from __future__ import annotations

import json

import pytest

from hpscan.api.store import CHECKPOINT_MANIFEST, ModelStoreLocation, S3Store
from hpscan.job.checkpoints import (
    changed_trials,
    manifest,
    new_version,
    stored_after,
    stored_trials,
    to_prune,
    to_restore,
    upload_due,
)

LOCATION = ModelStoreLocation.of(
    S3Store.model_validate(
        {"endpoint": "http://s3:9000", "bucket": "b-1", "prefix": "scans", "secretRef": {"name": "s"}}
    ),
    "physics",
    "dl1",
)
PREFIX = LOCATION.checkpoints_prefix


def test_checkpoints_live_in_their_own_folder_of_the_scans_prefix():
    assert PREFIX == "scans/physics/dl1/_checkpoints/"
    assert LOCATION.checkpoint_key("c3-ab") == "scans/physics/dl1/_checkpoints/c3-ab/"
    assert LOCATION.checkpoint_key("c3-ab", "v1", "state.npz") == "scans/physics/dl1/_checkpoints/c3-ab/v1/state.npz"
    # No combination id starts with "_": a model folder and the checkpoints never share a first part.
    assert not LOCATION.model_key("c3-ab").startswith(PREFIX)


@pytest.mark.parametrize(
    ("last_upload", "now", "last", "due"),
    [
        (100.0, 399.0, False, False),  # within the interval: at most every 300 s
        (100.0, 400.0, False, True),
        (100.0, 101.0, True, True),  # the payload ended (a SIGTERM, a crash): now, whatever the interval
    ],
)
def test_uploads_are_due_at_most_every_interval_and_at_the_payloads_end(last_upload, now, last, due):
    assert upload_due(last_upload, now, 300.0, last) is due


def test_a_trial_is_uploaded_when_its_folder_changed_and_settled():
    second = 1_000_000_000
    uploaded = {"same": {"state.npz": (10, 5 * second)}, "newer": {"state.npz": (10, 5 * second)}}
    local = {
        "same": {"state.npz": (10, 5 * second)},  # uploaded as it is: nothing to send
        "newer": {"state.npz": (10, 8 * second)},  # saved again since
        "fresh": {"state.npz": (12, 7 * second)},  # never uploaded
        "saving": {"a.bin": (3, 6 * second), "b.bin": (3, int(9.9 * second))},  # b written 0.1 s ago: a.bin next?
        "one_file": {"state.npz": (12, int(9.9 * second))},  # replaced atomically: whole at any moment
        "empty": {},
    }
    assert changed_trials(local, uploaded, 10 * second, 0.3) == ["fresh", "newer", "one_file"]
    assert changed_trials(local, uploaded, 10 * second, 0.0) == ["fresh", "newer", "one_file", "saving"]  # at the end


def test_stored_keys_group_by_trial_and_version_and_the_newest_whole_version_is_restored():
    keys = [
        f"{PREFIX}c1-a/0000000001000-aaaa/state.npz",
        f"{PREFIX}c1-a/0000000001000-aaaa/{CHECKPOINT_MANIFEST}",
        f"{PREFIX}c1-a/0000000002000-bbbb/state.npz",  # an upload that broke off: no manifest
        f"{PREFIX}c2-b/0000000001500-cccc/sub/w.bin",
        f"{PREFIX}c2-b/0000000001500-cccc/{CHECKPOINT_MANIFEST}",
        f"{PREFIX}c3-c/0000000001500-dddd/{CHECKPOINT_MANIFEST}",
        f"{PREFIX}stray",  # not of the layout
        "scans/physics/dl1/c1-a/model.json",  # a model, outside the prefix
    ]
    stored = stored_trials(keys, PREFIX)
    assert set(stored) == {"c1-a", "c2-b", "c3-c"}
    assert stored["c2-b"].versions == {"0000000001500-cccc": {"sub/w.bin", CHECKPOINT_MANIFEST}}
    assert stored["c1-a"].newest_whole() == "0000000001000-aaaa"
    assert to_restore(stored, recorded={"c3-c"}) == {"c1-a": "0000000001000-aaaa", "c2-b": "0000000001500-cccc"}
    assert to_prune(stored, recorded={"c3-c", "c9-z"}) == ["c3-c"]  # recorded: final, its checkpoint goes


def test_versions_sort_by_upload_time_and_the_manifest_lists_the_files():
    versions = [new_version(1_700_000_000.0 + step) for step in (0.0, 0.5, 9.0, 100.0)]
    assert versions == sorted(versions) and len(set(versions)) == 4
    assert new_version(1.0) != new_version(1.0)  # two pods in the same millisecond
    assert json.loads(manifest("c1", {"state.npz": (42, 7)})) == {"trial": "c1", "files": {"state.npz": 42}}


def test_a_stored_version_replaces_a_local_folder_only_when_uploaded_after_its_newest_file():
    millisecond = 1_000_000
    local = {"state.npz": (10, 5_000 * millisecond), "extra.bin": (3, 6_000 * millisecond)}
    assert stored_after("0000000006001-aaaa", local)  # uploaded after a job elsewhere trained it further
    assert not stored_after("0000000006000-aaaa", local)  # the local one is as new: kept
    assert not stored_after("0000000004000-aaaa", local)
    assert stored_after("0000000000001-aaaa", {})  # an empty folder holds nothing to keep
    assert not stored_after("not-a-time", local)  # another shape: taken for older
