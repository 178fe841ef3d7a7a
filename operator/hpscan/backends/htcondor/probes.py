"""Site probes: one job per scan and site (submit.probe_description, spec.payload.gpuCheck), sent once and read from
the poll cycle's view. A probe job carries HPScanProbe (the site's name) and no shard, so no shard reads it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hpscan.api.sites import Site
from hpscan.api.spec import HPScanSpec
from hpscan.backends.base import last_line
from hpscan.backends.htcondor.ads import attr, job_id
from hpscan.backends.htcondor.poller import Poller
from hpscan.backends.htcondor.schedd import COMPLETED, HELD, IDLE, PROBE_ATTR, REMOVED, UID_ATTR, condor_of
from hpscan.backends.htcondor.schedds import Schedds
from hpscan.backends.htcondor.state import ScanState
from hpscan.backends.htcondor.submit import PROBE_DIR, probe_description, scan_dir
from hpscan.core.brokering import ProbeOutcome
from hpscan.errors import SchedulerUnavailable


class Probes:
    """Starts, reads and ends the site probes of the scans in the poller's table; sandboxes under ``work_dir``."""

    def __init__(self, schedds: Schedds, poller: Poller, work_dir: Path) -> None:
        self.schedds = schedds
        self.poller = poller
        self.work_dir = work_dir

    def _ads(self, state: ScanState, site: Site) -> list[Any]:
        """The site's probe jobs of the scan that were not removed, oldest first."""
        mine = [
            ad
            for ad in self.poller.view(state, site).ads
            if attr(ad, UID_ATTR) == state.uid
            and attr(ad, PROBE_ATTR) == site.name
            and int(attr(ad, "JobStatus", IDLE)) != REMOVED
        ]
        return sorted(mine, key=lambda ad: int(attr(ad, "ClusterId", 0)))

    def probe(self, state: ScanState, spec: HPScanSpec, site: Site) -> ProbeOutcome:
        """Send the probe when the site has none; else what its newest probe job says now."""
        self.poller.ensure_fresh(state)
        condor = condor_of(site)
        connection = self.schedds.connection(state.scan, site)
        view = self.poller.views[connection]
        if view.error:
            raise SchedulerUnavailable(view.error)
        ads = self._ads(state, site)
        sandboxes = scan_dir(self.work_dir, state.scan)
        folder = sandboxes / f"{PROBE_DIR}{site.name}"
        if not ads:
            folder.mkdir(parents=True, exist_ok=True)
            schedd = self.schedds.handle(connection, condor)
            with self.schedds.calling(connection, condor, "submitting the site probe", site.name):
                result = schedd.submit(
                    probe_description(state.scan, spec, site, sandboxes), count=1, spool=condor.remote
                )
                if condor.remote:
                    schedd.spool(result)
            self.poller.expire()  # the next call sees it
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

    def end(self, state: ScanState, site: Site) -> None:
        """Remove the site's probe jobs (a later probe starts afresh)."""
        connection = self.schedds.connection(state.scan, site)
        if ids := [job_id(ad) for ad in self._ads(state, site)]:
            self.schedds.remove(connection, condor_of(site), ids, "site probe timed out")
        self.poller.expire()
