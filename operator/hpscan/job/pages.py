"""What a shard's record pages hold on Kubernetes: their keys, how a shard file is laid out over them, how records
go in and come back out. Pure: the pod's channel (hpscan.job.configmap) and the operator's Kubernetes backend both
read and write the pages through these functions.

A shard's mailbox is a row of ConfigMaps, its *pages*: ``<base>-p0``, ``<base>-p1``, ... Each page holds a slice of
the shard file's combinations (key ``page.json``: its number, how many pages the shard has, its combinations) and
one key per record of those combinations, named by the combination id, so concurrent patches never conflict and a
retried pod starts from what earlier attempts recorded. Page 0 also holds the rest of the shard file (key
``shard.json``: the file with no combinations). A record goes to the page that holds its combination, a pure
function of its id and the pages. A pulling worker's inbox (``<base>-in``) holds the trials handed to it, the
stops and its per-epoch reports.

Why pages: one object per shard passes etcd's object limit (1 MiB; hpscan keeps every object under 512 KiB) near
2,400 records, and its shard file alone near 7,000 combinations. The operator sizes pages so that one full of
records stays under the limit (hpscan.backends.kubernetes.page_layout), and a record may take at most
its combination's size plus RECORD_ROOM in its page (``fit_record``: a longer error string is cut, then metrics
other than the objectives and their errors go; the full record stays in the pod's results.jsonl).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hpscan.api.contract import Combination, ResultRecord, ShardFile, parse_record
from hpscan.api.trials import Assignment

SHARD_KEY = "shard.json"
"""Page 0's key holding the shard file without its combinations (the header: scan, objective, settings, ...)."""
PAGE_KEY = "page.json"
"""Every page's key holding its number, the shard's page count and its slice of combinations."""
INBOX_SUFFIX = "-in"
"""A pulling worker's inbox is ``<base>-in``: the trials handed to it, the stops, and its per-epoch reports."""
TRIALS_KEY, STOPS_KEY, PROGRESS_KEY = "trials.jsonl", "stop.jsonl", "progress.jsonl"
PAGE_SIZE_KEY = "pageSize.json"
"""The inbox's keys: trials.jsonl and stop.jsonl (the operator appends; hpscan.api.trials lines), progress.jsonl
(the pod's newest per-epoch reports), pageSize.json (trials per record page: trial_pages)."""
PROGRESS_LINES = 200
"""Reports the inbox keeps (the newest): about 20 KiB. The operator reads them whenever they change; a report it
missed only makes early stopping judge a trial a little later."""
RESERVED_KEYS = frozenset({SHARD_KEY, PAGE_KEY, TRIALS_KEY, STOPS_KEY, PROGRESS_KEY, PAGE_SIZE_KEY})
"""Keys that are not records (combination ids never end in .json or .jsonl)."""

RECORD_ROOM = 2048
"""Bytes a record may take in its page beyond its combination's id and parameters (stored size, see
stored_size): metrics, status, times, device and an error of some 300 characters. A dl1 record with its physics
(rejections and their errors at eight working points, the network's cost: dl1.record_metrics) takes about 1,530
bytes, 1,420 beyond its parameters (measured: `dl1 train-shard` on a two-layer scan); 512 held only the losses
(420 bytes in all). A page then holds about 160 records instead of 500."""


def stored_size(text: str) -> int:
    """The bytes a string takes as a value in the object's JSON (quotes and escapes counted): what the API server
    stores and sends, and what a page's budget counts."""
    return len(json.dumps(text))


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def page_name(base: str, page: int) -> str:
    """``<base>-p<page>``: the operator names a shard's pages so, and the pod finds them so."""
    return f"{base}-p{page}"


