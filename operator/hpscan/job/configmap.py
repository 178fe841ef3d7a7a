"""The Kubernetes live channel, inside a shard pod: the shard's record pages (their layout: hpscan.job.pages).

The pages are ConfigMaps ``<base>-p0``, ``<base>-p1``, ... (base: HPSCAN_CONFIGMAP, set by the shard's Job), which
the operator creates with the Job. A record goes to the page that holds its combination, so the pod's Role names
every page and grants get/patch on them only (never create); the operator's Kubernetes backend reads the same keys
back with ``records_of``. The shard file is read from the pages through the API, not mounted from them: a pod's
spec then stays the same size at any shard size, and the pod reads its pages once at start anyway for what earlier
attempts recorded. A request the API server refuses for good becomes one line naming who may not do what
(``refusal``); one it fails transiently is sent again (``transient``).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from hpscan.api.contract import Combination, ResultRecord
from hpscan.api.trials import Progress
from hpscan.errors import HPScanError
from hpscan.job.pages import (
    INBOX_SUFFIX,
    PAGE_KEY,
    PAGE_SIZE_KEY,
    PROGRESS_KEY,
    PROGRESS_LINES,
    RECORD_ROOM,
    RESERVED_KEYS,
    SHARD_KEY,
    STOPS_KEY,
    TRIALS_KEY,
    ShardPages,
    compact,
    fit_record,
    inbox_assignment,
    inbox_name,
    join_pages,
    json_lines,
    page_name,
    pulled_trials,
    record_limit,
    record_patch,
    records_of,
    split_shard_file,
    stored_size,
    trial_page_count,
    trial_pages,
    unrecorded,
)

# The channel's names, and those of the pages' layout (hpscan.job.pages) that the operator's Kubernetes backend,
# the simulation and the tests import from here while this module itself does not use them.
__all__ = [
    "INBOX_SUFFIX",
    "PAGE_KEY",
    "RECORD_ROOM",
    "RESERVED_KEYS",
    "SHARD_KEY",
    "ConfigMapChannel",
    "identity",
    "inbox_assignment",
    "open_channel",
    "refusal",
    "split_shard_file",
    "stored_size",
    "transient",
    "unrecorded",
]

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


def transient(error: Exception) -> bool:
    """Whether a request that failed so may succeed when sent again: the API server overloaded (429), failing
    (5xx), or not reached (a timeout, a lost connection)."""
    from kubernetes.client.rest import ApiException
    from urllib3.exceptions import HTTPError

    if isinstance(error, ApiException):
        return not error.status or error.status in (408, 429) or error.status >= 500
    return isinstance(error, HTTPError | OSError)


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
            by_page.setdefault(page, []).append(fit_record(record, limit, pages.shard_file.ranked_metrics()))
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
