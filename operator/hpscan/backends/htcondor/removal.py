"""Taking a scan's jobs away (suspend, delete, a moved shard): hpscan marks and removes the unfinished ones, keeps
what they chirped, and lets a deleted scan's completed jobs leave the queue."""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from hpscan.api.contract import RESULTS_FILE, ResultRecord, parse_records, shard_name
from hpscan.api.sites import HTCondorSite, Site
from hpscan.backends.htcondor.ads import attr, job_id, spooled_output_repair
from hpscan.backends.htcondor.credentials import Connection
from hpscan.backends.htcondor.poller import Poller
from hpscan.backends.htcondor.schedd import (
    CANCELLED_ATTR,
    CANCELLED_REMOVED,
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
from hpscan.errors import HPScanError
from hpscan.job.chirp import RECORD_PAGES_ATTR, classad_string

SPOOL_ATTRS = ["TransferCheckpoint", "SpooledOutputFiles", "TransferOutput"]
"""What spooled_output_repair reads of a job's ad."""
log = logging.getLogger(__name__)
STOP_GRACE_SECONDS = 40.0
"""How long cancel waits for removed jobs to stop: the starter's soft kill (SIGTERM) gives a job KILLING_TIMEOUT
(30 s by default) before it kills it hard; the shard runner needs a second or two to chirp its last records."""
STOP_POLL_SECONDS = 0.5


def left_by_us(ad: Any) -> bool:
    """A job hpscan removed that stopped but was never released: its chirped records are still to be read."""
    return (
        int(attr(ad, "JobStatus", IDLE)) == REMOVED
        and attr(ad, CANCELLED_ATTR) is True
        and attr(ad, RELEASED_ATTR) is not True
        and attr(ad, "RemoteHost") is None
    )


def _any_of(jobs: Sequence[str]) -> str:
    """A constraint that matches these job ids."""
    return " || ".join(f"(ClusterId == {c} && ProcId == {p})" for c, p in (job.split(".") for job in jobs))


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
        """Remove the unfinished jobs of these shards (all when None) and keep every record they chirped; the
        shards read as Suspended until submitted again.

        The order is what keeps "nothing trained twice": mark the jobs ours, remove them, wait for their shadows to
        end (a removed job gets SIGTERM and its shard runner chirps the records its payload wrote before exiting;
        leave_in_queue keeps our removed jobs' ads, chirped pages included, until we release them), then read
        every page and release the jobs. Reading before removing lost what a job chirped in between."""
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
                if unfinished := schedd.query(constraint, ["ClusterId", "ProcId"]):
                    schedd.edit(constraint, CANCELLED_ATTR, "true")
            if not unfinished:  # nothing to remove asks nothing (a refused credential could not even remove nothing)
                continue
            jobs = [job_id(ad) for ad in unfinished]
            self.schedds.remove(connection, condor, constraint, "scan suspended or deleted")
            self._collect(state, connection, site, jobs, wait=True)
        self._append_chirped(state)
        active = {
            int(attr(ad, SHARD_ATTR, 0))
            for _, _, ad in self.poller.jobs(state)
            if int(attr(ad, "JobStatus", IDLE)) not in (COMPLETED, REMOVED)
        }
        state.cancelled.update(active if shards is None else shards)
        self.poller.expire()  # the next poll asks again

    def settle(self, state: ScanState, left: Mapping[tuple[Connection, str], list[str]]) -> list[ResultRecord]:
        """The records of jobs we removed but never released (the operator stopped between the removal and the
        release, or a job outlived STOP_GRACE_SECONDS), by (connection, site name): read, kept in their shards'
        sandboxes, returned, and the jobs released."""
        before = {shard: dict(records) for shard, records in state.chirped.items()}
        for (connection, name), jobs in left.items():
            self._collect(state, connection, state.sites[name], jobs, wait=False)
        found = [
            r for shard, records in state.chirped.items() for i, r in records.items() if i not in before.get(shard, {})
        ]
        self._append_chirped(state)
        return found

    def _collect(self, state: ScanState, connection: Connection, site: Site, jobs: list[str], wait: bool) -> None:
        """Keep every record these removed jobs chirped, read once their shadows ended (RemoteHost gone; after
        STOP_GRACE_SECONDS, what they chirped by then), and release them (leave_in_queue lets them go)."""
        condor = condor_of(site)
        schedd = self.schedds.handle(connection, condor)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while True:
            with self.schedds.calling(connection, condor, "waiting for removed jobs to stop"):
                ads = schedd.query(
                    _any_of(jobs), ["ClusterId", "ProcId", "RemoteHost", RECORD_PAGES_ATTR, *SPOOL_ATTRS]
                )
            if not wait or all(attr(ad, "RemoteHost") is None for ad in ads) or time.monotonic() > deadline:
                break
            time.sleep(STOP_POLL_SECONDS)
        pages = {job_id(ad): range(int(attr(ad, RECORD_PAGES_ATTR, 0))) for ad in ads}
        chirped = self.poller.read_pages(connection, site, {job: wanted for job, wanted in pages.items() if wanted})
        for records in chirped.values():
            keep_chirped(state, records)
        if ads and condor.remote and wait:
            self._retrieve_spooled(connection, condor, ads)
        if ads:
            with self.schedds.calling(connection, condor, "releasing removed jobs"):
                schedd.edit(_any_of([job_id(ad) for ad in ads]), RELEASED_ATTR, "true")

    def _retrieve_spooled(self, connection: Connection, condor: HTCondorSite, ads: Sequence[Any]) -> None:
        """A removed job's output, spooled at the schedd when it stopped (a graceful removal transfers a running job's
        output as an eviction does: when_to_transfer_output ON_EXIT_OR_EVICT), into its sandbox here before the job
        is released and its spool goes: checkpoints/ above all, which the next site resumes from. Best effort: a
        failure is logged, and the trials start again from their last checkpoint that did come back."""
        schedd = self.schedds.handle(connection, condor)
        try:
            with self.schedds.calling(connection, condor, f"retrieving the output of {len(ads)} removed job(s)"):
                for ad in ads:
                    if (files := spooled_output_repair(ad)) is not None:
                        schedd.edit(job_id(ad), "SpooledOutputFiles", classad_string(files))
                schedd.retrieve(_any_of([job_id(ad) for ad in ads]))
        except HPScanError as error:
            log.warning("%s; their checkpoints stay behind", error)

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
        ended = f"JobStatus == {COMPLETED} || ({TIMED_OUT_REMOVED}) || ({CANCELLED_REMOVED})"
        kept = f"{UID_ATTR} == {classad_string(state.uid)} && ({ended})"
        for connection, site in self.schedds.distinct(state):
            condor = condor_of(site)
            schedd = self.schedds.handle(connection, condor)
            with self.schedds.calling(connection, condor, "releasing completed jobs"):
                # edit() of a constraint that matches no job is an error on the schedd's side: ask first.
                if schedd.query(kept, ["ClusterId", "ProcId"]):
                    schedd.edit(kept, RELEASED_ATTR, "true")
