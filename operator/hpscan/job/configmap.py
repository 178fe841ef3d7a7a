"""The Kubernetes live channel, inside a shard pod: the shard's record pages.

A shard's mailbox is a row of ConfigMaps, its *pages*: ``<base>-p0``, ``<base>-p1``, ... (base: HPSCAN_CONFIGMAP,
set by the shard's Job), which the operator creates with the Job. Each page holds a slice of the shard file's
combinations (key ``page.json``: its number, how many pages the shard has, its combinations) and one key per record
of those combinations, named by the combination id, so concurrent patches never conflict and a retried pod starts
from what earlier attempts recorded. Page 0 also holds the rest of the shard file (key ``shard.json``: the file with
no combinations). A record goes to the page that holds its combination, a pure function of its id and the pages,
so the pod's Role names every page and grants get/patch on them only (never create). The operator's Kubernetes
backend reads the same keys back with ``records_of``.

Why pages: one object per shard passes etcd's object limit (1 MiB; hpscan keeps every object under 512 KiB) near
2,400 records, and its shard file alone near 7,000 combinations. The operator sizes pages so that one full of
records stays under the limit (hpscan.backends.kubernetes.manifests.page_layout), and a record may take at most
its combination's size plus RECORD_ROOM in its page (``fit_record``: a longer error string is cut, then metrics
other than the objective go; the full record stays in the pod's results.jsonl). The shard file is read from the
pages through the API, not mounted from them: a pod's spec then stays the same size at any shard size, and the
pod reads its pages once at start anyway for what earlier attempts recorded.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from hpscan.api.contract import Combination, ResultRecord, ShardFile, parse_record
from hpscan.api.trials import Assignment, Progress
from hpscan.errors import HPScanError

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

RECORD_ROOM = 512
"""Bytes a record may take in its page beyond its combination's id and parameters (stored size, see
stored_size): metrics, status, times, device and an error of some 300 characters (DL1 records take 420 bytes
in all, their parameters included)."""

RETRY_SECONDS, RETRY_MAX_SECONDS = 1.0, 30.0
"""After a failed patch the records wait this long before they are sent again, doubling up to the most."""
GIVE_UP_SECONDS = 600.0
"""How long the pages may refuse every patch before the shard runner gives the attempt up (the Job retries it)."""

T = TypeVar("T")

CONFIGMAP_ENV = "HPSCAN_CONFIGMAP"
NAMESPACE_ENV = "HPSCAN_NAMESPACE"
ACCOUNT_ENV = "HPSCAN_SERVICE_ACCOUNT"
"""The pod's ServiceAccount (the downward API's spec.serviceAccountName): who a refused request names."""
REQUEST_SECONDS = 30.0
"""A request the API server has not answered in this long is abandoned and tried again like a 5xx (without a
timeout, a connection that died silently would hang the pod for good)."""
"""Set on the shard's container by the Job: the pages' base name, and their namespace."""


def stored_size(text: str) -> int:
    """The bytes a string takes as a value in the object's JSON (quotes and escapes counted): what the API server
    stores and sends, and what a page's budget counts."""
    return len(json.dumps(text))


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def page_name(base: str, page: int) -> str:
    """``<base>-p<page>``: the operator names a shard's pages so, and the pod finds them so."""
    return f"{base}-p{page}"


