"""The Slurm live channel, inside a batch job: the shard's folder on the centre's shared file system.

A Slurm job gets no inbound connection, and what a job's owner may update on its own job (``scontrol update
Comment=``) is a few hundred bytes, so the channel is the file system every centre shares between its login and
compute nodes (docs/slurm.md): the payload's --out folder is the shard's folder in the site's spool, where the
operator reads results.jsonl and progress.jsonl as they grow, and writes a pulling worker's trials and stops into
``inbox/`` (the bridge copies them into the payload's own trials.jsonl and stop.jsonl). Records therefore need no
publishing, and an earlier attempt's records are already in results.jsonl for the payload to resume from.
"""

from __future__ import annotations

from pathlib import Path

from hpscan.api.contract import ResultRecord
from hpscan.api.trials import STOP_FILE, TRIALS_FILE, JsonLines, Progress

INBOX_DIR = "inbox"
"""The folder of the shard's folder that the operator writes trials.jsonl and stop.jsonl to."""


class SpoolChannel:
    """The files of the shard's folder (the shard file's folder, also the payload's --out)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def recorded(self) -> list[ResultRecord]:
        return []  # results.jsonl of earlier attempts is in this folder already

    def publish(self, records: list[ResultRecord]) -> None:
        """Nothing to send: the operator reads results.jsonl in this folder."""

    def inbox(self) -> tuple[list[dict], list[dict]]:
        inbox = self.folder / INBOX_DIR
        return JsonLines(inbox / TRIALS_FILE).read_new(), JsonLines(inbox / STOP_FILE).read_new()

    def publish_progress(self, reports: list[Progress]) -> None:
        """Nothing to send: the operator reads progress.jsonl in this folder."""


def open_channel(shard_file: Path) -> SpoolChannel:
    """The channel of a shard file in its shard's folder (the job script runs the shard runner there)."""
    return SpoolChannel(shard_file.resolve().parent)
