"""Taking a scan's jobs away (suspend, delete, a moved shard): hpscan marks and removes the unfinished ones, keeps
what they chirped, and lets a deleted scan's completed jobs leave the queue."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

from hpscan.api.contract import RESULTS_FILE, ResultRecord, parse_records, shard_name
from hpscan.backends.htcondor.ads import attr, job_id
from hpscan.backends.htcondor.poller import Poller
from hpscan.backends.htcondor.schedd import (
    CANCELLED_ATTR,
    COMPLETED,
    IDLE,
    RELEASED_ATTR,
    REMOVED,
    SHARD_ATTR,
    TIMED_OUT_REMOVED,
    UID_ATTR,
    condor_of,
)
from hpscan.backends.htcondor.schedds import Schedds
from hpscan.backends.htcondor.state import ScanState
from hpscan.backends.htcondor.submit import scan_dir
from hpscan.job.chirp import RECORD_PAGES_ATTR, classad_string


def keep_chirped(state: ScanState, records: Sequence[ResultRecord]) -> None:
    """Keep the records a running job chirped, for when its job is removed before its results come back."""
    for record in records:
        state.chirped.setdefault(record.shard, {})[record.id] = record


class Removal:
    """Removes the jobs of the scans in the poller's table, one constraint per schedd; sandboxes under
    ``work_dir``."""

    def __init__(self, schedds: Schedds, poller: Poller, work_dir: Path) -> None:
        self.schedds = schedds
        self.poller = poller
        self.work_dir = work_dir

    def cancel(self, state: ScanState, shards: Collection[int] | None) -> None:
        """Remove the unfinished jobs of these shards (all when None), reading every record they chirped first;
        the shards read as Suspended until submitted again."""
        # Completed jobs are left alone: their state and output are what the scan keeps; removed ones are on their
        # way out of the queue (editing one that left between the query and the edit fails).
        constraint = f"{UID_ATTR} == {classad_string(state.uid)} && JobStatus != {COMPLETED} && JobStatus != {REMOVED}"
        if shards is not None:
            constraint += f" && member({SHARD_ATTR}, {{{', '.join(str(s) for s in sorted(shards))}}})"
        for connection, site in self.schedds.distinct(state):
            condor = condor_of(site)
            schedd = self.schedds.handle(connection, condor)
            with self.schedds.calling(connection, condor, "marking jobs to remove"):
                # mark them ours first (edit refuses a constraint that matches no job: ask first)
                if unfinished := schedd.query(constraint, ["ClusterId", "ProcId", SHARD_ATTR, RECORD_PAGES_ATTR]):
                    schedd.edit(constraint, CANCELLED_ATTR, "true")
            # Every record they chirped, read before they go (a removed job's ad and scratch folder are gone).
            pages = {job_id(ad): range(int(attr(ad, RECORD_PAGES_ATTR, 0))) for ad in unfinished}
            chirped = self.poller.read_pages(connection, site, {job: wanted for job, wanted in pages.items() if wanted})
            if unfinished:  # nothing to remove asks nothing (a refused credential could not even remove nothing)
                self.schedds.remove(connection, condor, constraint, "scan suspended or deleted")
            for records in chirped.values():
                keep_chirped(state, records)
        self._append_chirped(state)
        active = {
            int(attr(ad, SHARD_ATTR, 0))
            for _, _, ad in self.poller.jobs(state)
            if int(attr(ad, "JobStatus", IDLE)) not in (COMPLETED, REMOVED)
        }
        state.cancelled.update(active if shards is None else shards)
        self.poller.expire()  # the next poll asks again

    def _append_chirped(self, state: ScanState) -> None:
        """A removed job's scratch results never come back: append what it chirped to its shard's results.jsonl,
        so the next attempt's input sandbox carries it and nothing recorded is trained again (the contract)."""
        chirped, state.chirped = state.chirped, {}
        for shard, records in chirped.items():
            path = scan_dir(self.work_dir, state.scan) / shard_name(shard) / RESULTS_FILE
            try:
                kept = {r.id for r in parse_records(path.read_bytes().splitlines())[0]}
            except FileNotFoundError:
                continue  # no sandbox here (a scan forgotten with its sandboxes)
            missing = [r for r in records.values() if r.id not in kept]
            if missing:
                with path.open("a") as results:
                    results.writelines(r.model_dump_json(by_alias=True, exclude_none=True) + "\n" for r in missing)

    def release_completed(self, state: ScanState) -> None:
        """Let a deleted scan's completed jobs leave the queue (they stay a while otherwise, for their output and
        final state)."""
        # what leave_in_queue keeps: completed jobs, and those removed after their last attempt timed out
        ended = f"JobStatus == {COMPLETED} || ({TIMED_OUT_REMOVED})"
        kept = f"{UID_ATTR} == {classad_string(state.uid)} && ({ended})"
        for connection, site in self.schedds.distinct(state):
            condor = condor_of(site)
            schedd = self.schedds.handle(connection, condor)
            with self.schedds.calling(connection, condor, "releasing completed jobs"):
                # edit() of a constraint that matches no job is an error on the schedd's side: ask first.
                if schedd.query(kept, ["ClusterId", "ProcId"]):
                    schedd.edit(kept, RELEASED_ATTR, "true")
