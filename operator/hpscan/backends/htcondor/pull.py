"""The channel to workers that pull trials (ShardFile.pull; hpscan.api.trials): two attributes of a worker's job ad.

HPScanTrials and HPScanStops each hold the worker's whole trials.jsonl / stop.jsonl so far as one ClassAd string,
set with the schedd's edit (flag SetDirty, so the schedd tells the job's shadow, where chirp's get_job_attr reads).
An attribute cannot be appended to: every hand-out rewrites the whole text. A trial line is about 200 bytes (six
parameters, percent-encoded by chirp.lines_value), so a worker holding 100 trials carries 20 KB, written again with
each hand-out (the schedd's job log grows by that much per edit until it rotates) and fetched by every poll cycle
(PROJECTION). Sensible up to a few hundred trials per worker (tens of KB); a scan that hands one worker thousands
wants fewer, longer trials, more workers, or a channel that appends (a file the job fetches).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from typing import Any

from hpscan.api.sites import Site
from hpscan.api.trials import Assignment, Progress
from hpscan.backends.htcondor.ads import attr, job_id
from hpscan.backends.htcondor.credentials import Connection
from hpscan.backends.htcondor.poller import Poller
from hpscan.backends.htcondor.schedd import COMPLETED, IDLE, PROBE_ATTR, REMOVED, SHARD_ATTR, UID_ATTR, condor_of
from hpscan.backends.htcondor.schedds import Schedds
from hpscan.backends.htcondor.state import ScanState
from hpscan.errors import HPScanError
from hpscan.job.chirp import (
    PROGRESS_ATTR,
    STOPS_ATTR,
    TRIALS_ATTR,
    chirped_progress,
    classad_string,
    json_object_lines,
    lines_value,
    value_lines,
)


def _unfinished(ad: Any) -> bool:
    return int(attr(ad, "JobStatus", IDLE)) not in (COMPLETED, REMOVED)


class PullChannel:
    """Hands trials and stops to the workers of the scans in the poller's table, and reads back what they report."""

    def __init__(self, schedds: Schedds, poller: Poller) -> None:
        self.schedds = schedds
        self.poller = poller

    def append(self, state: ScanState, shard: int, attribute: str, lines: Sequence[dict]) -> None:
        """Append lines to a worker's text and set it on the shard's unfinished jobs. The text is the operator's
        (seeded from the job ads after a restart); a job that has none yet, e.g. a moved shard's new one, gets the
        whole text, so what a worker was handed and had taken back is always on its newest job."""
        constraint = (
            f"{UID_ATTR} == {classad_string(state.uid)} && {SHARD_ATTR} == {int(shard)} && {PROBE_ATTR} =?= undefined"
        )
        found: list[tuple[Connection, Site, Any]] = []
        for connection, site in self.schedds.distinct(state):
            condor = condor_of(site)
            schedd = self.schedds.handle(connection, condor, site.name)
            with self.schedds.calling(connection, condor, f"looking for shard {shard}'s job"):
                ads = schedd.query(constraint, ["ClusterId", "ProcId", "JobStatus", attribute])
            found += [(connection, site, ad) for ad in ads]
        if (shard, attribute) not in state.texts:  # a restarted operator: the longest text on the shard's jobs
            held = (value_lines(attr(ad, attribute)) for *_, ad in found)
            state.texts[shard, attribute] = max(held, key=len, default=[])
        state.texts[shard, attribute] += [json.dumps(line, separators=(",", ":")) for line in lines]
        for connection, site, ad in found:
            if _unfinished(ad):
                self._write(state, connection, site, job_id(ad), attribute, state.texts[shard, attribute])

    def _write(
        self, state: ScanState, connection: Connection, site: Site, job: str, attribute: str, text: list[str]
    ) -> None:
        import htcondor2

        condor = condor_of(site)
        schedd = self.schedds.handle(connection, condor, site.name)
        # SetDirty: the schedd tells a running job's shadow, whose copy of the ad chirp reads
        with self.schedds.calling(connection, condor, f"setting {attribute} of job {job}"):
            schedd.edit([job], attribute, lines_value(text), flags=htcondor2.TransactionFlag.SetDirty)
        state.written[connection, job, attribute] = list(text)

    def sync(self, state: ScanState) -> None:
        """Set the whole text on unfinished jobs that do not carry it yet (a job that appeared after the last
        hand-out to its shard, or an edit that failed)."""
        for site, _, ad in self.poller.jobs(state):
            if not _unfinished(ad):
                continue
            shard, job = int(attr(ad, SHARD_ATTR, -1)), job_id(ad)
            connection = self.schedds.connection(state.scan, site)
            for attribute in (TRIALS_ATTR, STOPS_ATTR):
                text = state.texts.get((shard, attribute))
                if (
                    text
                    and state.written.get((connection, job, attribute)) != text
                    and value_lines(attr(ad, attribute)) != text
                ):
                    with contextlib.suppress(HPScanError):  # e.g. the job just left the queue: the next cycle sees
                        self._write(state, connection, site, job, attribute, text)

    def progress(self, state: ScanState) -> list[Progress]:
        """The per-epoch reports pulling workers chirped (HPScanProgress) that were not handed over before."""
        self.poller.ensure_fresh(state)
        self.sync(state)
        reports = (
            report for _, _, ad in self.poller.jobs(state) for report in chirped_progress(attr(ad, PROGRESS_ATTR))
        )
        return state.progress_handed.first_seen(reports, key=lambda report: (report.id, report.epoch))

    def assignments(self, state: ScanState) -> dict[int, Assignment]:
        """Each worker's Assignment, folded from HPScanTrials of its job (the newest move's: it carries the
        whole text), so a restarted operator hands out nothing twice."""
        self.poller.ensure_fresh(state)
        texts: dict[int, list[str]] = {}
        for _, _, ad in self.poller.jobs(state):
            shard, text = int(attr(ad, SHARD_ATTR, -1)), value_lines(attr(ad, TRIALS_ATTR))
            if len(text) >= len(texts.get(shard, [])):
                texts[shard] = text
        for (shard, attribute), text in state.texts.items():
            if attribute == TRIALS_ATTR and len(text) > len(texts.get(shard, [])):
                texts[shard] = text
        out: dict[int, Assignment] = {}
        for shard, text in sorted(texts.items()):
            out[shard] = Assignment()
            out[shard].fold(json_object_lines(text))
        return out
