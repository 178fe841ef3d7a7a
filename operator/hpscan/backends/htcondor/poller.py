"""The shared poller: one batched query per connection (a schedd as one identity) for every tracked scan, output
retrieval for completed spooled jobs, and the record pages of running jobs that chirped since the last read.
``poll``, ``fetch_records`` and the pull channel read what the last cycle saw."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any

from hpscan.api.contract import ResultRecord
from hpscan.api.sites import Site
from hpscan.backends.base import ScanTable
from hpscan.backends.htcondor.ads import attr, job_id, records_chirped_by, spooled_output_repair
from hpscan.backends.htcondor.credentials import Connection
from hpscan.backends.htcondor.schedd import (
    COMPLETED,
    IDLE,
    PROBE_ATTR,
    PROJECTION,
    RUNNING,
    SITE_ATTR,
    SUSPENDED,
    TRANSFERRING_OUTPUT,
    UID_ATTR,
    ScheddLike,
    ScheddView,
    condor_of,
    uid_constraint,
)
from hpscan.backends.htcondor.schedds import Schedds
from hpscan.backends.htcondor.state import ScanState
from hpscan.errors import HPScanError
from hpscan.job.chirp import DONE_ATTR, RECORD_PAGES_ATTR, classad_string, record_page_attr


class Poller:
    """What the last cycle saw on each connection's schedd (a ScheddView), refreshed when older than
    ``max_age_seconds`` or when a scan it did not ask about is read."""

    def __init__(
        self, schedds: Schedds, scans: ScanTable[ScanState], clock: Callable[[], float], max_age_seconds: float
    ) -> None:
        self.schedds = schedds
        self.scans = scans
        self.clock = clock
        self.max_age_seconds = max_age_seconds
        self.views: dict[Connection, ScheddView] = {}
        self.refreshed_at: float | None = None
        self._covered: set[Any] = set()  # uids the last cycle asked about

    def watch(self, state: ScanState) -> None:
        """Query the scan's connections from the next cycle on."""
        for site in state.sites.values():
            self.views.setdefault(self.schedds.connection(state.scan, site), ScheddView(condor_of(site)))

    def expire(self) -> None:
        """The next read asks the schedds again (after a submit or removal, so it sees what changed)."""
        self.refreshed_at = None

    def retain(self, in_use: Collection[Connection]) -> None:
        self.views = {c: view for c, view in self.views.items() if c in in_use}

    def view(self, state: ScanState, site: Site) -> ScheddView:
        return self.views[self.schedds.connection(state.scan, site)]

    def refresh(self) -> None:
        """One cycle for every tracked scan. Never raises: a schedd that does not answer keeps its last view and an
        error."""
        by_connection: dict[Connection, set[str]] = {}
        for state in self.scans:
            for site in state.sites.values():
                by_connection.setdefault(self.schedds.connection(state.scan, site), set()).add(state.uid)
        for key, uids in by_connection.items():
            view = self.views[key]
            try:
                schedd = self.schedds.handle(key, view.site)
                with self.schedds.calling(key, view.site, "polling"):
                    view.ads = list(schedd.query(uid_constraint(uids), PROJECTION))
            except HPScanError as error:
                view.error = str(error)
                self.schedds.drop(key)  # located again next cycle: the schedd may have moved or restarted
                continue
            view.error = None
            view.answered = True
            if view.site.remote:
                self._retrieve(schedd, key, view)
        self._covered = self.scans.keys()
        self.refreshed_at = self.clock()

    def _retrieve(self, schedd: ScheddLike, connection: Connection, view: ScheddView) -> None:
        ended = [
            ad for ad in view.ads if int(attr(ad, "JobStatus", IDLE)) == COMPLETED and job_id(ad) not in view.retrieved
        ]
        if not ended:
            return
        done = [job_id(ad) for ad in ended]
        doing = f"retrieving the output of {len(done)} job(s)"
        try:  # tried again next cycle, on the same handle
            with self.schedds.calling(connection, view.site, doing, keep_handle=True):
                for ad in ended:
                    if (files := spooled_output_repair(ad)) is not None:
                        schedd.edit(job_id(ad), "SpooledOutputFiles", classad_string(files))
                schedd.retrieve(done)
        except HPScanError as error:
            view.error = str(error)
            return
        view.retrieved.update(done)

    def ensure_fresh(self, state: ScanState) -> None:
        stale = self.refreshed_at is None or self.clock() - self.refreshed_at > self.max_age_seconds
        if stale or state.uid not in self._covered:
            self.refresh()

    def jobs(self, state: ScanState) -> Iterator[tuple[Site, ScheddView, Any]]:
        """The scan's job ads from the last cycle, each with the site it was submitted for."""
        for key, first in self.schedds.distinct(state):
            view = self.views[key]
            for ad in view.ads:
                if attr(ad, UID_ATTR) == state.uid and attr(ad, PROBE_ATTR) is None:  # probe jobs are no shard's
                    yield state.sites.get(str(attr(ad, SITE_ATTR, "")), first), view, ad

    def read_pages(
        self, connection: Connection, site: Site, pages: Mapping[str, range]
    ) -> dict[str, list[ResultRecord]]:
        """The records on these record pages of these jobs (by job id), read in one query."""
        if not pages:
            return {}
        condor = condor_of(site)
        schedd = self.schedds.handle(connection, condor, site.name)
        jobs = " || ".join(f"(ClusterId == {c} && ProcId == {p})" for c, p in (job.split(".") for job in pages))
        names = [record_page_attr(page) for page in sorted({page for wanted in pages.values() for page in wanted})]
        with self.schedds.calling(connection, condor, "reading the records running jobs chirped"):
            ads = schedd.query(jobs, ["ClusterId", "ProcId", *names])
        return {job_id(ad): records_chirped_by(ad, pages[job_id(ad)]) for ad in ads if job_id(ad) in pages}

    def chirped_since(self, state: ScanState) -> dict[tuple[Connection, str], list[ResultRecord]]:
        """The records on the pages of running jobs whose HPScanDone changed since their last read, by (schedd,
        job): from the newest page read before on (all of them the first time, e.g. after a restart), one query
        per schedd. The job sets HPScanDone after its pages, so the pages hold every record it counts."""
        wanted: dict[Connection, tuple[Site, dict[str, range]]] = {}
        read: dict[tuple[Connection, str], tuple[int, int]] = {}
        for site, _, ad in self.jobs(state):
            if int(attr(ad, "JobStatus", IDLE)) not in (RUNNING, TRANSFERRING_OUTPUT, SUSPENDED):
                continue
            connection, job = self.schedds.connection(state.scan, site), job_id(ad)
            pages, done = int(attr(ad, RECORD_PAGES_ATTR, 0)), int(attr(ad, DONE_ATTR, 0))
            first, done_then = state.pages_read.get((connection, job), (0, -1))
            if pages and done != done_then:
                wanted.setdefault(connection, (site, {}))[1][job] = range(min(first, pages - 1), pages)
                read[connection, job] = (pages - 1, done)
        out = {}
        for connection, (site, jobs) in wanted.items():
            for job, records in self.read_pages(connection, site, jobs).items():
                out[connection, job] = records
        state.pages_read.update(read)  # only once every schedd answered: else all is read again next time
        return out