def transient(error: Exception) -> bool:
    """Whether a request that failed so may succeed when sent again: the API server overloaded (429), failing
    (5xx), or not reached (a timeout, a lost connection)."""
    from kubernetes.client.rest import ApiException
    from urllib3.exceptions import HTTPError

    if isinstance(error, ApiException):
        return not error.status or error.status in (408, 429) or error.status >= 500
    return isinstance(error, HTTPError | OSError)


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
    withdrawn, that none of its pages holds a record of."""
    handed: set[str] = set()
    recorded: set[str] = set()
    for data in shard_configmaps:
        with contextlib.suppress(ValueError, KeyError, TypeError):  # an inbox, or a page that cannot be read
            handed.update(str(c["id"]) for c in json.loads(data[PAGE_KEY])["combinations"])
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


def fit_record(record: ResultRecord, limit: int, objective_metric: str) -> ResultRecord:
    """The record as it goes into its page: itself when it fits ``limit``; else its error cut to fit, then its
    metrics cut to the objective metric, then its device left out."""

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
    kept = {k: v for k, v in record.metrics.items() if k == objective_metric}
    record = record.model_copy(update={"metrics": kept})
    if size(record) <= limit:
        return record
    return record.model_copy(update={"device": None})


class ConfigMapChannel:
    """A LiveChannel that merge-patches each record into the page of the shard that holds its combination."""

    def __init__(
        self,
        configmap: str,
        namespace: str,
        api_client: Any = None,
        retry_seconds: float = RETRY_SECONDS,
        give_up_seconds: float = GIVE_UP_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from kubernetes import client, config

        if api_client is None:
            config.load_incluster_config()
        self.core = client.CoreV1Api(api_client)
        self.configmap, self.namespace = configmap, namespace
        self._clock = clock  # when a failed send may be tried again (a simulation's virtual time)
        self._pages: ShardPages | None = None
        self._combinations: dict[str, Combination] = {}
        self._pulled: list[Combination] = []  # a pulling worker's trials, in hand-out order
        self._page_size = 0
        self._reports: list[dict] = []
        self.unsent: dict[str, ResultRecord] = {}  # records a failed patch left, by id: sent with the next publish
        self._retry_seconds, self._give_up_seconds = retry_seconds, give_up_seconds
        self._delay = retry_seconds
        self._retry_at = 0.0
        self._failing_since: float | None = None
        self._earlier: list[ResultRecord] | None = None  # what start() read, for recorded()

    def _read_page(self, page: int) -> Mapping[str, str] | None:
        return self._read_page_named(page_name(self.configmap, page))

    def _refused(self, error: Exception, verb: str, what: str) -> Exception:
        """A refusal that retrying will not mend, as one line naming the verb, the object and who asked (an
        ApiException's text is its headers and body); any other error unchanged."""
        from kubernetes.client.rest import ApiException

        if not isinstance(error, ApiException):
            return error
        return HPScanError(refusal(error, verb, what, self.namespace))

    def _answered(self, read: Callable[[], T], what: str) -> T:
        """A read the attempt cannot start without, tried again while the API server fails transiently (with the
        publish back-off, for up to GIVE_UP_SECONDS): one 5xx or lost connection must not cost an attempt."""
        since, delay = self._clock(), self._retry_seconds
        while True:
            try:
                return read()
            except Exception as error:
                failing = self._clock() - since
                if not transient(error):
                    raise self._refused(error, "get", what) from None
                if failing >= self._give_up_seconds:
                    raise HPScanError(
                        f"could not read {what}: every try failed for {failing:.0f} s (last: {_said(error)})"
                    ) from None
                print(f"hpscan shard-run: could not read {what}, trying again in {delay:g} s: {_said(error)}",
                      file=sys.stderr)  # fmt: skip
            time.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_SECONDS)

    def pages(self) -> ShardPages:
        """The shard's pages, read once (the shard file and what earlier attempts recorded)."""
        if self._pages is None:
            try:
                self._pages = join_pages(self._read_page)
            except ValueError as error:  # a page missing (404) or unreadable: the operator's, not a transient
                raise HPScanError(
                    f"the shard's pages {self.namespace}/{page_name(self.configmap, 0)}, ...: {error}"
                ) from None
            self._combinations = {c.id: c for c in self._pages.shard_file.combinations}
        return self._pages

    def start(self) -> None:
        """The pod's first reads (its pages, what earlier attempts recorded), tried again while the API server fails
        transiently; ``recorded()`` then hands over what was read. ``open_channel`` calls it."""
        self._answered(self.pages, f"{page_name(self.configmap, 0)} (the shard's pages)")
        self._earlier = self._answered(self.recorded, f"{self.configmap}-p* (what earlier attempts recorded)")

    def recorded(self) -> list[ResultRecord]:
        """What earlier attempts recorded (a retried pod starts from these; a pulling worker's are on every page
        its trials so far fill)."""
        if self._earlier is not None:
            earlier, self._earlier = self._earlier, None
            return earlier
        pages = self.pages()
        if not pages.shard_file.pull:
            return pages.records
        self.inbox()
        records = list(pages.records)
        for page in range(1, trial_page_count(self._pulled, self._page_size)):
            records += records_of(self._read_page(page))[0]
        return records

    # a worker that pulls (ShardFile.pull): its inbox ---------------------------------------------------------

    def _read_inbox(self) -> Mapping[str, str]:
        found = self._read_page_named(inbox_name(self.configmap))
        if found is None:
            raise HPScanError(f"the worker's inbox {self.namespace}/{inbox_name(self.configmap)} does not exist")
        return found

    def _read_page_named(self, name: str) -> Mapping[str, str] | None:
        """A ConfigMap's data, or None when it does not exist."""
        from kubernetes.client.rest import ApiException

        try:
            return (
                self.core.read_namespaced_config_map(name, self.namespace, _request_timeout=REQUEST_SECONDS).data or {}
            )
        except ApiException as error:
            if error.status == 404:
                return None
            if transient(error):
                raise
            raise self._refused(error, "get", name) from None

    def inbox(self) -> tuple[list[dict], list[dict]]:
        """Every trials.jsonl and stop.jsonl line the operator wrote into this worker's inbox (PullChannel)."""
        data = self._read_inbox()
        self._pulled = pulled_trials(data)
        self._combinations.update((c.id, c) for c in self._pulled)
        self._page_size = int(json.loads(data.get(PAGE_SIZE_KEY) or "0") or 0)
        return json_lines(data.get(TRIALS_KEY)), json_lines(data.get(STOPS_KEY))

    def publish_progress(self, reports: list[Progress]) -> None:
        """Keep the newest PROGRESS_LINES per-epoch reports in the inbox (the operator's early stopping reads
        them)."""
        self._reports = (self._reports + [r.to_wire() for r in reports])[-PROGRESS_LINES:]
        text = "".join(compact(r) + "\n" for r in self._reports)
        name = inbox_name(self.configmap)
        try:
            self.core.patch_namespaced_config_map(
                name, self.namespace, {"data": {PROGRESS_KEY: text}}, _request_timeout=REQUEST_SECONDS
            )
        except Exception as error:
            raise self._refused(error, "patch", name) from None

    def _page_of_pulled(self, trial_id: str) -> int | None:
        return trial_pages(self._pulled, self._page_size).get(trial_id)

    def publish(self, records: list[ResultRecord]) -> None:
        """Patch new records, and those a failed patch left, into their pages. A transient failure keeps them for
        the next call (the runner calls every poll); one that lasts GIVE_UP_SECONDS, or a refusal that retrying
        will not mend (403, 404), raises HPScanError: the attempt ends and the Job retries it."""
        self.unsent.update((r.id, r) for r in records)
        if self.unsent and self._clock() >= self._retry_at:
            self._send_unsent()

    def flush(self) -> None:
        """Send what is unsent, waiting between tries (the payload has ended: its last records must not be lost);
        raises HPScanError as publish does."""
        while self.unsent:
            time.sleep(max(0.0, self._retry_at - self._clock()))
            self._send_unsent()

    def _send_unsent(self) -> None:
        from kubernetes.client.rest import ApiException
        from urllib3.exceptions import HTTPError

        held, name = len(self.unsent), inbox_name(self.configmap)
        try:
            for page, fitted in sorted(self._by_page(list(self.unsent.values())).items()):
                name = page_name(self.configmap, page)
                self.core.patch_namespaced_config_map(
                    name, self.namespace, record_patch(fitted), _request_timeout=REQUEST_SECONDS
                )
                for record in fitted:
                    self.unsent.pop(record.id, None)
        except (ApiException, HTTPError, OSError, HPScanError) as error:  # HPScanError: the inbox is missing
            self._failed(name, held, error)
            return
        self._failing_since, self._delay = None, self._retry_seconds

    def _failed(self, name: str, held: int, error: Exception) -> None:
        now = self._clock()
        self._failing_since = self._failing_since if self._failing_since is not None else now
        what = f"could not publish {held} record(s) to {name} (they are in results.jsonl)"
        failing = now - self._failing_since
        if not transient(error):
            refused = self._refused(error, "patch", name)
            raise HPScanError(f"could not publish {held} record(s) (they are in results.jsonl): {refused}") from None
        if failing >= self._give_up_seconds:
            raise HPScanError(f"{what}: every try failed for {failing:.0f} s (last: {_said(error)})") from None
        print(f"hpscan shard-run: {what}, trying again in {self._delay:g} s: {_said(error)}", file=sys.stderr)
        self._retry_at = now + self._delay
        self._delay = min(self._delay * 2, RETRY_MAX_SECONDS)

    def _by_page(self, records: list[ResultRecord]) -> dict[int, list[ResultRecord]]:
        """Records as they go into their pages (fitted to their room), by page; a record of no combination of this
        shard is dropped with a word (the operator would not fold it either)."""
        pages = self.pages()
        if pages.shard_file.pull and any(self._page_of_pulled(r.id) is None for r in records):
            self.inbox()  # handed out since the bridge last looked
        by_page: dict[int, list[ResultRecord]] = {}
        for record in records:
            page = pages.page_of.get(record.id)
            if page is None and pages.shard_file.pull:
                page = self._page_of_pulled(record.id)
            if page is None:
                print(f"hpscan shard-run: record {record.id!r} is not a combination of this shard: not published",
                      file=sys.stderr)  # fmt: skip
                self.unsent.pop(record.id, None)
                continue
            limit = record_limit(self._combinations[record.id])
            by_page.setdefault(page, []).append(fit_record(record, limit, pages.shard_file.objective.metric))
        return by_page


