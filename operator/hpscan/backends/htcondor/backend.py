"""HTCondorBackend: submit, poll, records, cancel and forget, over the package's parts (see the package docstring).

One backend instance serves every scan: its state per scan is one ``ScanState`` in one table; ``Schedds`` holds the
schedd handles and is the one way to call them; the shared ``Poller``'s cycle is one batched query per schedd and
identity, and ``poll``/``fetch_records`` read what the last cycle saw; ``PullChannel`` and ``Probes`` serve workers
that pull and site probes. All calls block (the bindings are C); the operator runs them in kopf's worker threads,
serialised by one lock. Calls for a site with a ``tokenSecret`` go through that credential's worker process
(``credentials``, ``worker``); the others run in this process.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Collection, Sequence
from functools import wraps
from pathlib import Path
from typing import Any, ClassVar

from hpscan.api.contract import RESULTS_FILE, ResultRecord, ShardFile, parse_records, shard_name
from hpscan.api.sites import Site
from hpscan.api.spec import HPScanSpec
from hpscan.api.status import FINAL_EXITS, Reason, ShardPhase, ShardStatus
from hpscan.api.trials import Assignment, Progress
from hpscan.backends.base import Backend, ScanRef, ShardLaunch, last_line
from hpscan.backends.htcondor.ads import attr, job_id, present_and_orphaned, shard_status
from hpscan.backends.htcondor.credentials import Connection
from hpscan.backends.htcondor.poller import Poller
from hpscan.backends.htcondor.probes import Probes
from hpscan.backends.htcondor.pull import PullChannel
from hpscan.backends.htcondor.removal import Removal, keep_chirped, left_by_us
from hpscan.backends.htcondor.schedd import (
    COMPLETED,
    EXISTING_PROJECTION,
    IDLE,
    REMOVED,
    RUNNING,
    SHARD_ATTR,
    SPOOL_GRACE_SECONDS,
    SUSPENDED,
    TRANSFERRING_OUTPUT,
    UID_ATTR,
    ScheddFactory,
    condor_of,
    default_site,
    locate_schedd,
)
from hpscan.backends.htcondor.schedds import Schedds
from hpscan.backends.htcondor.state import ScanState, scan_table
from hpscan.backends.htcondor.submit import SubmitPlan, scan_dir, submit_description, write_sandboxes
from hpscan.backends.sandbox_checkpoints import SandboxCheckpoints, leaves_its_site, recorded_in
from hpscan.backends.sandbox_models import SandboxModels
from hpscan.core.brokering import ProbeOutcome
from hpscan.errors import BackendError
from hpscan.job.chirp import STOPS_ATTR, TRIALS_ATTR, classad_string


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
        self._lock = threading.RLock()
        self.scans = scan_table()
        self._schedds = Schedds(self.work_dir / "tokens", schedd_factory, read_secret)
        self._poller = Poller(self._schedds, self.scans, clock, max_age_seconds)
        self._pull = PullChannel(self._schedds, self._poller)
        self._probes = Probes(self._schedds, self._poller, self.work_dir)
        self._removal = Removal(self._schedds, self._poller, self.work_dir)
        self.models = SandboxModels(read_secret, clock)  # returned models/ folders -> spec.artifacts.store
        self.checkpoints = SandboxCheckpoints(read_secret)  # a moved shard's checkpoints/ <-> the scan's store

    # The poller's settings, which tests change on a running backend.
    @property
    def clock(self) -> Callable[[], float]:
        return self._poller.clock

    @clock.setter
    def clock(self, clock: Callable[[], float]) -> None:
        self._poller.clock = clock

    @property
    def max_age_seconds(self) -> float:
        return self._poller.max_age_seconds

    @max_age_seconds.setter
    def max_age_seconds(self, seconds: float) -> None:
        self._poller.max_age_seconds = seconds

    # scans --------------------------------------------------------------------------------------------------

    @_locked
    def track(self, scan: ScanRef, spec: HPScanSpec) -> None:
        """Watch a scan's htcondor sites from the next poll cycle on (the operator calls this for every scan it
        sees, e.g. from an index, so a restarted operator polls what it submitted before)."""
        state = self.scans.open(self._checked(scan))
        self.models.watch(scan, spec)
        self.checkpoints.watch(scan, spec)
        state.sites.update((site.name, site) for site in spec.sites if site.backend == "htcondor")
        self._poller.watch(state)

    @_locked
    def prepare(self, scan: ScanRef, spec: HPScanSpec, shard_count: int) -> None:
        """Read the IDTOKEN of every site that names a ``tokenSecret`` (when the operator can read Secrets) and hand it
        to its connection's worker process; a token that changed in the Secret restarts that worker."""
        for site in spec.sites:
            if site.backend != "htcondor":
                continue
            connection = self._schedds.connection(scan, site)
            if connection.credential is not None:
                self._schedds.renew(connection, site.name)

    @_locked
    def forget(self, scan: ScanRef, delete_sandboxes: bool = False) -> None:
        """A deleted scan: remove its jobs, let its completed jobs leave the queue (they stay a while otherwise, for
        their output and final state), stop watching it and, if asked, delete its sandboxes on this side.
        Raises SchedulerUnavailable when a schedd does not answer; call again (e.g. from a retried finalizer)."""
        state = self.scans.get(self._checked(scan))
        self.checkpoints.forget(scan)  # first: a deleted scan's jobs leave no checkpoints in the store
        if state is not None:
            self._removal.cancel(state, None)
            self._removal.release_completed(state)
        self.scans.drop(scan)
        self.models.forget(scan)
        self._drop_unused()
        if delete_sandboxes:
            shutil.rmtree(self.scan_dir(scan), ignore_errors=True)

    def scan_dir(self, scan: ScanRef) -> Path:
        return scan_dir(self.work_dir, scan)

    @staticmethod
    def _checked(scan: ScanRef) -> ScanRef:
        """The scan, when it has a uid (the table's key)."""
        if not scan.uid:
            raise BackendError(f"scan {scan.name!r} has no uid; HTCondor jobs are found again by it")
        return scan

    def _tracked(self, scan: ScanRef) -> ScanState:
        state = self.scans.get(self._checked(scan))
        if state is None:
            raise BackendError(f"scan {scan.name!r} is not tracked; call track() with its spec first")
        return state

    def _drop_unused(self) -> None:
        """Forget the views and handles of connections no tracked scan uses, and stop their worker processes."""
        in_use = {self._schedds.connection(s.scan, site) for s in self.scans for site in s.sites.values()}
        self._poller.retain(in_use)
        self._schedds.retain(in_use)

    def close(self) -> None:
        """Stop every credential's worker process (they are daemons: they also end with the operator)."""
        with self._lock:
            self._schedds.close()

    # submit -------------------------------------------------------------------------------------------------

    def plans(self, scan: ScanRef, spec: HPScanSpec, launches: Sequence[ShardLaunch]) -> list[SubmitPlan]:
        """The submit descriptions for these launches, one per site (what ``submit`` sends when no job exists)."""
        by_site: dict[str, tuple[Site, list[ShardFile]]] = {}
        moves = {launch.shard_file.shard: launch.moves for launch in launches}
        for launch in launches:
            site = launch.site or default_site()
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
        self.track(scan, spec)
        state = self._tracked(scan)
        for plan in self.plans(scan, spec, launches):
            condor, name = condor_of(plan.site), plan.site.name
            connection = self._schedds.connection(scan, plan.site)
            schedd = self._schedds.handle(connection, condor, name)
            with self._schedds.calling(connection, condor, "looking for the scan's jobs", name):
                existing = schedd.query(f"{UID_ATTR} == {classad_string(state.uid)}", EXISTING_PROJECTION)
            present, orphans = present_and_orphaned(existing, self.spool_grace_seconds)
            missing = [row for row in plan.itemdata if (int(row["Shard"]), int(row["Moves"])) not in present]
            if not missing:
                continue
            if orphans:
                self._schedds.remove(connection, condor, orphans, "input never spooled; submitting again")
            shards = {int(row["Shard"]) for row in missing}
            wanted = [launch.shard_file for launch in launches if launch.shard_file.shard in shards]
            write_sandboxes(self.scan_dir(scan), wanted)
            for shard_file in wanted:  # what a job at another site trained, into the input's checkpoints/
                self.checkpoints.restore(scan, self.scan_dir(scan) / shard_name(shard_file.shard), shard_file)
            with self._schedds.calling(connection, condor, f"submitting {len(missing)} shard job(s)", name):
                result = schedd.submit(plan.description, count=1, spool=plan.spool, itemdata=iter(missing))
                if plan.spool:
                    schedd.spool(result)
            state.cancelled.difference_update(shard_file.shard for shard_file in wanted)

    # the shared poller --------------------------------------------------------------------------------------

    @_locked
    def refresh(self) -> None:
        """One poll cycle for every tracked scan: one batched query per connection (a schedd as one identity: the
        operator's own, or a credential's through its worker), then output retrieval for completed spooled jobs.
        Never raises: a schedd that does not answer keeps its last view and an error."""
        self._poller.refresh()

    @_locked
    def poll(self, scan: ScanRef) -> dict[int, ShardStatus]:
        """Shard states from the last cycle (refreshing when it is older than max_age_seconds). A schedd that
        stopped answering marks its unfinished shards SchedulerUnavailable; see outages() for one that never did."""
        state = self.scans.get(self._checked(scan))
        if state is None:
            return {}
        self._poller.ensure_fresh(state)
        # A schedd that never answered knows shards we cannot see: outages() names its sites, and the engine keeps
        # their shards where the last status put them instead of placing them again.
        states: dict[int, ShardStatus] = {}
        rank: dict[int, tuple[int, int, int]] = {}
        for site, view, ad in self._poller.jobs(state):
            shard = shard_status(ad, site.name)
            live = int(attr(ad, "JobStatus", IDLE)) != REMOVED
            # A moved shard's newest job (the highest move count) speaks for it; then a live job beats a removed one, newer beats older.
            order = (shard.moves, int(live), int(attr(ad, "ClusterId", 0)))
            if shard.index in rank and rank[shard.index] >= order:
                continue
            rank[shard.index] = order
            if shard.reason in {*FINAL_EXITS.values(), Reason.PAYLOAD_FAILED}:  # its own words, from the stderr back
                stderr = self.scan_dir(scan) / shard_name(shard.index) / "stderr.txt"
                if words := last_line(stderr, 200):
                    shard = shard.model_copy(update={"message": f"{words} ({shard.message})"[:300]})
            if view.error and shard.phase in {ShardPhase.PENDING, ShardPhase.RUNNING}:
                shard = shard.model_copy(update={"reason": Reason.SCHEDULER_UNAVAILABLE, "message": view.error})
            remote = condor_of(site).remote
            if remote and shard.phase == ShardPhase.SUCCEEDED and job_id(ad) not in view.retrieved:
                # Succeeded only once its results are here, so the last records are never missed.
                shard = shard.model_copy(update={"phase": ShardPhase.RUNNING, "reason": Reason.RETRIEVING_OUTPUT})
            if leaves_its_site(shard) and (not remote or job_id(ad) in view.retrieved):  # exit 3: for the next site
                sandbox = self.scan_dir(scan) / shard_name(shard.index)
                self.checkpoints.left(scan, shard, sandbox, recorded_in(sandbox / RESULTS_FILE))
            states[shard.index] = shard
        for index in state.cancelled - set(states):
            states[index] = ShardStatus(index=index, phase=ShardPhase.SUSPENDED, reason=Reason.SUSPENDED)
        return states

    @_locked
    def fetch_records(self, scan: ScanRef) -> list[ResultRecord]:
        """Records of completed shards (their returned results.jsonl, read once per job) and the records running
        jobs chirped that were not handed over before (every one of them after a restart)."""
        state = self.scans.get(self._checked(scan))
        if state is None:
            return []
        self._poller.ensure_fresh(state)
        chirped = self._poller.chirped_since(state)
        self.models.flush(scan)  # returned models whose upload failed before
        records: list[ResultRecord] = []
        left: dict[tuple[Connection, str], list[str]] = {}
        for site, view, ad in self._poller.jobs(state):
            status = int(attr(ad, "JobStatus", IDLE))
            job = f"{site.name}/{job_id(ad)}"
            if status == COMPLETED and job not in state.results_read:
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
                state.unreadable += len(problems)
                state.results_read.add(job)
            elif status in (RUNNING, TRANSFERRING_OUTPUT, SUSPENDED):
                live = chirped.get((self._schedds.connection(scan, site), job_id(ad)), [])
                keep_chirped(state, live)
                records.extend(state.records_handed.first_seen(live, key=lambda record: record.id))
            elif left_by_us(ad):
                left.setdefault((self._schedds.connection(scan, site), site.name), []).append(job_id(ad))
        if left:  # removed by an operator that stopped before reading them
            settled = self._removal.settle(state, left)
            records.extend(state.records_handed.first_seen(settled, key=lambda record: record.id))
        self.checkpoints.recorded(scan, records)
        return records

    def unreadable(self, scan: ScanRef) -> int:
        state = self.scans.get(scan)
        return state.unreadable if state is not None else 0

    @_locked
    def outages(self, scan: ScanRef) -> dict[str, str]:
        """Sites whose schedd did not answer the last poll cycle (the others' shards go on)."""
        state = self.scans.get(scan)
        if state is None:
            return {}
        return {
            name: view.error for name, site in state.sites.items() if (view := self._poller.view(state, site)).error
        }

    # workers that pull (pull.py) ----------------------------------------------------------------------------

    @_locked
    def assign(self, scan: ScanRef, shard: int, lines: Sequence[dict]) -> None:
        self._pull.append(self._tracked(scan), shard, TRIALS_ATTR, lines)

    @_locked
    def stop_trials(self, scan: ScanRef, shard: int, trial_ids: Sequence[str]) -> None:
        self._pull.append(self._tracked(scan), shard, STOPS_ATTR, [{"id": i} for i in trial_ids])

    @_locked
    def fetch_progress(self, scan: ScanRef) -> list[Progress]:
        """The per-epoch reports pulling workers chirped (HPScanProgress) that were not handed over before."""
        state = self.scans.get(self._checked(scan))
        return self._pull.progress(state) if state is not None else []

    @_locked
    def assignments(self, scan: ScanRef) -> dict[int, Assignment]:
        """Each worker's Assignment, folded from HPScanTrials of its job (the newest move's: it carries the
        whole text), so a restarted operator hands out nothing twice."""
        state = self.scans.get(self._checked(scan))
        return self._pull.assignments(state) if state is not None else {}

    # site probes (probes.py) --------------------------------------------------------------------------------

    @_locked
    def probe(self, scan: ScanRef, spec: HPScanSpec, site: Site | None) -> ProbeOutcome:
        """The site's probe job (submit.probe_description): sent once, read from the poll cycle's view."""
        self.track(scan, spec)
        return self._probes.probe(self._tracked(scan), spec, site or default_site())

    @_locked
    def end_probe(self, scan: ScanRef, site: Site | None) -> None:
        self._probes.end(self._tracked(scan), site or default_site())

    # cancel -------------------------------------------------------------------------------------------------

    @_locked
    def cancel(self, scan: ScanRef, shards: Collection[int] | None = None) -> None:
        """Remove the scan's unfinished jobs (of these shards; all when None) with one constraint per schedd;
        completed jobs and what was returned stay. The shards read as Suspended until submitted again."""
        state = self._tracked(scan)
        if shards is not None and not shards:
            return
        self._removal.cancel(state, shards)
        for shard in sorted(state.cancelled if shards is None else shards):  # what came back, for the next site
            sandbox = self.scan_dir(scan) / shard_name(shard)
            self.checkpoints.upload(scan, sandbox, recorded_in(sandbox / RESULTS_FILE))
