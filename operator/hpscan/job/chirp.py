"""The HTCondor live channel, inside a grid job: progress and the newest records as job attributes, via chirp.

The job never needs an inbound connection: the shard runner sets attributes on its own job ad through the
starter's chirp proxy (``+WantIOProxy = true``), and the operator's poller reads them (``chirped_records``). Every
record the job made is on its ad, in numbered pages (``HPScanRecords0``, ``HPScanRecords1``, ...) that each fit one
chirp line, so an operator that restarts while the job runs gets all of them back; the full results.jsonl still
comes back in the output sandbox.

A worker that pulls trials (ShardFile.pull) reads its trials and stop requests the same way, the other way round:
the operator edits ``HPScanTrials`` and ``HPScanStops`` on the job's ad at the schedd (each the worker's whole
trials.jsonl / stop.jsonl so far, as one ClassAd string of JSON lines), and the job reads them back with chirp's
get_job_attr; its per-epoch reports go out as ``HPScanProgress``. docs/htcondor.md says how late each arrives.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, unquote

from pydantic import ValidationError

from hpscan.api.contract import CHECKPOINTS_DIR, Objective, ResultRecord, ShardFile, parse_records
from hpscan.api.trials import Progress
from hpscan.errors import BackendError

# Job attributes the shard runner sets through chirp while the job runs.
DONE_ATTR = "HPScanDone"
FAILED_ATTR = "HPScanFailed"
BEST_ATTR = "HPScanBest"
RECORDS_ATTR = "HPScanRecords"
"""The prefix of the job's record pages: HPScanRecords0, HPScanRecords1, ... (record_page_attr)."""
RECORD_PAGES_ATTR = "HPScanRecordPages"
"""How many record pages the job has set. Only the newest page grows; the ones before it never change."""
PROGRESS_ATTR = "HPScanProgress"
"""Set by a pulling worker: its newest per-epoch reports (JSON lines of hpscan.api.trials.Progress)."""
# Set by the operator on a pulling worker's job ad (schedd edit), read by the job with chirp get_job_attr.
TRIALS_ATTR = "HPScanTrials"
"""The worker's trials.jsonl lines so far (trials handed out, withdrawn, the end), one ClassAd string."""
STOPS_ATTR = "HPScanStops"
"""The worker's stop.jsonl lines so far (trials to stop at their next epoch boundary)."""

CHIRP_LINE_MAX = 5120
"""Longest chirp command line (htchirp refuses longer ones): bounds the records one update carries."""


def record_page_attr(page: int) -> str:
    """The attribute of record page ``page`` (JSON lines of records, one chirp line at most)."""
    return f"{RECORDS_ATTR}{page}"


def classad_string(value: str) -> str:
    """A ClassAd string literal (for +Attr lines and chirp values)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


_SAFE = "".join(chr(c) for c in range(32, 127) if chr(c) not in '%"\\')


def lines_value(lines: Sequence[str]) -> str:
    """The ClassAd string literal of an attribute that holds lines (JSON lines), percent-encoded where a schedd
    would change them: it parses edited and chirped values in the old ClassAd syntax, where only \\" is an
    escape (a \\n or \\\\ stays two characters: seen on the test pool), so %, ", backslash and newlines go as %XX."""
    return classad_string(quote("\n".join(lines), safe=_SAFE))


def value_lines(value: object) -> list[str]:
    """The lines of an attribute set with lines_value, from its evaluated value (a job ad's) or None."""
    return unquote(value).splitlines() if isinstance(value, str) else []


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "\\": "\\", '"': '"', "'": "'", "/": "/"}


def classad_string_value(expression: str) -> str | None:
    """The value of a ClassAd string literal as HTCondor unparses it (chirp's get_job_attr answers with the
    expression's text): quotes, backslash escapes and octal escapes (non-ASCII bytes) undone. None when the
    expression is not a string literal (UNDEFINED: the attribute was never set)."""
    text = expression.strip()
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return None
    out = bytearray()
    body, index = text[1:-1], 0
    while index < len(body):
        char = body[index]
        if char != "\\" or index + 1 == len(body):
            out += char.encode()
            index += 1
            continue
        following = body[index + 1]
        if following in "01234567":  # \ooo: one byte
            end = index + 1
            while end < min(len(body), index + 4) and body[end] in "01234567":
                end += 1
            out.append(int(body[index + 1 : end], 8) & 0xFF)
            index = end
        else:
            out += _ESCAPES.get(following, following).encode()
            index += 2
    return out.decode(errors="replace")