def identity(namespace: str) -> str:
    """Who the pod's requests come from, as the API server names it in its RBAC decisions."""
    account = os.environ.get(ACCOUNT_ENV)
    return f"system:serviceaccount:{namespace}:{account}" if account else "this pod's ServiceAccount"


def refusal(error: Any, verb: str, name: str, namespace: str) -> str:
    """An API server's refusal in one line: who may not do what to which object, and what to look at. The Status
    body's own message is kept where it adds to that (not for 401/403/404, whose words these lines already say)."""
    status, reason = getattr(error, "status", None), getattr(error, "reason", "") or ""
    message = ""
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        message = str(json.loads(getattr(error, "body", None) or "{}").get("message") or "")
    what = f"ConfigMap {namespace}/{name}"
    who = identity(namespace)
    if status == 401:
        return f"the Kubernetes API did not accept the token of {who} to {verb} {what} (401 {reason})"
    if status == 403:
        return (
            f"{who} may not {verb} {what} (403 {reason}): the scan's Role grants it to the scan's account and to the "
            "site's serviceAccountName; is the pod running under another account, or was the RoleBinding removed?"
        )
    if status == 404:
        return f"{what} does not exist (404 {reason}) for {who} to {verb}: was the HPScan deleted?"
    said = f"{status} {reason}".strip()
    return f"the Kubernetes API refused to {verb} {what} for {who} ({said})" + (f": {message[:200]}" if message else "")


def _said(error: Exception) -> str:
    """An API error in one line: its status and reason (an ApiException's text holds its headers and body)."""
    status = getattr(error, "status", None)
    return f"{status} {getattr(error, 'reason', '')}".strip() if status else str(error) or type(error).__name__


def open_channel(shard_file: Path) -> ConfigMapChannel:
    """The channel of ``hpscan shard-run --channel kubernetes``: the pages named in the pod's environment. It
    writes the shard file they carry to ``shard_file`` (the payload reads it there)."""
    configmap = os.environ.get(CONFIGMAP_ENV)
    if not configmap:
        raise ValueError(f"--channel kubernetes needs {CONFIGMAP_ENV} (set by the shard's Job)")
    channel = ConfigMapChannel(configmap, os.environ.get(NAMESPACE_ENV, "default"))
    channel.start()
    text = channel.pages().shard_file.model_dump_json(by_alias=True, exclude_none=True)
    shard_file.parent.mkdir(parents=True, exist_ok=True)
    partial = shard_file.with_name(shard_file.name + ".part")
    partial.write_text(text, encoding="utf-8")
    partial.replace(shard_file)  # whole or absent: never a half-written file for the payload
    return channel
