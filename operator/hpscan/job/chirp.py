"""The HTCondor live channel, inside a grid job: progress and the newest records as job attributes, via chirp.

The job never needs an inbound connection: the shard runner sets attributes on its own job ad through the
starter's chirp proxy (``+WantIOProxy = true``), and the operator's poller reads them in its one batched query
per schedd (``chirped_records``). The full results.jsonl still comes back in the output sandbox.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from hpscan.api.contract import Objective, ResultRecord, ShardFile, parse_records
from hpscan.errors import BackendError

# Job attributes the shard runner sets through chirp while the job runs.
DONE_ATTR = "HPScanDone"
FAILED_ATTR = "HPScanFailed"
BEST_ATTR = "HPScanBest"
RECORDS_ATTR = "HPScanRecords"

CHIRP_LINE_MAX = 5120
"""Longest chirp command line (htchirp refuses longer ones): bounds the records one update carries."""


def classad_string(value: str) -> str:
    """A ClassAd string literal (for +Attr lines and chirp values)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def chirped_records(text: object) -> list[ResultRecord]:
    """The records a running job chirped: the value of its HPScanRecords attribute (JSON lines of its newest
    records). A torn or foreign line is skipped: the sandbox copy is read again at the end."""
    if not isinstance(text, str):
        return []
    return parse_records(text.splitlines())[0]


class ChirpClient(Protocol):
    """The part of ``htchirp.HTChirp`` the channel uses: a context manager that connects, and set_job_attr."""

    def __enter__(self) -> ChirpClient: ...

    def __exit__(self, *args: object) -> Any: ...

    def set_job_attr(self, job_attribute: str, attribute_value: str) -> None: ...


def chirp_line_length(attribute: str, value: str) -> int:
    """Bytes of ``set_job_attr ATTR VALUE`` on the wire (chirp escapes backslash and whitespace)."""
    escaped = sum(value.count(c) for c in "\\ \n\t\r")
    return len("set_job_attr ") + len(attribute) + 1 + len(value.encode()) + escaped + 1


def _htchirp_client() -> Any:
    import htchirp

    return htchirp.HTChirp()


class ChirpChannel:
    """A LiveChannel for jobs: sets HPScanDone, HPScanFailed, HPScanBest and HPScanRecords (the newest records
    as JSON lines, as many as fit a chirp line) on the job's ad. A chirp failure is reported on stderr and never
    stops the payload: the records still come back in the output sandbox."""

    def __init__(self, objective: Objective, client: Callable[[], ChirpClient] = _htchirp_client) -> None:
        self.objective = objective
        self.client = client
        self.done = 0
        self.failed = 0
        self.best: float | None = None
        self.recent: list[str] = []

    def _better(self, value: float) -> bool:
        if self.best is None:
            return True
        return value < self.best if self.objective.goal == "minimize" else value > self.best

    def attributes(self, records: list[ResultRecord]) -> dict[str, str]:
        """Fold new records in; the job attributes to set, as ClassAd expressions."""
        for record in records:
            self.done += 1
            self.failed += record.status == "failed"
            value = record.objective_value(self.objective)
            if value is not None and self._better(value):
                self.best = value
            self.recent.append(json.dumps(record.to_wire(), separators=(",", ":")))
        kept: list[str] = []
        for line in reversed(self.recent):  # the newest records that fit one chirp line
            candidate = classad_string("\n".join([line, *kept]))
            if chirp_line_length(RECORDS_ATTR, candidate) > CHIRP_LINE_MAX:
                break
            kept.insert(0, line)
        self.recent = kept
        attributes = {DONE_ATTR: str(self.done), FAILED_ATTR: str(self.failed)}
        if self.best is not None:
            attributes[BEST_ATTR] = repr(float(self.best))
        attributes[RECORDS_ATTR] = classad_string("\n".join(kept))
        return attributes

    def recorded(self) -> list[ResultRecord]:
        return []  # earlier attempts' results.jsonl comes back in through the input sandbox

    def publish(self, records: list[ResultRecord]) -> None:
        if not records:
            return
        attributes = self.attributes(records)
        try:
            with self.client() as chirp:
                for name, value in attributes.items():
                    chirp.set_job_attr(name, value)
        except Exception as error:  # no chirp (not in a job, WantIOProxy off): progress waits for the sandbox
            sys.stderr.write(f"hpscan: chirp unavailable, progress comes with the output sandbox ({error})\n")


def open_channel(shard_file: Path) -> ChirpChannel:
    """The channel of ``hpscan shard-run --channel htcondor`` for a shard file (its objective decides which value
    is best). A missing htchirp is an error here, at the start, not a silent loss of live progress later."""
    try:
        import htchirp  # noqa: F401
    except ImportError:
        raise BackendError("--channel htcondor needs the htchirp package: pip install 'hpscan[job]'") from None
    try:
        return ChirpChannel(ShardFile.model_validate_json(shard_file.read_bytes()).objective)
    except (OSError, ValidationError) as error:
        raise BackendError(f"{shard_file}: not a readable shard file ({error})") from None
