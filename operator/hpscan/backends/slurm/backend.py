"""SlurmBackend: shards as Slurm batch jobs submitted through slurmrestd, their live channel the site's spool on
the centre's shared file system (see the package docstring and docs/slurm.md)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import ClassVar

from hpscan.api.contract import CHECKPOINTS_DIR, RESULTS_FILE, ResultRecord
from hpscan.api.sites import Site
from hpscan.api.spec import HPScanSpec
from hpscan.api.status import Reason, ShardPhase, ShardStatus
from hpscan.api.trials import (
    PROGRESS_FILE,
    STOP_FILE,
    TRIALS_FILE,
    Assignment,
    JsonLines,
    Progress,
    append_lines,
    read_progress,
)
from hpscan.backends.base import Backend, ScanRef, ScanTable, ShardLaunch
from hpscan.backends.sandbox_checkpoints import SandboxCheckpoints
from hpscan.backends.sandbox_models import SandboxModels
from hpscan.backends.slurm import spool
from hpscan.backends.slurm.commands import SlurmCommands
from hpscan.backends.slurm.probes import Probes
from hpscan.backends.slurm.rest import SlurmRest
from hpscan.backends.slurm.script import (
    JobName,
    job_environment,
    job_request,
    job_script,
    scan_folder,
    shard_command,
    shard_folder,
    slurm_of,
)
from hpscan.backends.slurm.state import COMMANDS, Connection, ScanState, ShardPlace, View, checked
from hpscan.backends.slurm.states import Attempt, attempts_started, shard_verdict
from hpscan.core.brokering import ProbeOutcome
from hpscan.errors import BackendError
from hpscan.job.runner import RecordTail
from hpscan.job.slurm import INBOX_DIR


class SlurmBackend(Backend):
    """Shards as Slurm jobs. One instance serves every scan; calls are serialised by one lock."""

    name: ClassVar[str] = "slurm"
    pulls: ClassVar[bool] = True  # trials and stops: files of the shard's folder in the spool

    def __init__(
        self,
        read_secret: Callable[[str, str, str], str] | None = None,
        environ: dict[str, str] | None = None,
        max_age_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.read_secret, self.environ = read_secret, dict(os.environ if environ is None else environ)
        self.max_age_seconds, self.clock = max_age_seconds, clock
        self.scans: ScanTable[ScanState] = ScanTable(ScanState, key=lambda scan: scan.uid)
        self.views: dict[Connection, View] = {}
        self._lock = threading.RLock()
        self._probes = Probes(self)
        self.models = SandboxModels(read_secret, clock)
        """Models the payload left in a shard's models/ folder on the shared file system -> spec.artifacts.store."""
        self.checkpoints = SandboxCheckpoints(read_secret)  # a moved shard's checkpoints/ <-> the scan's store

    # connections ----------------------------------------------------------------------------------------------

    def connection(self, scan: ScanRef, site: Site) -> Connection:
        """The site's identity: its tokenSecret read in the scan's namespace, else the operator's SLURM_JWT."""
        settings = slurm_of(site)
        if settings.token_secret is not None:
            if self.read_secret is None:
                raise BackendError(f"site {site.name!r} names tokenSecret but this process cannot read Secrets")
            ref = settings.token_secret
            token = self.read_secret(scan.namespace, ref.name, ref.key).strip()
        else:
            token = self.environ.get("SLURM_JWT", "").strip()
        if settings.interface == "commands":  # munge where hpscan runs, unless a token is given
            return (COMMANDS, settings.user, token)
        if not token:
            raise BackendError(f"site {site.name!r}: no Slurm token (set slurm.tokenSecret, or SLURM_JWT)")
        return (settings.rest_url or "", settings.user, token)

    def client(self, scan: ScanRef, site: Site) -> SlurmRest | SlurmCommands:
        return self.client_of(self.connection(scan, site))

    def client_of(self, connection: Connection) -> SlurmRest | SlurmCommands:
        endpoint, user, token = connection
        if endpoint == COMMANDS:
            return SlurmCommands(token, self.environ)
        return SlurmRest(endpoint, user, token)

    def view(self, scan: ScanRef, site: Site, refresh: bool = True) -> View:
        """The connection's jobs, asked again when older than max_age_seconds (``refresh``; else only when never
        asked); a failure is kept as the view's error (the site is Unreachable) until an answer comes."""
        key = self.connection(scan, site)
        view = self.views.setdefault(key, View())
        stale = self.clock() - view.at >= self.max_age_seconds
        if view.at == float("-inf") or (refresh and stale):
            try:
                jobs = self.client_of(key).jobs()
            except BackendError as error:  # no answer, or an answer with errors (slurmctld down, a token refused)
                view.error, view.at = str(error), self.clock()
            else:
                view.jobs, view.error, view.at = {job.name: job for job in jobs}, None, self.clock()
        return view

    def refresh(self, state: ScanState) -> None:
        """One GET /jobs per connection of the scan's sites (when older than max_age_seconds)."""
        for site in state.sites.values():
            self.view(state.scan, site)

    def expire(self) -> None:
        for view in self.views.values():
            view.at = float("-inf")

    # scans ----------------------------------------------------------------------------------------------------

    def track(self, scan: ScanRef, spec: HPScanSpec) -> None:
        """Remember the scan's Slurm sites, and find the shards submitted before (their jobs.jsonl in the spool)."""
        with self._lock:
            state = self.scans.open(checked(scan))
            state.spec = spec
            self.models.watch(scan, spec)
            self.checkpoints.watch(scan, spec)
            state.sites.update((site.name, site) for site in spec.sites if site.backend == self.name)
            for site in state.sites.values():
                for folder in sorted(scan_folder(site, scan).glob("shard-*")):
                    jobs = spool.submitted(folder)
                    index = int(folder.name.removeprefix("shard-"))
                    if jobs and (index not in state.shards or state.shards[index].moves < jobs[-1].moves):
                        state.shards[index] = ShardPlace(site.name, jobs[-1].moves, -1)

    def forget(self, scan: ScanRef) -> None:
        """A deleted scan: cancel its jobs and let go of it; its files in the spool stay (results are kept)."""
        with self._lock:
            self.checkpoints.forget(scan)  # first: a deleted scan's cancel uploads nothing
            if (state := self.scans.get(checked(scan))) is not None:
                self._cancel(state, None)
            self.scans.drop(scan)
            self.models.forget(scan)

    def _tracked(self, scan: ScanRef) -> ScanState:
        state = self.scans.get(checked(scan))
        if state is None or state.spec is None:
            raise BackendError(f"scan {scan.name!r} is not tracked; call track() with its spec first")
        return state

    def site_of(self, state: ScanState, shard: int) -> tuple[Site, Path]:
        place = state.shards[shard]
        site = state.sites[place.site]
        return site, shard_folder(site, state.scan, shard)

    # submit ---------------------------------------------------------------------------------------------------

    def submit(self, scan: ScanRef, spec: HPScanSpec, launches: Sequence[ShardLaunch]) -> None:
        """Submit the shards that have no live job for their move yet (jobs found by name or in jobs.jsonl are
        left alone, so a repeated call submits nothing twice); a shard that was cancelled gets a new attempt."""
        with self._lock:
            self.track(scan, spec)
            state = self._tracked(scan)
            self.refresh(state)
            for launch in launches:
                site = launch.site
                if site is None or site.backend != self.name:
                    raise BackendError(f"site {getattr(site, 'name', None)!r} is not a slurm site")
                index, moves = launch.shard_file.shard, launch.moves
                folder = shard_folder(site, scan, index)
                attempts = self._attempts(state, site, folder, index, moves)
                state.shards[index] = ShardPlace(site.name, moves, len(launch.shard_file.combinations))
                if attempts and not attempts[-1].cancelled:
                    continue
                spool.make_folder(folder / INBOX_DIR, Path(slurm_of(site).spool))
                spool.write_shard_file(folder, launch.shard_file)
                if self.checkpoints.restore(scan, folder, launch.shard_file):  # trained elsewhere before a move
                    spool.hand_over(folder / CHECKPOINTS_DIR, Path(slurm_of(site).spool))
                if attempts and attempts[-1].stopping:
                    state.restarting.add(index)  # two jobs must never write one results.jsonl: poll starts it
                    continue
                self._submit_attempt(state, site, index, moves, len(attempts) + 1)

    def _submit_attempt(self, state: ScanState, site: Site, index: int, moves: int, attempt: int) -> None:
        assert state.spec is not None
        settings, folder = slurm_of(site), shard_folder(site, state.scan, index)
        name = JobName(state.scan.uid, index, moves, attempt)
        script = job_script(settings, shard_command(settings, state.spec, index, folder), folder)
        body = job_request(state.spec, site, name, script, folder, job_environment(state.spec, site))
        job_id = self.client(state.scan, site).submit(body)
        spool.record_submitted(folder, spool.Submitted(job_id, moves, attempt))
        self.expire()

    def _attempts(self, state: ScanState, site: Site, folder: Path, index: int, moves: int) -> list[Attempt]:
        """The shard's jobs of this move, oldest first: jobs.jsonl, and jobs Slurm lists by our name that a crash
        kept out of it, each with what Slurm and the spool say of it."""
        view = self.view(state.scan, site, refresh=False)
        by_id = {job.job_id: job for job in view.jobs.values()}
        known = {s.job_id: s.attempt for s in spool.submitted(folder) if s.moves == moves}
        for job in view.jobs.values():
            parsed = JobName.parse(job.name)
            if parsed and parsed.uid == state.scan.uid and parsed.shard == index and parsed.moves == moves:
                known.setdefault(job.job_id, parsed.attempt)
        ordered = sorted(known.items(), key=lambda item: (item[1], item[0]))
        attempts = []
        for job_id, attempt in ordered:
            code, cancelled = spool.exit_code(folder, job_id), spool.was_cancelled(folder, job_id)
            listed = by_id.get(job_id)
            if listed is None and code is None and not cancelled and view.error is None and job_id == ordered[-1][0]:
                # The newest job, not listed: ask for it alone, so a job listed late is never taken for a lost one.
                listed = self.client(state.scan, site).job(job_id)
            words = spool.last_words(folder, job_id) if code else ""
            attempts.append(Attempt(job_id, attempt, listed, code, cancelled, words))
        return attempts

    # poll and records -----------------------------------------------------------------------------------------

    def poll(self, scan: ScanRef) -> dict[int, ShardStatus]:
        """Each shard's state from its newest job; a failed attempt with retries left is submitted again here.
        A site whose slurmrestd does not answer keeps its shards' last state, marked SchedulerUnavailable."""
        with self._lock:
            state = self.scans.get(checked(scan))
            if state is None or state.spec is None:
                return {}
            self.refresh(state)
            self._collect(state)
            return {index: self._shard_status(state, index) for index in sorted(state.shards)}

    def _shard_status(self, state: ScanState, index: int) -> ShardStatus:
        assert state.spec is not None
        site, folder = self.site_of(state, index)
        place = state.shards[index]
        view = self.view(state.scan, site, refresh=False)
        if view.error is not None:
            last = state.last.get(index) or ShardStatus(index=index, site=site.name, moves=place.moves)
            if last.phase in {ShardPhase.PENDING, ShardPhase.RUNNING}:
                return last.model_copy(update={"reason": Reason.SCHEDULER_UNAVAILABLE, "message": view.error[:300]})
            return last
        attempts = self._attempts(state, site, folder, index, place.moves)
        if index in state.restarting and attempts:
            if attempts[-1].stopping:
                return ShardStatus(
                    index=index, site=site.name, moves=place.moves, attempts=attempts_started(attempts),
                    message=f"waits for its cancelled job {attempts[-1].job_id} to stop",
                )  # fmt: skip
            state.restarting.discard(index)
            self._submit_attempt(state, site, index, place.moves, len(attempts) + 1)
            attempts = self._attempts(state, site, folder, index, place.moves)
        if not attempts:
            return ShardStatus(index=index, site=site.name, moves=place.moves)
        recorded = len(state.recorded.get(index, ()))
        expected = place.expected if place.expected >= 0 else recorded
        verdict = shard_verdict(attempts, state.spec.retries, recorded, expected)
        if verdict.retry:
            self._submit_attempt(state, site, index, place.moves, len(attempts) + 1)
            attempts = self._attempts(state, site, folder, index, place.moves)
        status = ShardStatus(
            index=index,
            site=site.name,
            phase=verdict.phase,
            attempts=attempts_started(attempts),
            job=str(attempts[-1].job_id),
            reason=verdict.reason,
            message=verdict.message,
            done=recorded,
            total=max(expected, recorded),
            moves=place.moves,
        )
        state.last[index] = status
        self.checkpoints.left(state.scan, status, folder, state.recorded.get(index, set()))  # exit 3: for the next site
        return status

    def _collect(self, state: ScanState) -> None:
        """New lines of each shard's results.jsonl (every line again for a new backend: a restarted operator)."""
        for index in state.shards:
            _site, folder = self.site_of(state, index)
            path = folder / RESULTS_FILE
            tail = state.tails.setdefault(path, RecordTail(path))
            records = tail.read_new()
            state.recorded.setdefault(index, set()).update(record.id for record in records)
            state.unreported.extend(records)
            if records:  # the payload saves a model before its record: both are on the file system now
                self.models.returned(state.scan, folder, records)
                self.checkpoints.recorded(state.scan, records)

    def fetch_records(self, scan: ScanRef) -> list[ResultRecord]:
        with self._lock:
            state = self.scans.get(checked(scan))
            if state is None:
                return []
            self.models.flush(scan)  # models whose upload failed before
            self._collect(state)
            records, state.unreported = state.unreported, []
            return records

    def unreadable(self, scan: ScanRef) -> int:
        state = self.scans.get(scan)
        return sum(tail.bad_lines for tail in state.tails.values()) if state is not None else 0

    def outages(self, scan: ScanRef) -> dict[str, str]:
        """Sites whose slurmrestd did not answer (or refused the token) at the last poll."""
        with self._lock:
            state = self.scans.get(scan)
            if state is None:
                return {}
            out = {}
            for name, site in state.sites.items():
                try:
                    view = self.view(scan, site, refresh=False)
                except BackendError as error:  # no token: the site cannot be reached either
                    out[name] = str(error)
                    continue
                if view.error is not None:
                    out[name] = view.error
            return out

    # workers that pull: the shard folder's inbox/ and progress.jsonl ------------------------------------------

    def assign(self, scan: ScanRef, shard: int, lines: Sequence[dict]) -> None:
        with self._lock:
            _site, folder = self.site_of(self._tracked(scan), shard)
            append_lines(folder / INBOX_DIR / TRIALS_FILE, lines)

    def stop_trials(self, scan: ScanRef, shard: int, trial_ids: Sequence[str]) -> None:
        with self._lock:
            _site, folder = self.site_of(self._tracked(scan), shard)
            append_lines(folder / INBOX_DIR / STOP_FILE, [{"id": trial} for trial in trial_ids])

    def fetch_progress(self, scan: ScanRef) -> list[Progress]:
        with self._lock:
            state = self.scans.get(checked(scan))
            if state is None:
                return []
            reports: list[Progress] = []
            for index in state.shards:
                path = self.site_of(state, index)[1] / PROGRESS_FILE
                reports += read_progress(state.progress.setdefault(path, JsonLines(path)).read_new())
            return reports

    def assignments(self, scan: ScanRef) -> dict[int, Assignment]:
        with self._lock:
            state = self.scans.get(checked(scan))
            out: dict[int, Assignment] = {}
            for index in state.shards if state is not None else ():
                assert state is not None
                assignment = Assignment()
                assignment.fold(JsonLines(self.site_of(state, index)[1] / INBOX_DIR / TRIALS_FILE).read_new())
                out[index] = assignment
            return out

    # probes and cancel ----------------------------------------------------------------------------------------

    def probe(self, scan: ScanRef, spec: HPScanSpec, site: Site | None) -> ProbeOutcome:
        if site is None:
            raise BackendError("a Slurm probe needs a slurm site")
        with self._lock:
            self.track(scan, spec)
            return self._probes.probe(self._tracked(scan), site)

    def end_probe(self, scan: ScanRef, site: Site | None) -> None:
        if site is None:
            return
        with self._lock:
            self._probes.end(self._tracked(scan), site)

    def cancel(self, scan: ScanRef, shards: Collection[int] | None = None) -> None:
        """scancel the newest job of these shards (all when None) that has not ended; what they recorded stays
        in their folders. The shards read Suspended until submitted again."""
        with self._lock:
            self._cancel(self._tracked(scan), shards)

    def _cancel(self, state: ScanState, shards: Collection[int] | None) -> None:
        self.refresh(state)
        for index, place in list(state.shards.items()):
            if shards is not None and index not in shards:
                continue
            state.restarting.discard(index)
            site, folder = self.site_of(state, index)
            attempts = self._attempts(state, site, folder, index, place.moves)
            if not attempts or attempts[-1].cancelled or attempts[-1].exit_code is not None:
                continue
            newest = attempts[-1]
            if newest.job is not None and newest.job.state not in {"PENDING", "RUNNING", "CONFIGURING", "SUSPENDED"}:
                continue  # ended already: its outcome stands
            spool.mark_cancelled(folder, newest.job_id)  # first: a crash after the cancel still reads Suspended
            self.client(state.scan, site).cancel(newest.job_id)
            self.checkpoints.upload(state.scan, folder, state.recorded.get(index, set()))  # for its next site
        self.expire()