def classad_value_int(expression: str) -> int:
    """An integer attribute as chirp's get_job_attr answers (its expression's text); 0 when unset or not one."""
    text = expression.strip()
    return int(text) if text.isdigit() else 0


def json_object_lines(lines: Sequence[str]) -> list[dict]:
    """The JSON objects among lines (an attribute's, see value_lines); other lines are skipped."""
    out = []
    for line in lines:
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


def chirped_progress(text: object) -> list[Progress]:
    """The per-epoch reports a pulling worker chirped (its HPScanProgress attribute); foreign lines skipped."""
    out = []
    for line in json_object_lines(value_lines(text)):
        try:
            out.append(Progress.model_validate(line))
        except ValidationError:
            continue
    return out


def chirped_records(text: object) -> list[ResultRecord]:
    """The records on one record page a job chirped (the value of its HPScanRecords<N> attribute). A torn or
    foreign line is skipped: the sandbox copy is read again at the end."""
    return parse_records(value_lines(text))[0]


class ChirpClient(Protocol):
    """The part of ``htchirp.HTChirp`` the channel uses: a context manager that connects, and set_job_attr."""

    def __enter__(self) -> ChirpClient: ...

    def __exit__(self, *args: object) -> Any: ...

    def set_job_attr(self, job_attribute: str, attribute_value: str) -> None: ...

    def get_job_attr(self, job_attribute: str) -> str: ...


class ChirpFiles(Protocol):
    """The part of ``htchirp.HTChirp`` that writes files at the access point, relative to the job's initialdir."""

    def mkdir(self, remote_path: str, mode: int | None = None) -> None: ...

    def putfile(self, local_file: str, remote_file: str, mode: int | None = None) -> int: ...

    def rmall(self, remote_path: str) -> None: ...

    def rename(self, old_path: str, new_path: str) -> None: ...


