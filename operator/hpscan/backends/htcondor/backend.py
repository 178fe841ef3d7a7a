"""HTCondorBackend: submit, the shared poller, cancel and forget (see the package docstring for the wiring).

One backend instance serves every scan: ``refresh()`` is the shared poller's cycle (one batched query per
schedd and identity), ``poll``/``fetch_records`` read what the last cycle saw. All calls block (the bindings are C);
the operator runs them in kopf's worker threads, serialised by one lock. Calls for a site with a ``tokenSecret`` go
through that credential's worker process (``credentials``, ``worker``); the others run in this process.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from functools import wraps
from pathlib import Path
from typing import Any, ClassVar

from hpscan.api.contract import (
    RESULTS_FILE,
    ResultRecord,
    ShardFile,
    parse_records,
    shard_name,
)
from hpscan.api.sites import HTCondorSite, Site
from hpscan.api.spec import HPScanSpec
from hpscan.api.status import FINAL_EXITS, Reason, ShardPhase, ShardStatus
from hpscan.api.trials import Assignment, Progress
from hpscan.backends.base import Backend, ScanRef, ShardLaunch, last_line
from hpscan.backends.htcondor.ads import attr, job_id, records_chirped_by, shard_status
from hpscan.backends.htcondor.credentials import Connection, connection_for
from hpscan.backends.htcondor.schedd import (
    CANCELLED_ATTR,
    COMPLETED,
    HELD,
    HOLD_SPOOLING_INPUT,
    IDLE,
    MOVES_ATTR,
    PROBE_ATTR,
    PROJECTION,
    RELEASED_ATTR,
    REMOVE_REASON_PREFIX,
    REMOVED,
    RUNNING,
    SHARD_ATTR,
    SITE_ATTR,
    SPOOL_GRACE_SECONDS,
    SUSPENDED,
    TIMED_OUT_REMOVED,
    TRANSFERRING_OUTPUT,
    UID_ATTR,
    ScheddFactory,
    ScheddLike,
    ScheddView,
    Tracked,
    call_failed,
    condor_of,
    locate_schedd,
    uid_constraint,
)
from hpscan.backends.htcondor.submit import (
    PROBE_DIR,
    SubmitPlan,
    probe_description,
    scan_dir,
    submit_description,
    write_sandboxes,
)
from hpscan.backends.htcondor.worker import CredentialWorkers
from hpscan.backends.sandbox_models import SandboxModels
from hpscan.core.brokering import ProbeOutcome
from hpscan.errors import BackendError, HPScanError, SchedulerUnavailable
from hpscan.job.chirp import (
    DONE_ATTR,
    PROGRESS_ATTR,
    RECORD_PAGES_ATTR,
    STOPS_ATTR,
    TRIALS_ATTR,
    chirped_progress,
    classad_string,
    json_object_lines,
    lines_value,
    record_page_attr,
    value_lines,
)

# --- the backend -----------------------------------------------------------------------------------------------


def _default_site() -> Site:
    """The site of a launch or probe that names none: the local schedd, with the block's defaults."""
    return Site.model_validate({"name": "htcondor", "htcondor": {}})