def split_shard_file(
    shard_file: ShardFile, page_size: int, held: Mapping[int, Mapping[str, str]] | None = None
) -> list[dict[str, str]]:
    """The data of each page of a shard (its PAGE_KEY, and page 0's SHARD_KEY: the header, the shard file without
    combinations): ``page_size`` combinations a page, in shard order, at least one page.

    ``held``: the data of the shard's pages that exist already, by page (an earlier attempt's, or those of a shard
    moved back here). Their records stay where they are and the pages list only ``shard_file``'s combinations
    (what is left to train), each page at most ``page_size`` entries, records and listed combinations together
    (the room page_layout sizes a page for): a combination stays on the page that holds its record or lists it,
    the others fill free room in page order, then new pages. The count never shrinks: no page with records is
    left out."""
    if page_size < 1:
        raise ValueError(f"a page must hold at least one combination (page_size={page_size})")
    held = held or {}
    taken: list[set[str]] = [set() for _ in range(max(held, default=-1) + 1)]  # ids with a place on each page
    home: dict[str, int] = {}  # where a combination is listed now, or recorded
    for page, data in held.items():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            home.update((str(c["id"]), page) for c in json.loads(data[PAGE_KEY])["combinations"])
        recorded = {key for key in data if key not in RESERVED_KEYS}
        home.update(dict.fromkeys(recorded, page))
        taken[page] = recorded
    listed: list[list[Combination]] = [[] for _ in taken]
    others, free = [], 0
    for combination in shard_file.combinations:
        at = home.get(combination.id)
        if at is not None and (combination.id in taken[at] or len(taken[at]) < page_size):
            listed[at].append(combination)
            taken[at].add(combination.id)
        else:
            others.append(combination)
    for combination in others:
        while free < len(taken) and len(taken[free]) >= page_size:
            free += 1  # pages only fill: one full now stays full
        if free == len(taken):
            taken.append(set())
            listed.append([])
        listed[free].append(combination)
        taken[free].add(combination.id)
    listed = listed or [[]]
    pages = [
        {
            PAGE_KEY: compact(
                {"page": page, "pages": len(listed), "combinations": [c.model_dump(mode="json") for c in cs]}
            )
        }
        for page, cs in enumerate(listed)
    ]
    header = shard_file.model_copy(update={"combinations": []})
    pages[0][SHARD_KEY] = header.model_dump_json(by_alias=True, exclude_none=True)
    return pages


@dataclass
class ShardPages:
    """What a shard's pages hold: the shard file they carry, which page holds each combination, the records
    recorded so far and how many entries could not be read as records."""

    shard_file: ShardFile
    page_of: dict[str, int] = field(default_factory=dict)
    records: list[ResultRecord] = field(default_factory=list)
    unreadable: int = 0


def join_pages(read_page: Callable[[int], Mapping[str, str] | None]) -> ShardPages:
    """Read page 0, then every other page it announces, and put the shard back together. ``read_page(k)`` returns
    page k's data (None: the page is missing). Raises ValueError naming the page that is missing or inconsistent."""
    first = read_page(0)
    if not first or SHARD_KEY not in first or PAGE_KEY not in first:
        raise ValueError(f"page 0 is missing or holds no {SHARD_KEY} and {PAGE_KEY}")
    try:
        header = ShardFile.model_validate_json(first[SHARD_KEY])
        count = int(json.loads(first[PAGE_KEY])["pages"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"page 0 cannot be read: {error}") from None
    combinations: list[Combination] = []
    found = ShardPages(header)
    for page in range(count):
        data = first if page == 0 else read_page(page)
        if data is None:
            raise ValueError(f"page {page} of {count} is missing")
        try:
            slice_ = json.loads(data[PAGE_KEY])
            held = [Combination.model_validate(c) for c in slice_["combinations"]]
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"page {page} of {count} cannot be read: {error}") from None
        if (slice_.get("page"), slice_.get("pages")) != (page, count):
            raise ValueError(f"page {page} of {count} says it is page {slice_.get('page')} of {slice_.get('pages')}")
        combinations += held
        found.page_of.update((c.id, page) for c in held)
        records, unreadable = records_of(data)
        found.records += records
        found.unreadable += unreadable
    found.shard_file = header.model_copy(update={"combinations": combinations})
    return found


def inbox_name(base: str) -> str:
    return base + INBOX_SUFFIX


def json_lines(text: str | None) -> list[dict]:
    """The JSON-object lines of an inbox key (a line that is not one is skipped)."""
    out = []
    for line in (text or "").splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


def pulled_trials(data: Mapping[str, str] | None) -> list[Combination]:
    """The trials an inbox handed out, in hand-out order (withdrawn ones too: their place fixes later pages)."""
    out = []
    for line in json_lines((data or {}).get(TRIALS_KEY)):
        if "trial" in line:
            try:
                out.append(Combination.model_validate(line["trial"]))
            except ValueError:
                continue
    return out