def send_folders(chirp: ChirpFiles, root: Path, remote: str) -> list[str]:
    """Copy each visible folder under ``root`` to ``remote/<name>/`` at the access point, each whole or not at all
    (written beside as ``.<name>.chirp``, then renamed over the old one; a hidden partial is left out by whoever
    reads the folder). Returns the names sent; raises what chirp raises."""
    folders = [p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")] if root.is_dir() else []
    if folders:
        _quietly(chirp.mkdir, remote)  # exists already: the sandbox's own
    for folder in folders:
        partial = f"{remote}/.{folder.name}.chirp"
        _quietly(chirp.rmall, partial)
        chirp.mkdir(partial)
        for path in sorted(folder.rglob("*")):
            target = f"{partial}/{path.relative_to(folder).as_posix()}"
            chirp.mkdir(target) if path.is_dir() else chirp.putfile(str(path), target)
        _quietly(chirp.rmall, f"{remote}/{folder.name}")
        chirp.rename(partial, f"{remote}/{folder.name}")
    return [folder.name for folder in folders]


def _quietly(call: Callable[[str], object], path: str) -> None:
    """A chirp call whose refusal means it is done already (a folder that exists, or is gone: htchirp's
    AlreadyExists, DoesntExist); a lost connection fails the next call instead."""
    with contextlib.suppress(Exception):  # htchirp's errors derive from Exception only
        call(path)


def chirp_line_length(attribute: str, value: str) -> int:
    """Bytes of ``set_job_attr ATTR VALUE`` on the wire (chirp escapes backslash and whitespace)."""
    escaped = sum(value.count(c) for c in "\\ \n\t\r")
    return len("set_job_attr ") + len(attribute) + 1 + len(value.encode()) + escaped + 1


def _htchirp_client() -> Any:
    import htchirp

    return htchirp.HTChirp()


class ChirpChannel:
    """A LiveChannel for jobs: sets HPScanDone, HPScanFailed, HPScanBest and every record, in record pages
    (HPScanRecords0, 1, ...: JSON lines, each page within one chirp line; HPScanRecordPages says how many) on the
    job's ad. Each publish sets only the pages that changed (the newest, and any a failed publish left unset). A
    chirp failure is reported on stderr and never stops the payload: the records still come back in the output
    sandbox.

    Also a PullChannel (hpscan.job.runner) for workers that pull trials: ``inbox`` reads HPScanTrials and
    HPScanStops, ``publish_progress`` sets HPScanProgress."""

    def __init__(self, objective: Objective, client: Callable[[], ChirpClient] = _htchirp_client) -> None:
        self.objective = objective
        self.client = client
        self.done = 0
        self.failed = 0
        self.best: float | None = None
        self.pages: list[list[str]] = []  # the JSON lines of each record page
        self.unsent: set[int] = set()  # pages changed since they were last set on the ad
        self.earlier_read = False  # whether the pages of earlier attempts were read back (recorded)
        self.waiting: list[ResultRecord] = []  # records held until they are: never set pages over earlier ones
        self.inbox_lines: tuple[list[dict], list[dict]] = ([], [])  # the last lists read (both only grow)
        self.progress_lines: list[tuple[str, str]] = []  # (trial id, JSON line) of the reports HPScanProgress holds

    def _better(self, value: float) -> bool:
        if self.best is None:
            return True
        return value < self.best if self.objective.goal == "minimize" else value > self.best

    def _count(self, record: ResultRecord) -> None:
        self.done += 1
        self.failed += record.status == "failed"
        value = record.objective_value(self.objective)
        if value is not None and self._better(value):
            self.best = value

    def _fits(self, page: int, lines: list[str]) -> bool:
        return chirp_line_length(record_page_attr(page), lines_value(lines)) <= CHIRP_LINE_MAX

    def attributes(self, records: list[ResultRecord]) -> dict[str, str]:
        """Fold new records in; the job attributes to set, as ClassAd expressions, in the order to set them: the
        changed pages, the page count, then HPScanDone (a reader that sees a count finds its records on the pages)."""
        for record in records:
            self._count(record)
            line = json.dumps(record.to_wire(), separators=(",", ":"))
            if self.pages and self._fits(len(self.pages) - 1, [*self.pages[-1], line]):
                self.pages[-1].append(line)
            elif self._fits(len(self.pages), [line]):
                self.pages.append([line])
            else:  # longer than a chirp line alone: it comes with the output sandbox
                sys.stderr.write(f"hpscan: record {record.id} is too long for a chirp line; it comes at the end\n")
                continue
            self.unsent.add(len(self.pages) - 1)
        attributes = {record_page_attr(page): lines_value(self.pages[page]) for page in sorted(self.unsent)}
        attributes[RECORD_PAGES_ATTR] = str(len(self.pages))
        attributes |= {DONE_ATTR: str(self.done), FAILED_ATTR: str(self.failed)}
        if self.best is not None:
            attributes[BEST_ATTR] = repr(float(self.best))
        return attributes

    def recorded(self) -> list[ResultRecord]:
        """The records earlier attempts of this job set on its ad (a retried job keeps its ad): this attempt's
        records go on the pages after them instead of over them. When chirp does not answer: none, and a word on
        stderr; publish then reads them first, and holds this attempt's records until it could (pages written
        over the earlier ones would lose their records for an operator that restarts, and could leave HPScanDone
        at a value it had, so that no reader looks at the pages again)."""
        try:
            with self.client() as chirp:
                count = classad_value_int(chirp.get_job_attr(RECORD_PAGES_ATTR))
                texts = [classad_string_value(chirp.get_job_attr(record_page_attr(p))) for p in range(count)]
        except Exception as error:
            sys.stderr.write(f"hpscan: chirp unavailable, earlier attempts' records not read back ({error})\n")
            return []
        self.pages = [value_lines(text) for text in texts]
        self.earlier_read = True
        records = parse_records([line for page in self.pages for line in page])[0]
        for record in records:
            self._count(record)
        return records

    def inbox(self) -> tuple[list[dict], list[dict]]:
        """Every trials.jsonl and stop.jsonl line the operator set on this job's ad so far. When chirp does not
        answer, the lines read last time (the worker goes on with what it holds) and a word on stderr."""
        try:
            with self.client() as chirp:
                texts = [classad_string_value(chirp.get_job_attr(name)) for name in (TRIALS_ATTR, STOPS_ATTR)]
        except Exception as error:  # the starter's proxy is away a while: the next call asks again
            sys.stderr.write(f"hpscan: chirp unavailable, no new trials or stop requests for now ({error})\n")
            return self.inbox_lines
        trials, stops = (json_object_lines(value_lines(text)) for text in texts)
        # The operator only appends; a shorter list is an older copy of the ad (the shadow's lags the schedd's).
        if len(trials) >= len(self.inbox_lines[0]) and len(stops) >= len(self.inbox_lines[1]):
            self.inbox_lines = (trials, stops)
        return self.inbox_lines

    def progress_value(self, reports: Sequence[Progress]) -> str:
        """Fold new per-epoch reports in; the HPScanProgress value (a ClassAd string of JSON lines): the newest
        epoch of every trial in ``reports`` first, then the newest of the earlier reports, as many as fit one
        chirp line (the operator's pruner needs a trial's latest epoch; older ones it may have seen already)."""
        entries = [*self.progress_lines, *((r.id, json.dumps(r.to_wire(), separators=(",", ":"))) for r in reports)]
        newest = {trial: i for i, (trial, _) in enumerate(entries) if i >= len(self.progress_lines)}
        first = sorted(newest.values(), reverse=True)
        kept: list[int] = []
        for index in [*first, *(i for i in reversed(range(len(entries))) if i not in newest.values())]:
            candidate = sorted([*kept, index])
            if chirp_line_length(PROGRESS_ATTR, self._lines_value(entries, candidate)) <= CHIRP_LINE_MAX:
                kept = candidate
        self.progress_lines = [entries[i] for i in kept]
        return self._lines_value(entries, kept)

    @staticmethod
    def _lines_value(entries: Sequence[tuple[str, str]], indices: Sequence[int]) -> str:
        return lines_value([entries[i][1] for i in indices])

    def publish_progress(self, reports: list[Progress]) -> None:
        if not reports:
            return
        value = self.progress_value(reports)
        try:
            with self.client() as chirp:
                chirp.set_job_attr(PROGRESS_ATTR, value)
        except Exception as error:  # early stopping waits for the next report; the trial's record still comes
            sys.stderr.write(f"hpscan: chirp unavailable, per-epoch progress waits ({error})\n")

    def publish(self, records: list[ResultRecord]) -> None:
        """Set new records on the ad, and what a failed publish left; called every poll, often with none."""
        self.waiting += records
        if not self.earlier_read:
            self.recorded()
            if not self.earlier_read:
                return  # the earlier pages first; the records wait (they are in results.jsonl meanwhile)
        records, self.waiting = self.waiting, []
        if not records and not self.unsent:
            return
        attributes = self.attributes(records)
        pages = {record_page_attr(page): page for page in self.unsent}
        try:
            with self.client() as chirp:
                for name, value in attributes.items():
                    chirp.set_job_attr(name, value)
                    self.unsent.discard(pages.get(name, -1))  # a page not set goes again with the next publish
        except Exception as error:  # no chirp (not in a job, WantIOProxy off): progress waits for the sandbox
            sys.stderr.write(f"hpscan: chirp unavailable, progress comes with the output sandbox ({error})\n")

    def send_checkpoints(self, folder: Path) -> None:
        """A job stopped by SIGTERM sends its trials' checkpoints (OUT/checkpoints/) to ``checkpoints/`` in its
        initialdir at the access point: a job hpscan removes (a move, a suspend) gets no output transfer, and from
        there the operator carries them to the shard's next site through the scan's store
        (backends/sandbox_checkpoints.py). An evicted job's spool brings them to its next slot anyway. Never raises:
        without them the trials start at epoch 0 at the next site."""
        try:
            with self.client() as chirp:
                sent = send_folders(chirp, folder, CHECKPOINTS_DIR)  # type: ignore[arg-type]
        except Exception as error:
            sys.stderr.write(f"hpscan: could not send the trials' checkpoints through chirp ({error})\n")
        else:
            if sent:
                sys.stderr.write(f"hpscan: sent the checkpoints of {', '.join(sent)} to the access point\n")


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