def _locked(method: Callable[..., Any]) -> Callable[..., Any]:
    """Serialise a backend method: kopf runs sync handlers on several threads, and one poll cycle must serve
    them all (the bindings are not meant for concurrent use either)."""

    @wraps(method)
    def guarded(self: HTCondorBackend, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return guarded


class HTCondorBackend(Backend):
    """Shards as HTCondor jobs. One instance serves every scan; see the module docstring for the wiring."""

    name: ClassVar[str] = "htcondor"
    pulls: ClassVar[bool] = True  # trials and stops: attributes edited on the job's ad, read back with chirp

    def __init__(
        self,
        work_dir: Path,
        schedd_factory: ScheddFactory = locate_schedd,
        max_age_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        read_secret: Callable[[str, str, str], str] | None = None,
        spool_grace_seconds: float = SPOOL_GRACE_SECONDS,
    ) -> None:
        self.work_dir = work_dir.absolute()
        self.spool_grace_seconds = spool_grace_seconds
        self.read_secret = read_secret  # (namespace, name, key) -> value: IDTOKENs from Kubernetes Secrets
        self.schedd_factory = schedd_factory
        self.max_age_seconds = max_age_seconds
        self.clock = clock
        self._lock = threading.RLock()
        self._scans: dict[str, Tracked] = {}
        self._views: dict[Connection, ScheddView] = {}
        self._schedds: dict[Connection, ScheddLike] = {}
        self._workers = CredentialWorkers(self.work_dir / "tokens")  # one process per credential (credentials.py)
        self._refreshed_at: float | None = None
        self._covered: set[str] = set()  # uids the last cycle asked about
        self._cancelled: dict[str, set[int]] = {}
        self._read_jobs: dict[str, set[str]] = {}
        self._live_seen: dict[str, set[str]] = {}
        self._chirped: dict[str, dict[int, dict[str, ResultRecord]]] = {}  # by uid and shard: live records seen
        # By uid and (schedd, job): the newest record page read and the job's HPScanDone then (it reads again when
        # that changes; the pages before the newest never change).
        self._pages_read: dict[str, dict[tuple[Connection, str], tuple[int, int]]] = {}
        self._unreadable: dict[str, int] = {}  # by uid: lines of returned results.jsonl files that were not records
        # Workers that pull: by uid, each worker's whole text per attribute (its trials.jsonl / stop.jsonl so far),
        # what was last written on each job, and the per-epoch reports already handed over.
        self._channel: dict[str, dict[tuple[int, str], list[str]]] = {}
        self._written: dict[str, dict[tuple[Connection, str, str], list[str]]] = {}  # by (schedd, job, attr)
        self._reported: dict[str, set[tuple[str, int]]] = {}
        self.models = SandboxModels(read_secret, clock)  # returned models/ folders -> spec.artifacts.store

    # scans --------------------------------------------------------------------------------------------------

    @_locked
    def track(self, scan: ScanRef, spec: HPScanSpec) -> None:
        """Watch a scan's htcondor sites from the next poll cycle on (the operator calls this for every scan it
        sees, e.g. from an index, so a restarted operator polls what it submitted before)."""
        uid = self._uid(scan)
        tracked = self._scans.setdefault(uid, Tracked(scan))
        self.models.watch(scan, spec)
        for site in spec.sites:
            if site.backend == "htcondor":
                tracked.sites[site.name] = site
                self._views.setdefault(self._connection(scan, site), ScheddView(condor_of(site)))

    @_locked
    def prepare(self, scan: ScanRef, spec: HPScanSpec, shard_count: int) -> None:
        """Read the IDTOKEN of every site that names a ``tokenSecret`` (when the operator can read Secrets) and hand it
        to its connection's worker process; a token that changed in the Secret restarts that worker."""
        for site in spec.sites:
            if site.backend != "htcondor":
                continue
            connection = self._connection(scan, site)
            if connection.credential is not None:
                self._schedds[connection] = self._proxy(connection, site.name)

    @_locked
    def forget(self, scan: ScanRef, delete_sandboxes: bool = False) -> None:
        """A deleted scan: remove its jobs, let its completed jobs leave the queue (they stay a while otherwise, for
        their output and final state), stop watching it and, if asked, delete its sandboxes on this side.
        Raises SchedulerUnavailable when a schedd does not answer; call again (e.g. from a retried finalizer)."""
        uid = self._uid(scan)
        tracked = self._scans.get(uid)
        if tracked is not None:
            self._cancel(uid, tracked, None)
            for connection, site in self._distinct_connections(tracked):
                condor = condor_of(site)
                # what leave_in_queue keeps: completed jobs, and those removed after their last attempt timed out
                ended = f"JobStatus == {COMPLETED} || ({TIMED_OUT_REMOVED})"
                kept = f"{UID_ATTR} == {classad_string(uid)} && ({ended})"
                schedd = self._schedd(connection, condor)
                try:
                    # edit() of a constraint that matches no job is an error on the schedd's side: ask first.
                    if schedd.query(kept, ["ClusterId", "ProcId"]):
                        schedd.edit(kept, RELEASED_ATTR, "true")
                except Exception as error:
                    self._schedds.pop(connection, None)
                    raise self._failed(connection, condor, "releasing completed jobs", error) from None
        tables = (self._scans, self._cancelled, self._read_jobs, self._live_seen, self._chirped, self._unreadable)
        for table in (*tables, self._pages_read, self._channel, self._written, self._reported):
            table.pop(uid, None)
        self._drop_unused()
        if delete_sandboxes:
            shutil.rmtree(self.scan_dir(scan), ignore_errors=True)

    def scan_dir(self, scan: ScanRef) -> Path:
        return scan_dir(self.work_dir, scan)

    @staticmethod
    def _uid(scan: ScanRef) -> str:
        if not scan.uid:
            raise BackendError(f"scan {scan.name!r} has no uid; HTCondor jobs are found again by it")
        return scan.uid

    # connections: which schedd, as whom -------------------------------------------------------------------

    def _connection(self, scan: ScanRef, site: Site) -> Connection:
        """The connection a call for this scan's site goes through (credentials.connection_for)."""
        return connection_for(condor_of(site), scan.namespace, reads_secrets=self.read_secret is not None)

    def _schedd(self, connection: Connection, site: HTCondorSite, name: str | None = None) -> ScheddLike:
        """The schedd handle of a connection: the operator's own (schedd_factory) without a credential, else the
        proxy of the credential's worker process, with the token read from its Secret again whenever the handle is
        made anew (after any failed call), so a rotated token is used from then on. ``name``: the site's, for
        messages."""
        if connection not in self._schedds:
            if connection.credential is None:
                try:
                    self._schedds[connection] = self.schedd_factory(site)
                except Exception as error:
                    raise call_failed(site, "locating it", error, name=name) from None
            else:
                self._schedds[connection] = self._proxy(connection, name)
        return self._schedds[connection]

    def _proxy(self, connection: Connection, name: str | None) -> ScheddLike:
        """The credential's worker proxy, with the token its Secret holds now."""
        credential = connection.credential
        assert credential is not None and self.read_secret is not None
        try:
            token = self.read_secret(credential.namespace, credential.secret, credential.key)
            return self._workers.proxy(connection, token)
        except Exception as error:
            where = f"site {name!r}: " if name else ""
            cause = error if isinstance(error, HPScanError) else f"cannot read {credential.describe()}: {error}"
            raise BackendError(f"{where}{cause}") from None

    @staticmethod
    def _failed(connection: Connection, site: HTCondorSite, doing: str, error: BaseException) -> BackendError:
        return call_failed(site, doing, error, connection.credential)

    def _in_use(self) -> set[Connection]:
        return {self._connection(t.scan, site) for t in self._scans.values() for site in t.sites.values()}

    def _drop_unused(self) -> None:
        """Forget the views and handles of connections no tracked scan uses, and stop their worker processes."""
        in_use = self._in_use()
        self._views = {c: view for c, view in self._views.items() if c in in_use}
        self._schedds = {c: schedd for c, schedd in self._schedds.items() if c in in_use}
        self._workers.retain(in_use)

    def close(self) -> None:
        """Stop every credential's worker process (they are daemons: they also end with the operator)."""
        with self._lock:
            self._workers.close()
            self._schedds.clear()

    # submit -------------------------------------------------------------------------------------------------

    def plans(self, scan: ScanRef, spec: HPScanSpec, launches: Sequence[ShardLaunch]) -> list[SubmitPlan]:
        """The submit descriptions for these launches, one per site (what ``submit`` sends when no job exists)."""
        by_site: dict[str, tuple[Site, list[ShardFile]]] = {}
        moves = {launch.shard_file.shard: launch.moves for launch in launches}
        for launch in launches:
            site = launch.site or _default_site()
            if site.backend != "htcondor":
                raise BackendError(f"site {site.name!r} is not an htcondor site")
            by_site.setdefault(site.name, (site, []))[1].append(launch.shard_file)
        folder = self.scan_dir(scan)
        return [submit_description(scan, spec, site, files, folder, moves) for site, files in by_site.values()]

    @_locked
    def submit(self, scan: ScanRef, spec: HPScanSpec, launches: Sequence[ShardLaunch]) -> None:
        """Submit the shards that have no job yet, one cluster per site. Jobs found with the scan's uid are left
        alone, so a crash between submit and status update never submits twice; jobs still held for input
        that was never spooled (a crash between submit and spool) are removed and submitted again."""
        uid = self._uid(scan)
        self.track(scan, spec)
        for plan in self.plans(scan, spec, launches):
            condor = condor_of(plan.site)
            connection = self._connection(scan, plan.site)
            schedd = self._schedd(connection, condor, plan.site.name)
            try:
                existing = schedd.query(
                    f"{UID_ATTR} == {classad_string(uid)}",
                    [
                        "ClusterId",
                        "ProcId",
                        SHARD_ATTR,
                        MOVES_ATTR,
                        "JobStatus",
                        "HoldReasonCode",
                        "QDate",
                        "StageInFinish",
                    ],
                )
            except Exception as error:
                self._schedds.pop(connection, None)
                raise call_failed(
                    condor, "looking for the scan's jobs", error, connection.credential, plan.site.name
                ) from None
            present: set[tuple[int, int]] = set()  # (shard, moves): a moved shard's new job is not its old one
            orphans: list[str] = []
            for ad in existing:
                status = int(attr(ad, "JobStatus", IDLE))
                if status == REMOVED:
                    continue
                # Held for input that never came (a crash between submit and spool): submit again, once its input
                # had time to arrive. A spooled job stays held a moment after spool() returns: it is present.
                if status == HELD and int(attr(ad, "HoldReasonCode", 0)) == HOLD_SPOOLING_INPUT:
                    now = float(attr(ad, "ServerTime", time.time()))
                    waited = now - float(attr(ad, "QDate", now))
                    if attr(ad, "StageInFinish") is None and waited > self.spool_grace_seconds:
                        orphans.append(job_id(ad))
                        continue
                present.add((int(attr(ad, SHARD_ATTR, -1)), int(attr(ad, MOVES_ATTR, 0))))
            missing = [row for row in plan.itemdata if (int(row["Shard"]), int(row["Moves"])) not in present]
            if not missing:
                continue
            if orphans:
                self._act_remove(schedd, connection, condor, orphans, "input never spooled; submitting again")
            wanted = {int(row["Shard"]) for row in missing}
            files = [launch.shard_file for launch in launches if launch.shard_file.shard in wanted]
            write_sandboxes(self.scan_dir(scan), files)
            try:
                result = schedd.submit(plan.description, count=1, spool=plan.spool, itemdata=iter(missing))
                if plan.spool:
                    schedd.spool(result)
            except Exception as error:
                self._schedds.pop(connection, None)
                doing = f"submitting {len(missing)} shard job(s)"
                raise call_failed(condor, doing, error, connection.credential, plan.site.name) from None
            self._cancelled.get(uid, set()).difference_update(wanted)

    # the shared poller --------------------------------------------------------------------------------------

    @_locked
    def refresh(self) -> None:
        """One poll cycle for every tracked scan: one batched query per connection (a schedd as one identity: the
        operator's own, or a credential's through its worker), then output retrieval for completed spooled jobs.
        Never raises: a schedd that does not answer keeps its last view and an error."""
        by_connection: dict[Connection, set[str]] = {}
        for uid, tracked in self._scans.items():
            for site in tracked.sites.values():
                by_connection.setdefault(self._connection(tracked.scan, site), set()).add(uid)
        for key, uids in by_connection.items():
            view = self._views[key]
            try:
                schedd = self._schedd(key, view.site)
                view.ads = list(schedd.query(uid_constraint(uids), PROJECTION))
            except Exception as error:
                view.error = str(
                    error if isinstance(error, HPScanError) else self._failed(key, view.site, "polling", error)
                )
                self._schedds.pop(key, None)  # located again next cycle: the schedd may have moved or restarted
                continue
            view.error = None
            view.answered = True
            if view.site.remote:
                self._retrieve(schedd, key, view)
        self._covered = set(self._scans)
        self._refreshed_at = self.clock()

    def _retrieve(self, schedd: ScheddLike, connection: Connection, view: ScheddView) -> None:
        done = [
            job_id(ad)
            for ad in view.ads
            if int(attr(ad, "JobStatus", IDLE)) == COMPLETED and job_id(ad) not in view.retrieved
        ]
        if not done:
            return
        try:
            schedd.retrieve(done)
        except Exception as error:  # tried again next cycle
            view.error = str(self._failed(connection, view.site, f"retrieving the output of {len(done)} job(s)", error))
            return
        view.retrieved.update(done)

    def _ensure_fresh(self, uid: str) -> None:
        stale = self._refreshed_at is None or self.clock() - self._refreshed_at > self.max_age_seconds
        if stale or uid not in self._covered:
            self.refresh()

    def _jobs(self, uid: str) -> Iterator[tuple[Site, ScheddView, Any]]:
        """The scan's job ads from the last cycle, each with the site it was submitted for."""
        tracked = self._scans[uid]
        sites = tracked.sites
        for key, first in self._distinct_connections(tracked):
            view = self._views[key]
            for ad in view.ads:
                if attr(ad, UID_ATTR) == uid and attr(ad, PROBE_ATTR) is None:  # probe jobs are no shard's
                    yield sites.get(str(attr(ad, SITE_ATTR, "")), first), view, ad

    @_locked
    def poll(self, scan: ScanRef) -> dict[int, ShardStatus]:
        """Shard states from the last cycle (refreshing when it is older than max_age_seconds). A schedd that
        stopped answering marks its unfinished shards SchedulerUnavailable; see outages() for one that never did."""
        uid = self._uid(scan)
        if uid not in self._scans:
            return {}
        self._ensure_fresh(uid)
        # A schedd that never answered knows shards we cannot see: outages() names its sites, and the engine keeps
        # their shards where the last status put them instead of placing them again.
        states: dict[int, ShardStatus] = {}
        rank: dict[int, tuple[int, int, int]] = {}
        for site, view, ad in self._jobs(uid):
            state = shard_status(ad, site.name)
            live = int(attr(ad, "JobStatus", IDLE)) != REMOVED
            # A moved shard's newest generation speaks for it; then a live job beats a removed one, newer beats older.
            order = (state.moves, int(live), int(attr(ad, "ClusterId", 0)))
            if state.index in rank and rank[state.index] >= order:
                continue
            rank[state.index] = order
            if state.reason in {*FINAL_EXITS.values(), Reason.PAYLOAD_FAILED}:  # its own words, from the stderr back
                stderr = self.scan_dir(scan) / shard_name(state.index) / "stderr.txt"
                if words := last_line(stderr, 200):
                    state = state.model_copy(update={"message": f"{words} ({state.message})"[:300]})
            if view.error and state.phase in {ShardPhase.PENDING, ShardPhase.RUNNING}:
                state = state.model_copy(update={"reason": Reason.SCHEDULER_UNAVAILABLE, "message": view.error})
            remote = condor_of(site).remote
            if remote and state.phase == ShardPhase.SUCCEEDED and job_id(ad) not in view.retrieved:
                # Succeeded only once its results are here, so the last records are never missed.
                state = state.model_copy(update={"phase": ShardPhase.RUNNING, "reason": Reason.RETRIEVING_OUTPUT})
            states[state.index] = state
        for shard in self._cancelled.get(uid, set()) - set(states):
            states[shard] = ShardStatus(index=shard, phase=ShardPhase.SUSPENDED, reason=Reason.SUSPENDED)
        return states

    def _read_pages(
        self, connection: Connection, site: Site, pages: Mapping[str, range]
    ) -> dict[str, list[ResultRecord]]:
        """The records on these record pages of these jobs (by job id), read in one query."""
        if not pages:
            return {}
        condor = condor_of(site)
        schedd = self._schedd(connection, condor, site.name)
        jobs = " || ".join(f"(ClusterId == {c} && ProcId == {p})" for c, p in (job.split(".") for job in pages))
        names = [record_page_attr(page) for page in sorted({page for wanted in pages.values() for page in wanted})]
        try:
            ads = schedd.query(jobs, ["ClusterId", "ProcId", *names])
        except Exception as error:
            self._schedds.pop(connection, None)
            raise self._failed(connection, condor, "reading the records running jobs chirped", error) from None
        return {job_id(ad): records_chirped_by(ad, pages[job_id(ad)]) for ad in ads if job_id(ad) in pages}

    def _chirped_since(self, uid: str) -> dict[tuple[Connection, str], list[ResultRecord]]:
        """The records on the pages of running jobs whose HPScanDone changed since their last read, by (schedd,
        job): from the newest page read before on (all of them the first time, e.g. after a restart), one query
        per schedd. The job sets HPScanDone after its pages, so the pages hold every record it counts."""
        scan = self._scans[uid].scan
        marks = self._pages_read.setdefault(uid, {})
        wanted: dict[Connection, tuple[Site, dict[str, range]]] = {}
        read: dict[tuple[Connection, str], tuple[int, int]] = {}
        for site, _, ad in self._jobs(uid):
            if int(attr(ad, "JobStatus", IDLE)) not in (RUNNING, TRANSFERRING_OUTPUT, SUSPENDED):
                continue
            connection, job = self._connection(scan, site), job_id(ad)
            pages, done = int(attr(ad, RECORD_PAGES_ATTR, 0)), int(attr(ad, DONE_ATTR, 0))
            first, done_then = marks.get((connection, job), (0, -1))
            if pages and done != done_then:
                wanted.setdefault(connection, (site, {}))[1][job] = range(min(first, pages - 1), pages)
                read[connection, job] = (pages - 1, done)
        out = {}
        for connection, (site, jobs) in wanted.items():
            for job, records in self._read_pages(connection, site, jobs).items():
                out[connection, job] = records
        marks.update(read)  # only once every schedd answered: else all is read again next time
        return out

    @_locked
    def fetch_records(self, scan: ScanRef) -> list[ResultRecord]:
        """Records of completed shards (their returned results.jsonl, read once per job) and the records running
        jobs chirped that were not handed over before (every one of them after a restart)."""
        uid = self._uid(scan)
        if uid not in self._scans:
            return []
        self._ensure_fresh(uid)
        chirped = self._chirped_since(uid)
        self.models.flush(scan)  # returned models whose upload failed before
        read = self._read_jobs.setdefault(uid, set())
        live = self._live_seen.setdefault(uid, set())
        records: list[ResultRecord] = []
        for site, view, ad in self._jobs(uid):
            status = int(attr(ad, "JobStatus", IDLE))
            job = f"{site.name}/{job_id(ad)}"
            if status == COMPLETED and job not in read:
                if condor_of(site).remote and job_id(ad) not in view.retrieved:
                    continue
                path = self.scan_dir(scan) / shard_name(int(attr(ad, SHARD_ATTR, 0))) / RESULTS_FILE
                try:
                    lines = path.read_bytes().splitlines()
                except FileNotFoundError:
                    continue  # not back yet: read it on a later cycle (a shard that ends without it shows RecordsMissing)
                found, problems = parse_records(lines)
                records.extend(found)
                self.models.returned(scan, path.parent, found)
                self._unreadable[uid] = self._unreadable.get(uid, 0) + len(problems)
                read.add(job)
            elif status in (RUNNING, TRANSFERRING_OUTPUT, SUSPENDED):
                for record in chirped.get((self._connection(scan, site), job_id(ad)), []):
                    self._chirped.setdefault(uid, {}).setdefault(record.shard, {})[record.id] = record
                    if record.id not in live:
                        live.add(record.id)
                        records.append(record)
        return records

    def unreadable(self, scan: ScanRef) -> int:
        return self._unreadable.get(scan.uid, 0)

    @_locked
    def outages(self, scan: ScanRef) -> dict[str, str]:
        """Sites whose schedd did not answer the last poll cycle (the others' shards go on)."""
        tracked = self._scans.get(scan.uid)
        if tracked is None:
            return {}
        out = {}
        for name, site in tracked.sites.items():
            view = self._views[self._connection(tracked.scan, site)]
            if view.error:
                out[name] = view.error
        return out

    # workers that pull ----------------------------------------------------------------------------------------
    #
    # A worker's channel is two attributes of its job ad, HPScanTrials and HPScanStops: each holds the worker's
    # whole trials.jsonl / stop.jsonl so far as one ClassAd string, set with the schedd's edit (flag SetDirty, so
    # the schedd tells the job's shadow, where chirp's get_job_attr reads). An attribute cannot be appended to:
    # every hand-out rewrites the whole text. A trial line is about 200 bytes (six parameters, percent-encoded by
    # chirp.lines_value), so a worker holding 100 trials carries 20 KB, written again with each hand-out (the
    # schedd's job log grows by that much per edit until it rotates) and fetched by every poll cycle (PROJECTION).
    # Sensible up to a few hundred trials per worker (tens of KB); a scan that hands one worker thousands wants
    # fewer, longer trials, more workers, or a channel that appends (a file the job fetches).

    @_locked
    def assign(self, scan: ScanRef, shard: int, lines: Sequence[dict]) -> None:
        self._append(scan, shard, TRIALS_ATTR, lines)

    @_locked
    def stop_trials(self, scan: ScanRef, shard: int, trial_ids: Sequence[str]) -> None:
        self._append(scan, shard, STOPS_ATTR, [{"id": i} for i in trial_ids])

    def _append(self, scan: ScanRef, shard: int, attribute: str, lines: Sequence[dict]) -> None:
        """Append lines to a worker's text and set it on the shard's unfinished jobs. The text is the operator's
        (seeded from the job ads after a restart); a job that has none yet, e.g. a moved shard's new one, gets the
        whole text, so what a worker was handed and had taken back is always on its newest job."""
        uid = self._uid(scan)
        tracked = self._scans.get(uid)
        if tracked is None:
            raise BackendError(f"scan {scan.name!r} is not tracked; call track() with its spec first")
        constraint = (
            f"{UID_ATTR} == {classad_string(uid)} && {SHARD_ATTR} == {int(shard)} && {PROBE_ATTR} =?= undefined"
        )
        found: list[tuple[ScheddLike, Connection, HTCondorSite, Any]] = []
        for connection, site in self._distinct_connections(tracked):
            condor = condor_of(site)
            schedd = self._schedd(connection, condor, site.name)
            try:
                ads = schedd.query(constraint, ["ClusterId", "ProcId", "JobStatus", attribute])
            except Exception as error:
                self._schedds.pop(connection, None)
                raise self._failed(connection, condor, f"looking for shard {shard}'s job", error) from None
            found += [(schedd, connection, condor, ad) for ad in ads]
        texts = self._channel.setdefault(uid, {})
        if (shard, attribute) not in texts:  # a restarted operator: the longest text on the shard's jobs
            held = (value_lines(attr(ad, attribute)) for *_, ad in found)
            texts[shard, attribute] = max(held, key=len, default=[])
        texts[shard, attribute] += [json.dumps(line, separators=(",", ":")) for line in lines]
        for schedd, connection, condor, ad in found:
            if int(attr(ad, "JobStatus", IDLE)) not in (COMPLETED, REMOVED):
                self._write(uid, schedd, connection, condor, job_id(ad), attribute, texts[shard, attribute])

    def _write(
        self,
        uid: str,
        schedd: ScheddLike,
        connection: Connection,
        site: HTCondorSite,
        job: str,
        attribute: str,
        text: list[str],
    ) -> None:
        import htcondor2

        try:  # SetDirty: the schedd tells a running job's shadow, whose copy of the ad chirp reads
            schedd.edit([job], attribute, lines_value(text), flags=htcondor2.TransactionFlag.SetDirty)
        except Exception as error:
            self._schedds.pop(connection, None)
            raise self._failed(connection, site, f"setting {attribute} of job {job}", error) from None
        self._written.setdefault(uid, {})[connection, job, attribute] = list(text)

    def _sync(self, uid: str) -> None:
        """Set the whole text on unfinished jobs that do not carry it yet (a job that appeared after the last
        hand-out to its shard, or an edit that failed)."""
        texts = self._channel.get(uid, {})
        written = self._written.setdefault(uid, {})
        scan = self._scans[uid].scan
        for site, _, ad in self._jobs(uid):
            if int(attr(ad, "JobStatus", IDLE)) in (COMPLETED, REMOVED):
                continue
            shard, job = int(attr(ad, SHARD_ATTR, -1)), job_id(ad)
            connection, condor = self._connection(scan, site), condor_of(site)
            for attribute in (TRIALS_ATTR, STOPS_ATTR):
                text = texts.get((shard, attribute))
                if (
                    text
                    and written.get((connection, job, attribute)) != text
                    and value_lines(attr(ad, attribute)) != text
                ):
                    with contextlib.suppress(HPScanError):  # e.g. the job just left the queue: the next cycle sees
                        schedd = self._schedd(connection, condor, site.name)
                        self._write(uid, schedd, connection, condor, job, attribute, text)

    @_locked
    def fetch_progress(self, scan: ScanRef) -> list[Progress]:
        """The per-epoch reports pulling workers chirped (HPScanProgress) that were not handed over before."""
        uid = self._uid(scan)
        if uid not in self._scans:
            return []
        self._ensure_fresh(uid)
        self._sync(uid)
        seen = self._reported.setdefault(uid, set())
        reports = []
        for _, _, ad in self._jobs(uid):
            for report in chirped_progress(attr(ad, PROGRESS_ATTR)):
                if (report.id, report.epoch) not in seen:
                    seen.add((report.id, report.epoch))
                    reports.append(report)
        return reports

    @_locked
    def assignments(self, scan: ScanRef) -> dict[int, Assignment]:
        """Each worker's Assignment, folded from HPScanTrials of its job (the newest generation's: it carries the
        whole text), so a restarted operator hands out nothing twice."""
        uid = self._uid(scan)
        if uid not in self._scans:
            return {}
        self._ensure_fresh(uid)
        texts: dict[int, list[str]] = {}
        for _, _, ad in self._jobs(uid):
            shard, text = int(attr(ad, SHARD_ATTR, -1)), value_lines(attr(ad, TRIALS_ATTR))
            if len(text) >= len(texts.get(shard, [])):
                texts[shard] = text
        for (shard, attribute), text in self._channel.get(uid, {}).items():
            if attribute == TRIALS_ATTR and len(text) > len(texts.get(shard, [])):
                texts[shard] = text
        out: dict[int, Assignment] = {}
        for shard, text in sorted(texts.items()):
            out[shard] = Assignment()
            out[shard].fold(json_object_lines(text))
        return out

    # site probes --------------------------------------------------------------------------------------------

    def _probe_ads(self, uid: str, site: Site) -> list[Any]:
        view = self._views[self._connection(self._scans[uid].scan, site)]
        mine = [
            ad
            for ad in view.ads
            if attr(ad, UID_ATTR) == uid
            and attr(ad, PROBE_ATTR) == site.name
            and int(attr(ad, "JobStatus", IDLE)) != REMOVED
        ]
        return sorted(mine, key=lambda ad: int(attr(ad, "ClusterId", 0)))

    @_locked
    def probe(self, scan: ScanRef, spec: HPScanSpec, site: Site | None) -> ProbeOutcome:
        """The site's probe job (submit.probe_description): sent once, read from the poll cycle's view."""
        uid = self._uid(scan)
        site = site or _default_site()
        self.track(scan, spec)
        self._ensure_fresh(uid)
        condor = condor_of(site)
        connection = self._connection(scan, site)
        view = self._views[connection]
        if view.error:
            raise SchedulerUnavailable(view.error)
        ads = self._probe_ads(uid, site)
        folder = self.scan_dir(scan) / f"{PROBE_DIR}{site.name}"
        if not ads:
            folder.mkdir(parents=True, exist_ok=True)
            schedd = self._schedd(connection, condor)
            try:
                result = schedd.submit(
                    probe_description(scan, spec, site, self.scan_dir(scan)), count=1, spool=condor.remote
                )
                if condor.remote:
                    schedd.spool(result)
            except Exception as error:
                self._schedds.pop(connection, None)
                raise call_failed(
                    condor, "submitting the site probe", error, connection.credential, site.name
                ) from None
            self._refreshed_at = None  # the next call sees it
            return ProbeOutcome(None, "probe sent")
        ad = ads[-1]
        status = int(attr(ad, "JobStatus", IDLE))
        if status == COMPLETED:
            if condor.remote and job_id(ad) not in view.retrieved:
                return ProbeOutcome(None, "retrieving the probe's output")
            words = last_line(folder / "stdout.txt") or last_line(folder / "stderr.txt")
            return ProbeOutcome(int(attr(ad, "ExitCode", 1)), words)
        if status == HELD:
            return ProbeOutcome(None, f"the probe job is held: {attr(ad, 'HoldReason', 'no reason given')}")
        if status == IDLE:
            return ProbeOutcome(None, "the probe job waits for a slot that matches the GPU request")
        return ProbeOutcome(None, "the probe job runs")

    @_locked
    def end_probe(self, scan: ScanRef, site: Site | None) -> None:
        uid = self._uid(scan)
        site = site or _default_site()
        condor = condor_of(site)
        connection = self._connection(scan, site)
        if ids := [job_id(ad) for ad in self._probe_ads(uid, site)]:
            self._act_remove(self._schedd(connection, condor), connection, condor, ids, "site probe timed out")
        self._refreshed_at = None

    # cancel -------------------------------------------------------------------------------------------------

    def _act_remove(
        self, schedd: ScheddLike, connection: Connection, site: HTCondorSite, job_spec: Any, why: str
    ) -> None:
        import htcondor2

        try:
            schedd.act(htcondor2.JobAction.Remove, job_spec, reason=f"{REMOVE_REASON_PREFIX} {why}")
        except Exception as error:
            self._schedds.pop(connection, None)
            raise self._failed(connection, site, "removing jobs", error) from None

    def _distinct_connections(self, tracked: Tracked) -> list[tuple[Connection, Site]]:
        """One site per connection (schedd and credential) the scan uses."""
        first: dict[Connection, Site] = {}
        for site in tracked.sites.values():
            first.setdefault(self._connection(tracked.scan, site), site)
        return list(first.items())

    def _cancel(self, uid: str, tracked: Tracked, shards: Collection[int] | None) -> None:
        # Completed jobs are left alone: their state and output are what the scan keeps; removed ones are on their
        # way out of the queue (editing one that left between the query and the edit fails).
        constraint = f"{UID_ATTR} == {classad_string(uid)} && JobStatus != {COMPLETED} && JobStatus != {REMOVED}"
        if shards is not None:
            constraint += f" && member({SHARD_ATTR}, {{{', '.join(str(s) for s in sorted(shards))}}})"
        for connection, site in self._distinct_connections(tracked):
            condor = condor_of(site)
            schedd = self._schedd(connection, condor)
            try:  # mark them ours first (edit refuses a constraint that matches no job: ask first)
                if unfinished := schedd.query(constraint, ["ClusterId", "ProcId", SHARD_ATTR, RECORD_PAGES_ATTR]):
                    schedd.edit(constraint, CANCELLED_ATTR, "true")
            except Exception as error:
                self._schedds.pop(connection, None)
                raise self._failed(connection, condor, "marking jobs to remove", error) from None
            # Every record they chirped, read before they go (a removed job's ad and scratch folder are gone).
            pages = {job_id(ad): range(int(attr(ad, RECORD_PAGES_ATTR, 0))) for ad in unfinished}
            chirped = self._read_pages(connection, site, {job: wanted for job, wanted in pages.items() if wanted})
            if unfinished:  # nothing to remove asks nothing (a refused credential could not even remove nothing)
                self._act_remove(schedd, connection, condor, constraint, "scan suspended or deleted")
            for records in chirped.values():
                for record in records:
                    self._chirped.setdefault(uid, {}).setdefault(record.shard, {})[record.id] = record
        self._keep_chirped(tracked.scan)
        active = {
            int(attr(ad, SHARD_ATTR, 0))
            for _, _, ad in self._jobs(uid)
            if int(attr(ad, "JobStatus", IDLE)) not in (COMPLETED, REMOVED)
        }
        self._cancelled.setdefault(uid, set()).update(active if shards is None else shards)
        self._refreshed_at = None  # the next poll asks again

    def _keep_chirped(self, scan: ScanRef) -> None:
        """A removed job's scratch results never come back: append what it chirped to its shard's results.jsonl,
        so the next attempt's input sandbox carries it and nothing recorded is trained again (the contract)."""
        for shard, chirped in self._chirped.pop(self._uid(scan), {}).items():
            path = self.scan_dir(scan) / shard_name(shard) / RESULTS_FILE
            try:
                kept = {r.id for r in parse_records(path.read_bytes().splitlines())[0]}
            except FileNotFoundError:
                continue  # no sandbox here (a scan forgotten with its sandboxes)
            missing = [r for r in chirped.values() if r.id not in kept]
            if missing:
                with path.open("a") as results:
                    results.writelines(r.model_dump_json(by_alias=True, exclude_none=True) + "\n" for r in missing)

    @_locked
    def cancel(self, scan: ScanRef, shards: Collection[int] | None = None) -> None:
        """Remove the scan's unfinished jobs (of these shards; all when None) with one constraint per schedd;
        completed jobs and what was returned stay. The shards read as Suspended until submitted again."""
        uid = self._uid(scan)
        tracked = self._scans.get(uid)
        if tracked is None:
            raise BackendError(f"scan {scan.name!r} is not tracked; call track() with its spec first")
        if shards is not None and not shards:
            return
        self._cancel(uid, tracked, shards)
