"""The Slurm backend's files on the shared file system (hpscan.backends.slurm.spool) and the job side's channel
(hpscan.job.slurm): what a restarted operator reads back, and what a pulling worker's bridge sees."""

from __future__ import annotations

import os

from hpscan.api.trials import append_lines
from hpscan.backends.slurm import spool
from hpscan.job.slurm import INBOX_DIR, open_channel


def test_submitted_jobs_are_read_back_in_order_and_a_torn_last_line_is_skipped(tmp_path):
    spool.record_submitted(tmp_path, spool.Submitted(11, 0, 1))
    spool.record_submitted(tmp_path, spool.Submitted(14, 0, 2))
    with (tmp_path / "jobs.jsonl").open("a") as handle:
        handle.write('{"job": 15, "mov')  # an operator that died while writing
    assert spool.submitted(tmp_path) == [spool.Submitted(11, 0, 1), spool.Submitted(14, 0, 2)]
    assert spool.submitted(tmp_path / "none") == []


def test_what_a_job_left_exit_code_cancel_marker_and_last_words(tmp_path):
    assert spool.exit_code(tmp_path, 7) is None
    (tmp_path / "exit-7").write_text("3\n")
    assert spool.exit_code(tmp_path, 7) == 3
    assert not spool.was_cancelled(tmp_path, 7)
    spool.mark_cancelled(tmp_path, 7)
    assert spool.was_cancelled(tmp_path, 7)
    (tmp_path / "stderr-7.txt").write_text("Traceback ...\nRuntimeError: no GPU visible\n\n")
    assert spool.last_words(tmp_path, 7) == "RuntimeError: no GPU visible"


def test_new_folders_below_the_spool_get_its_owner_when_made_as_root(tmp_path):
    root = tmp_path / "spool"
    root.mkdir()
    if os.geteuid() == 0:
        os.chown(root, 4242, 4343)
    spool.make_folder(root / "physics" / "scan-u" / "shard-000" / "inbox", root)
    made = root / "physics" / "scan-u" / "shard-000" / "inbox"
    assert made.is_dir()
    owner = (root.stat().st_uid, root.stat().st_gid)
    for path in (made, made.parent, root / "physics"):
        assert (path.stat().st_uid, path.stat().st_gid) == owner


def test_the_channel_reads_the_inbox_the_operator_writes_and_publishes_nothing_itself(tmp_path):
    shard_file = tmp_path / "shard-000.json"
    shard_file.write_text("{}")
    channel = open_channel(shard_file)
    assert channel.inbox() == ([], [])
    append_lines(tmp_path / INBOX_DIR / "trials.jsonl", [{"trial": {"id": "a"}}, {"end": True}])
    append_lines(tmp_path / INBOX_DIR / "stop.jsonl", [{"id": "a"}])
    assert channel.inbox() == ([{"trial": {"id": "a"}}, {"end": True}], [{"id": "a"}])
    assert channel.inbox()[0] == [{"trial": {"id": "a"}}, {"end": True}]  # every line each time, as the bridge expects
    assert channel.recorded() == []  # results.jsonl of earlier attempts is in the folder already
