"""Site probes: one job per scan and site running spec.payload.gpuCheck with the shards' GPU request, in the
site's spool (``probe-<site>/``). Each round's job is named hpscan.<uid>.probe.<site>.<round>; ending a probe
cancels its job and marks the round ended, so the next probe is a new round."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from hpscan.api.sites import Site
from hpscan.backends.slurm import spool
from hpscan.backends.slurm.script import (
    JobName,
    job_environment,
    job_request,
    job_script,
    probe_folder,
    slurm_of,
)
from hpscan.backends.slurm.states import PENDING_STATES, RUNNING_STATES, SLURM_ENDINGS, pending_reason
from hpscan.core.brokering import ProbeOutcome
from hpscan.errors import SchedulerUnavailable

if TYPE_CHECKING:
    from hpscan.backends.slurm.backend import SlurmBackend
    from hpscan.backends.slurm.state import ScanState

ENDED_PREFIX = "ended-"


class Probes:
    def __init__(self, backend: SlurmBackend) -> None:
        self.backend = backend

    def _current(self, state: ScanState, site: Site) -> spool.Submitted | None:
        """The newest probe job that was not ended, None when a new round is due."""
        folder = probe_folder(site, state.scan)
        jobs = spool.submitted(folder)
        if not jobs or (folder / f"{ENDED_PREFIX}{jobs[-1].job_id}").exists():
            return None
        return jobs[-1]

    def probe(self, state: ScanState, site: Site) -> ProbeOutcome:
        """Send the probe when the site has none running; else what its job says now."""
        view = self.backend.view(state.scan, site)
        if view.error is not None:
            raise SchedulerUnavailable(view.error)
        folder = probe_folder(site, state.scan)
        current = self._current(state, site)
        if current is None:
            self._send(state, site, len(spool.submitted(folder)) + 1)
            return ProbeOutcome(None, "probe sent")
        code = spool.exit_code(folder, current.job_id)
        if code is not None:
            return ProbeOutcome(code, spool.last_words(folder, current.job_id))
        job = next((j for j in view.jobs.values() if j.job_id == current.job_id), None)
        if job is None:
            return ProbeOutcome(None, "the probe job was sent; Slurm does not list it yet")
        if job.state in PENDING_STATES:
            return ProbeOutcome(None, "the probe job waits: " + pending_reason(job.reason, job.description)[1])
        if job.state in RUNNING_STATES:
            return ProbeOutcome(None, "the probe job runs")
        words = spool.last_words(folder, current.job_id)
        return ProbeOutcome(1, f"Slurm: {job.state}: {SLURM_ENDINGS.get(job.state, 'the job ended')}. {words}")

    def _send(self, state: ScanState, site: Site, round_: int) -> None:
        assert state.spec is not None
        settings, folder = slurm_of(site), probe_folder(site, state.scan)
        spool.make_folder(folder, Path(settings.spool))
        name = JobName(state.scan.uid, None, probe=site.name, probe_round=round_)
        script = job_script(settings, state.spec.payload.gpu_check, folder)
        body = job_request(state.spec, site, name, script, folder, job_environment(state.spec, site))
        job_id = self.backend.client(state.scan, site).submit(body)
        spool.record_submitted(folder, spool.Submitted(job_id, 0, round_))
        self.backend.expire()

    def end(self, state: ScanState, site: Site) -> None:
        """Cancel the site's probe job and end its round (a later probe starts afresh)."""
        current = self._current(state, site)
        if current is None:
            return
        folder = probe_folder(site, state.scan)
        (folder / f"{ENDED_PREFIX}{current.job_id}").touch()
        if spool.exit_code(folder, current.job_id) is None:
            self.backend.client(state.scan, site).cancel(current.job_id)
        self.backend.expire()