def trial_pages(trials: Sequence[Combination], page_size: int) -> dict[str, int]:
    """The record page of each trial handed to a worker (``trials``: pulled_trials): its place among the distinct
    trials it was handed, in hand-out order, // page_size. A trial handed to it again keeps its first place: a
    worker never holds more distinct trials than the scan's budget, which the pods' Role counts its pages from."""
    pages: dict[str, int] = {}
    for trial in trials:
        pages.setdefault(trial.id, len(pages) // page_size if page_size else 0)
    return pages


def trial_page_count(trials: Sequence[Combination], page_size: int) -> int:
    """How many record pages a worker's trials fill (at least page 0, which the shard's Job comes with)."""
    return max(trial_pages(trials, page_size).values(), default=0) + 1


def inbox_assignment(data: Mapping[str, str] | None) -> Assignment:
    """What an inbox says its worker was handed (the operator rebuilds its search from these)."""
    assignment = Assignment()
    assignment.fold(json_lines((data or {}).get(TRIALS_KEY)))
    return assignment


def unrecorded(shard_configmaps: Iterable[Mapping[str, str]]) -> set[str]:
    """The ids a shard's pages and inbox (their data) hand out, listed on a page or handed to its worker and not
    withdrawn, that none of its pages holds a record of. A shard ConfigMap of the layout before pages (one per
    shard, its whole shard file under SHARD_KEY: docs/upgrades.md) hands out the combinations of that file."""
    handed: set[str] = set()
    recorded: set[str] = set()
    for data in shard_configmaps:
        with contextlib.suppress(ValueError, KeyError, TypeError):  # an inbox, or a page that cannot be read
            handed.update(str(c["id"]) for c in json.loads(data[PAGE_KEY])["combinations"])
        with contextlib.suppress(ValueError, KeyError, TypeError):  # page 0's header lists none
            handed.update(str(c["id"]) for c in json.loads(data[SHARD_KEY])["combinations"])
        handed.update(inbox_assignment(data).trials)
        recorded.update(key for key in data if key not in RESERVED_KEYS)
    return handed - recorded


def records_of(data: Mapping[str, str] | None) -> tuple[list[ResultRecord], int]:
    """The records a page's data holds, and how many entries could not be read (one bad key never hides the
    rest)."""
    records, unreadable = [], 0
    for key, value in (data or {}).items():
        if key in RESERVED_KEYS:
            continue
        try:
            records.append(parse_record(value))
        except ValueError:
            unreadable += 1
    return records, unreadable


def record_patch(records: Sequence[ResultRecord]) -> dict[str, Any]:
    """The merge patch that adds records to a page: one key per id, so patches never conflict."""
    return {"data": {r.id: compact(r.to_wire()) for r in records}}


def record_limit(combination: Combination) -> int:
    """The stored size a record of this combination may take in its page (what the operator's page budget
    allows it: the combination's own size, which holds the record's id and parameters, plus RECORD_ROOM)."""
    return stored_size(compact(combination.model_dump(mode="json"))) + RECORD_ROOM


def fit_record(record: ResultRecord, limit: int, keep: str | Collection[str]) -> ResultRecord:
    """The record as it goes into its page: itself when it fits ``limit``; else its error cut to fit, then its
    metrics cut to those in ``keep`` (the objective metrics and their errors: ShardFile.ranked_metrics), then its
    device left out."""
    keep = {keep} if isinstance(keep, str) else set(keep)

    def size(r: ResultRecord) -> int:
        return stored_size(compact(r.to_wire()))

    if size(record) <= limit:
        return record
    if record.error:  # the longest head of the error that fits, and how long it was
        error, marker = record.error, f" [cut from {len(record.error):,} characters]"
        lo, hi = 0, len(error)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if size(record.model_copy(update={"error": error[:mid] + marker})) <= limit:
                lo = mid
            else:
                hi = mid - 1
        record = record.model_copy(update={"error": error[:lo] + marker})
        if size(record) <= limit:
            return record
    kept = {k: v for k, v in record.metrics.items() if k in keep}
    record = record.model_copy(update={"metrics": kept})
    if size(record) <= limit:
        return record
    return record.model_copy(update={"device": None})
