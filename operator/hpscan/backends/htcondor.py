"""The HTCondor backend: shards as jobs at an access point (schedd), as the paper ran them on WLCG grid sites.

One submit description per scan and site, one job per shard (itemdata). Each job runs the shard runner
(``hpscan shard-run ... --channel chirp``) around the payload: the shard file travels in the input sandbox,
``results.jsonl`` comes back in the output sandbox (spooled to and retrieved from a remote schedd), and while the
job runs the runner sets job attributes through chirp (HPScanDone, HPScanFailed, HPScanBest, HPScanRecords)
that the poller turns into live records. Every job carries ``HPScanUid``/``HPScanShard``, so a restarted
operator finds what it submitted and submission is idempotent.

One backend instance serves every scan: ``refresh()`` is the shared poller's cycle (one batched query per
schedd), ``poll``/``fetch_records`` read what the last cycle saw. All calls block (the bindings are C); the
operator runs them with ``asyncio.to_thread``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from functools import wraps
from pathlib import Path
from typing import Any, ClassVar, Protocol

from pydantic import ValidationError

from hpscan.api.contract import Objective, ResultRecord, ShardFile
from hpscan.api.sites import HTCondorSite, Site
from hpscan.api.spec import HPScanSpec
from hpscan.api.status import ShardPhase, ShardStatus
from hpscan.backends.base import Backend, ScanRef, ShardLaunch
from hpscan.errors import BackendError, SchedulerUnavailable
from hpscan.shardfiles import shard_file_name
from hpscan.shardrun import RESULTS_FILE

# Job attributes hpscan sets at submit time (+Attr in the description) and reads back.
UID_ATTR = "HPScanUid"
SHARD_ATTR = "HPScanShard"
NAME_ATTR = "HPScanName"
NAMESPACE_ATTR = "HPScanNamespace"
SITE_ATTR = "HPScanSite"
TOTAL_ATTR = "HPScanTotal"
RELEASED_ATTR = "HPScanReleased"
"""Set on a deleted scan's completed jobs so they leave the queue (see leave_in_queue)."""
# Job attributes the shard runner sets through chirp while the job runs.
DONE_ATTR = "HPScanDone"
FAILED_ATTR = "HPScanFailed"
BEST_ATTR = "HPScanBest"
RECORDS_ATTR = "HPScanRecords"

PROJECTION = [
    "ClusterId",
    "ProcId",
    "JobStatus",
    UID_ATTR,
    SHARD_ATTR,
    SITE_ATTR,
    TOTAL_ATTR,
    "NumJobStarts",
    "ExitCode",
    "ExitBySignal",
    "ExitSignal",
    "HoldReason",
    "HoldReasonCode",
    "RemoveReason",
    DONE_ATTR,
    FAILED_ATTR,
    BEST_ATTR,
    RECORDS_ATTR,
]
"""The attributes one poll cycle asks for: enough for phases, reasons and live progress, nothing more."""

# htcondor2.JobStatus values (kept as ints: the bindings need not be importable to map a job ad).
IDLE, RUNNING, REMOVED, COMPLETED, HELD, TRANSFERRING_OUTPUT, SUSPENDED = 1, 2, 3, 4, 5, 6, 7
HOLD_SPOOLING_INPUT = 16
"""HoldReasonCode of a job submitted with spool=True whose input has not been spooled yet."""

REMOVE_REASON_PREFIX = "hpscan:"
"""RemoveReason of the jobs hpscan removes itself (suspend, delete); other removals fail the shard."""

KEEP_COMPLETED_SECONDS = 14 * 24 * 3600
"""How long a completed job stays in the queue so its output can be retrieved and its state polled."""

CHIRP_LINE_MAX = 5120
"""Longest chirp command line (htchirp refuses longer ones): bounds the records one update carries."""

GPU_UNAVAILABLE_EXIT = 3


class ScheddLike(Protocol):
    """The part of ``htcondor2.Schedd`` the backend uses (same names and signatures)."""

    def query(self, constraint: Any = ..., projection: list[str] = ..., *args: Any, **kwargs: Any) -> list[Any]: ...

    def submit(self, description: Any, count: int = ..., spool: bool = ..., itemdata: Any = ...) -> Any: ...

    def act(self, action: Any, job_spec: Any, reason: str | None = ...) -> Any: ...

    def spool(self, result: Any) -> None: ...

    def retrieve(self, job_spec: Any) -> None: ...

    def edit(self, job_spec: Any, attr: str, value: Any, *args: Any, **kwargs: Any) -> Any: ...


ScheddFactory = Callable[[HTCondorSite], ScheddLike]
"""Returns the schedd of a site; tests pass one that returns a stand-in."""


def schedd_label(site: HTCondorSite) -> str:
    """How messages name a site's schedd."""
    if not site.remote:
        return "the local HTCondor schedd"
    name = f"HTCondor schedd {site.schedd}" if site.schedd else "the pool's HTCondor schedd"
    return f"{name} (pool {site.pool})" if site.pool else name


def locate_schedd(site: HTCondorSite) -> ScheddLike:
    """The real ``htcondor2.Schedd`` of a site: the local one, or located through the site's collector."""
    import htcondor2

    if not site.remote:
        return htcondor2.Schedd()
    collector = htcondor2.Collector(site.pool) if site.pool else htcondor2.Collector()
    if site.schedd:
        location = collector.locate(htcondor2.DaemonTypes.Schedd, site.schedd)
    else:
        location = collector.locate(htcondor2.DaemonTypes.Schedd)
    return htcondor2.Schedd(location)


def _unavailable(site: HTCondorSite, doing: str, error: BaseException) -> SchedulerUnavailable:
    cause = str(error).strip() or type(error).__name__
    return SchedulerUnavailable(f"{schedd_label(site)} did not answer while {doing}: {cause}")


# --- the submit description (pure) -----------------------------------------------------------------------------


def condor_arguments(args: Sequence[str]) -> str:
    """A command line in the submit language's new argument syntax (double quotes around, single quotes per
    argument that needs them)."""
    parts = []
    for arg in args:
        escaped = arg.replace('"', '""')
        if arg == "" or any(c in arg for c in " \t'"):
            escaped = "'" + escaped.replace("'", "''") + "'"
        parts.append(escaped)
    return '"' + " ".join(parts) + '"'


def condor_environment(variables: Iterable[tuple[str, str]]) -> str:
    """An ``environment`` value in the new syntax."""
    parts = []
    for name, value in variables:
        escaped = value.replace('"', '""')
        if value == "" or any(c in value for c in " \t'"):
            escaped = "'" + escaped.replace("'", "''") + "'"
        parts.append(f"{name}={escaped}")
    return '"' + " ".join(parts) + '"'


def classad_string(value: str) -> str:
    """A ClassAd string literal (for +Attr lines and chirp values)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def container_image(site: HTCondorSite, spec: HPScanSpec) -> str:
    """The site's image, or payload.image as a docker:// URL (a bare registry name would be taken for a path)."""
    image = site.container_image or spec.payload.image
    if "://" in image or image.endswith(".sif") or image.startswith("/"):
        return image
    return "docker://" + image


def scan_dir(work_dir: Path, scan: ScanRef) -> Path:
    """Where a scan's sandboxes live on the operator's side: one folder per shard (shard file in, results back)."""
    return work_dir / scan.namespace / (f"{scan.name}-{scan.uid}" if scan.uid else scan.name)


def shard_dir_name(shard: int) -> str:
    return f"shard-{shard:03d}"


def shard_runner_arguments(spec: HPScanSpec, shard_file: str) -> list[str]:
    """The job's command line: the shard runner, chirping progress, around the payload."""
    return ["hpscan", "shard-run", shard_file, "--out", ".", "--channel", "chirp", "--", *spec.payload.command]


@dataclass(frozen=True)
class SubmitPlan:
    """What one ``Schedd.submit`` call sends: a real ``htcondor2.Submit`` and one itemdata row per shard."""

    site: Site
    description: Any  # htcondor2.Submit
    itemdata: list[dict[str, str]]
    spool: bool

    @property
    def shards(self) -> list[int]:
        return [int(row["Shard"]) for row in self.itemdata]

    def text(self) -> str:
        """The whole submit file, ``queue ... from ( ... )`` block included: what condor_submit would accept."""
        lines = [f"{key} = {value}" for key, value in self.description.items()]
        keys = list(self.itemdata[0]) if self.itemdata else ["Shard"]
        rows = [" ".join(row[k] for k in keys) for row in self.itemdata]
        return "\n".join([*lines, f"queue {','.join(keys)} from (", *rows, ")"]) + "\n"


def submit_description(
    scan: ScanRef, spec: HPScanSpec, site: Site, shard_files: Sequence[ShardFile], folder: Path
) -> SubmitPlan:
    """The submit description of these shards on one site. Pure: builds, checks and returns; writes nothing.

    ``folder`` is the scan's folder on the operator's side (absolute): each job's initialdir is
    ``folder/shard-NNN``, holding its shard file and, after the job, its results.
    """
    import htcondor2

    condor = site.htcondor
    if condor is None:
        raise BackendError(f"site {site.name!r} has no htcondor block")
    if not scan.uid:
        raise BackendError(f"scan {scan.name!r} has no uid to tag its jobs with")
    shard_macro = "shard-$INT(Shard,%03d)"
    commands: dict[str, str] = {
        "batch_name": f"hpscan-{scan.name}",
        "initialdir": f"{folder}/{shard_macro}",
    }
    arguments = shard_runner_arguments(spec, f"{shard_macro}.json")
    if condor.universe == "container":
        commands["universe"] = "container"
        commands["container_image"] = container_image(condor, spec)
        commands["executable"] = "/usr/bin/env"  # in every image; finds hpscan on the image's PATH
        commands["transfer_executable"] = "false"
    else:
        assert condor.executable is not None  # the model insists
        commands["universe"] = "vanilla"
        commands["executable"] = condor.executable
        commands["transfer_executable"] = "true" if condor.transfer_executable else "false"
    commands["arguments"] = condor_arguments(arguments)
    if spec.payload.env:
        commands["environment"] = condor_environment((v.name, v.value) for v in spec.payload.env)
    if spec.gpu.count > 0:
        commands["request_gpus"] = str(spec.gpu.count)
        if spec.gpu.min_compute_capability:
            commands["gpus_minimum_capability"] = spec.gpu.min_compute_capability
        if spec.gpu.min_memory_mb:
            commands["gpus_minimum_memory"] = str(spec.gpu.min_memory_mb)
    commands["request_cpus"] = str(condor.request_cpus)
    commands["request_memory"] = condor.request_memory
    commands["request_disk"] = condor.request_disk
    # A retry should not land on the machine whose GPU just failed it (the manual's black-hole idiom).
    commands["job_machine_attrs"] = "Machine"
    commands["job_machine_attrs_history_length"] = "3"
    avoid = "(TARGET.Machine =!= MY.MachineAttrMachine1) && (TARGET.Machine =!= MY.MachineAttrMachine2)"
    commands["requirements"] = f"{avoid} && ({condor.requirements})" if condor.requirements else avoid
    if condor.accounting_group:
        commands["accounting_group"] = condor.accounting_group
    # results.jsonl goes in as well: a retried attempt skips what an earlier one recorded (the contract).
    commands["should_transfer_files"] = "YES"
    commands["transfer_input_files"] = f"{shard_macro}.json, {RESULTS_FILE}"
    commands["transfer_output_files"] = RESULTS_FILE
    commands["when_to_transfer_output"] = "ON_EXIT_OR_EVICT"
    commands["output"] = "stdout.txt"
    commands["error"] = "stderr.txt"
    commands["max_retries"] = str(condor.max_retries if condor.max_retries is not None else spec.retries)
    if spec.payload.timeout_seconds:
        commands["allowed_execute_duration"] = str(spec.payload.timeout_seconds)
    # Completed jobs stay queued a while, so the poller sees how they ended and can retrieve their output.
    commands["leave_in_queue"] = (
        f"JobStatus == 4 && {RELEASED_ATTR} =!= true && (time() - EnteredCurrentStatus) < {KEEP_COMPLETED_SECONDS}"
    )
    commands["+WantIOProxy"] = "true"
    commands[f"+{UID_ATTR}"] = classad_string(scan.uid)
    commands[f"+{NAME_ATTR}"] = classad_string(scan.name)
    commands[f"+{NAMESPACE_ATTR}"] = classad_string(scan.namespace)
    commands[f"+{SITE_ATTR}"] = classad_string(site.name)
    commands[f"+{SHARD_ATTR}"] = "$(Shard)"
    commands[f"+{TOTAL_ATTR}"] = "$(Combinations)"
    commands.update(condor.extra_submit)
    try:
        description = htcondor2.Submit(commands)
    except Exception as error:  # the bindings reject what condor_submit would reject
        raise BackendError(f"site {site.name!r}: the submit description is not valid: {error}") from None
    itemdata = [{"Shard": str(f.shard), "Combinations": str(len(f.combinations))} for f in shard_files]
    return SubmitPlan(site=site, description=description, itemdata=itemdata, spool=condor.remote)


def write_sandboxes(folder: Path, shard_files: Iterable[ShardFile]) -> None:
    """Each shard's initialdir with its shard file and a results.jsonl to carry over between attempts (an
    existing one is kept: it holds what earlier attempts recorded)."""
    for shard_file in shard_files:
        directory = folder / shard_dir_name(shard_file.shard)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / shard_file_name(shard_file.shard)).write_text(
            shard_file.model_dump_json(by_alias=True, exclude_none=True, indent=1) + "\n"
        )
        (directory / RESULTS_FILE).touch()


# --- job ads -> shard states (pure) ----------------------------------------------------------------------------


def _attr(ad: Any, name: str, default: Any = None) -> Any:
    """An attribute's value from a ClassAd (or a dict), evaluated; ``default`` when missing or undefined."""
    try:
        value = ad.eval(name) if hasattr(ad, "eval") else ad.get(name, default)
    except (KeyError, TypeError, ValueError):
        return default
    if value is None or type(value).__name__ == "Value":  # classad2.Value.Undefined / Error
        return default
    return value


def _job_id(ad: Any) -> str:
    return f"{_attr(ad, 'ClusterId')}.{_attr(ad, 'ProcId')}"


def shard_status(ad: Any, site: str | None) -> ShardStatus:
    """The shard state a job ad describes (phase, attempts, reason; hold and remove reasons surfaced)."""
    status = int(_attr(ad, "JobStatus", IDLE))
    starts = int(_attr(ad, "NumJobStarts", 0))
    common: dict[str, Any] = {
        "index": int(_attr(ad, SHARD_ATTR, 0)),
        "site": site,
        "job": _job_id(ad),
        "attempts": starts,
        "total": int(_attr(ad, TOTAL_ATTR, 0)),
        "done": int(_attr(ad, DONE_ATTR, 0)),
        "failed": int(_attr(ad, FAILED_ATTR, 0)),
    }
    if status in (RUNNING, TRANSFERRING_OUTPUT):
        return ShardStatus(phase=ShardPhase.RUNNING, **common)
    if status == SUSPENDED:
        return ShardStatus(
            phase=ShardPhase.RUNNING, reason="SuspendedBySite", message="the execute node suspended the job", **common
        )
    if status == HELD:
        if int(_attr(ad, "HoldReasonCode", 0)) == HOLD_SPOOLING_INPUT:
            return ShardStatus(phase=ShardPhase.PENDING, reason="SpoolingInput", **common)
        return ShardStatus(
            phase=ShardPhase.PENDING, reason="Held", message=str(_attr(ad, "HoldReason", "held")), **common
        )
    if status == COMPLETED:
        if _attr(ad, "ExitBySignal", False):
            signal = _attr(ad, "ExitSignal", "?")
            message = f"the job was killed by signal {signal} after {starts} attempt(s)"
            return ShardStatus(phase=ShardPhase.FAILED, reason="PayloadFailed", message=message, **common)
        code = int(_attr(ad, "ExitCode", 0))
        if code == 0:
            return ShardStatus(phase=ShardPhase.SUCCEEDED, **common)
        if code == GPU_UNAVAILABLE_EXIT:
            message = f"the payload found no usable GPU (exit code 3) after {starts} attempt(s)"
            return ShardStatus(phase=ShardPhase.FAILED, reason="GPUUnavailable", message=message, **common)
        message = f"the payload exited with code {code} after {starts} attempt(s)"
        return ShardStatus(phase=ShardPhase.FAILED, reason="PayloadFailed", message=message, **common)
    if status == REMOVED:
        reason = str(_attr(ad, "RemoveReason", ""))
        if reason.startswith(REMOVE_REASON_PREFIX):
            return ShardStatus(phase=ShardPhase.SUSPENDED, reason="Suspended", **common)
        return ShardStatus(
            phase=ShardPhase.FAILED,
            reason="Removed",
            message=f"the job was removed: {reason or 'no reason given'}",
            **common,
        )
    if starts > 0:
        return ShardStatus(
            phase=ShardPhase.PENDING, reason="Retrying", message=f"attempt {starts + 1} waits for a slot", **common
        )
    return ShardStatus(phase=ShardPhase.PENDING, **common)


def chirped_records(ad: Any) -> list[ResultRecord]:
    """The records a running job chirped (HPScanRecords: JSON lines of its newest records)."""
    text = _attr(ad, RECORDS_ATTR)
    if not isinstance(text, str):
        return []
    return _parse_records(text.splitlines())


def _parse_records(lines: Iterable[str | bytes]) -> list[ResultRecord]:
    records = []
    for line in lines:
        if not line.strip():
            continue
        try:
            records.append(ResultRecord.model_validate(json.loads(line)))
        except (ValueError, ValidationError):
            continue  # a torn or foreign line; the sandbox copy is read again at the end
    return records


# --- authentication ------------------------------------------------------------------------------------------------

_JWT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")


def install_token(token: str, directory: Path, name: str) -> Path:
    """Write an IDTOKEN (e.g. read from a site's Secret by the operator) into a tokens folder, readable only by
    this user; HTCondor tries every token there and uses the one whose issuer the schedd trusts."""
    token = token.strip()
    if not _JWT.match(token):
        raise BackendError(f"IDTOKEN {name!r} is not a token (expected the JWT that condor_token_create prints)")
    if not re.match(r"^[A-Za-z0-9._-]+$", name):
        raise BackendError(f"token name {name!r} must be a plain file name")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / name
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(token + "\n")
    path.chmod(0o600)
    return path


def install_site_tokens(
    spec: HPScanSpec, namespace: str, read_secret: Callable[[str, str, str], str], directory: Path
) -> list[Path]:
    """Install the IDTOKEN of every htcondor site of a scan that names a ``tokenSecret``. ``read_secret(namespace,
    name, key)`` returns the Secret's value (the operator reads it from the API server); files are named
    ``<namespace>.<secret>.<key>`` so scans sharing a Secret share the file."""
    paths = []
    for site in spec.sites:
        ref = site.htcondor.token_secret if site.htcondor is not None else None
        if ref is None:
            continue
        try:
            token = read_secret(namespace, ref.name, ref.key)
        except Exception as error:
            raise BackendError(
                f"site {site.name!r}: cannot read key {ref.key!r} of Secret {namespace}/{ref.name}: {error}"
            ) from None
        paths.append(install_token(token, directory, f"{namespace}.{ref.name}.{ref.key}"))
    return paths


def use_token_directory(directory: Path, config: MutableMapping[str, str] | None = None) -> None:
    """Point the bindings' IDTOKEN lookup at ``directory`` (``htcondor2.param`` unless ``config`` is given;
    setting ``_CONDOR_SEC_TOKEN_DIRECTORY`` before the process starts does the same)."""
    if config is None:
        import htcondor2

        config = htcondor2.param
    config["SEC_TOKEN_DIRECTORY"] = str(directory)


# --- chirp: the shard runner's live channel inside a job -----------------------------------------------------


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


def chirp_channel(shard_file: Path) -> ChirpChannel:
    """The chirp channel for a shard file (its objective decides which value is best)."""
    from hpscan.shardfiles import read_shard_file

    try:
        return ChirpChannel(read_shard_file(shard_file).objective)
    except (OSError, ValidationError) as error:
        raise BackendError(f"{shard_file}: not a readable shard file ({error})") from None


# --- the backend -----------------------------------------------------------------------------------------------


def _locked(method: Callable[..., Any]) -> Callable[..., Any]:
    """Serialise a backend method: kopf runs sync handlers on several threads, and one poll cycle must serve
    them all (the bindings are not meant for concurrent use either)."""

    @wraps(method)
    def guarded(self: HTCondorBackend, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return guarded


def _schedd_key(site: HTCondorSite) -> tuple[str | None, str | None]:
    return (site.pool, site.schedd)


@dataclass
class _Tracked:
    scan: ScanRef
    sites: dict[str, Site] = field(default_factory=dict)


@dataclass
class _ScheddView:
    """What the last cycle saw on one schedd."""

    site: HTCondorSite
    ads: list[Any] = field(default_factory=list)
    error: str | None = None
    answered: bool = False
    retrieved: set[str] = field(default_factory=set)


def _uid_constraint(uids: Iterable[str]) -> str:
    return f"member({UID_ATTR}, {{{', '.join(classad_string(u) for u in sorted(uids))}}})"


def scan_uid(name: str, spec: HPScanSpec) -> str:
    """A stable uid for a scan submitted outside Kubernetes (from its manifest): the same manifest gets the same
    uid, so submitting it again is idempotent."""
    canonical = json.dumps([name, spec.model_dump(mode="json", by_alias=True)], sort_keys=True)
    return "manifest-" + hashlib.sha256(canonical.encode()).hexdigest()[:16]


class HTCondorBackend(Backend):
    """Shards as HTCondor jobs. One instance serves every scan; see the module docstring for the wiring."""

    name: ClassVar[str] = "htcondor"

    def __init__(
        self,
        work_dir: Path,
        schedd_factory: ScheddFactory = locate_schedd,
        max_age_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        read_secret: Callable[[str, str, str], str] | None = None,
    ) -> None:
        self.work_dir = work_dir.absolute()
        self.read_secret = read_secret  # (namespace, name, key) -> value: IDTOKENs from Kubernetes Secrets
        self.schedd_factory = schedd_factory
        self.max_age_seconds = max_age_seconds
        self.clock = clock
        self._lock = threading.RLock()
        self._scans: dict[str, _Tracked] = {}
        self._views: dict[tuple[str | None, str | None], _ScheddView] = {}
        self._schedds: dict[tuple[str | None, str | None], ScheddLike] = {}
        self._refreshed_at: float | None = None
        self._covered: set[str] = set()  # uids the last cycle asked about
        self._cancelled: dict[str, set[int]] = {}
        self._read_jobs: dict[str, set[str]] = {}
        self._live_seen: dict[str, set[str]] = {}

    # scans --------------------------------------------------------------------------------------------------

    @_locked
    def track(self, scan: ScanRef, spec: HPScanSpec) -> None:
        """Watch a scan's htcondor sites from the next poll cycle on (the operator calls this for every scan it
        sees, e.g. from an index, so a restarted operator polls what it submitted before)."""
        uid = self._uid(scan)
        tracked = self._scans.setdefault(uid, _Tracked(scan))
        for site in spec.sites:
            if site.htcondor is not None:
                tracked.sites[site.name] = site
                self._views.setdefault(_schedd_key(site.htcondor), _ScheddView(site.htcondor))

    def prepare(self, scan: ScanRef, spec: HPScanSpec, shard_count: int) -> None:
        """Install the IDTOKENs the scan's sites name (when the operator can read Secrets)."""
        if self.read_secret is not None and any(s.htcondor and s.htcondor.token_secret for s in spec.sites):
            tokens = self.work_dir / "tokens"
            install_site_tokens(spec, scan.namespace, self.read_secret, tokens)
            use_token_directory(tokens)

    @_locked
    def forget(self, scan: ScanRef, delete_sandboxes: bool = False) -> None:
        """A deleted scan: remove its jobs, let its completed jobs leave the queue (they stay a while otherwise, for
        their output and final state), stop watching it and, if asked, delete its sandboxes on this side.
        Raises SchedulerUnavailable when a schedd does not answer; call again (e.g. from a retried finalizer)."""
        uid = self._uid(scan)
        tracked = self._scans.get(uid)
        if tracked is not None:
            self._cancel(uid, tracked, None)
            for site in self._distinct_schedds(tracked):
                condor = site.htcondor
                assert condor is not None
                completed = f"{UID_ATTR} == {classad_string(uid)} && JobStatus == {COMPLETED}"
                try:
                    schedd = self._schedd(condor)
                    # edit() of a constraint that matches no job is an error on the schedd's side: ask first.
                    if schedd.query(completed, ["ClusterId", "ProcId"]):
                        schedd.edit(completed, RELEASED_ATTR, "true")
                except Exception as error:
                    self._schedds.pop(_schedd_key(condor), None)
                    raise _unavailable(condor, "releasing completed jobs", error) from None
        for table in (self._scans, self._cancelled, self._read_jobs, self._live_seen):
            table.pop(uid, None)
        if delete_sandboxes:
            shutil.rmtree(self.scan_dir(scan), ignore_errors=True)

    def scan_dir(self, scan: ScanRef) -> Path:
        return scan_dir(self.work_dir, scan)

    @staticmethod
    def _uid(scan: ScanRef) -> str:
        if not scan.uid:
            raise BackendError(f"scan {scan.name!r} has no uid; HTCondor jobs are found again by it")
        return scan.uid

    def _schedd(self, site: HTCondorSite) -> ScheddLike:
        key = _schedd_key(site)
        if key not in self._schedds:
            try:
                self._schedds[key] = self.schedd_factory(site)
            except Exception as error:
                raise _unavailable(site, "locating it", error) from None
        return self._schedds[key]

    # submit -------------------------------------------------------------------------------------------------

    def plans(self, scan: ScanRef, spec: HPScanSpec, launches: Sequence[ShardLaunch]) -> list[SubmitPlan]:
        """The submit descriptions for these launches, one per site (what ``submit`` sends when no job exists)."""
        by_site: dict[str, tuple[Site, list[ShardFile]]] = {}
        for launch in launches:
            site = launch.site or Site(name="htcondor", htcondor=HTCondorSite())
            if site.htcondor is None:
                raise BackendError(f"site {site.name!r} is not an htcondor site")
            by_site.setdefault(site.name, (site, []))[1].append(launch.shard_file)
        folder = self.scan_dir(scan)
        return [submit_description(scan, spec, site, files, folder) for site, files in by_site.values()]

    @_locked
    def submit(self, scan: ScanRef, spec: HPScanSpec, launches: Sequence[ShardLaunch]) -> None:
        """Submit the shards that have no job yet, one cluster per site. Jobs found with the scan's uid are left
        alone, so a crash between submit and status update never submits twice; jobs still held for input
        that was never spooled (a crash between submit and spool) are removed and submitted again."""
        uid = self._uid(scan)
        self.track(scan, spec)
        for plan in self.plans(scan, spec, launches):
            condor = plan.site.htcondor
            assert condor is not None
            schedd = self._schedd(condor)
            try:
                existing = schedd.query(
                    f"{UID_ATTR} == {classad_string(uid)}",
                    ["ClusterId", "ProcId", SHARD_ATTR, "JobStatus", "HoldReasonCode"],
                )
            except Exception as error:
                self._schedds.pop(_schedd_key(condor), None)
                raise _unavailable(condor, "looking for the scan's jobs", error) from None
            present: set[int] = set()
            orphans: list[str] = []
            for ad in existing:
                status = int(_attr(ad, "JobStatus", IDLE))
                if status == REMOVED:
                    continue
                if status == HELD and int(_attr(ad, "HoldReasonCode", 0)) == HOLD_SPOOLING_INPUT:
                    orphans.append(_job_id(ad))
                    continue
                present.add(int(_attr(ad, SHARD_ATTR, -1)))
            missing = [row for row in plan.itemdata if int(row["Shard"]) not in present]
            if not missing:
                continue
            if orphans:
                self._act_remove(schedd, condor, orphans, "input never spooled; submitting again")
            wanted = {int(row["Shard"]) for row in missing}
            files = [launch.shard_file for launch in launches if launch.shard_file.shard in wanted]
            write_sandboxes(self.scan_dir(scan), files)
            try:
                result = schedd.submit(plan.description, count=1, spool=plan.spool, itemdata=iter(missing))
                if plan.spool:
                    schedd.spool(result)
            except Exception as error:
                raise _unavailable(condor, f"submitting {len(missing)} shard job(s)", error) from None
            self._cancelled.get(uid, set()).difference_update(wanted)

    # the shared poller --------------------------------------------------------------------------------------

    @_locked
    def refresh(self) -> None:
        """One poll cycle for every tracked scan: one batched query per schedd, then output retrieval for
        completed spooled jobs. Never raises: a schedd that does not answer keeps its last view and an error."""
        by_schedd: dict[tuple[str | None, str | None], set[str]] = {}
        for uid, tracked in self._scans.items():
            for site in tracked.sites.values():
                assert site.htcondor is not None
                by_schedd.setdefault(_schedd_key(site.htcondor), set()).add(uid)
        for key, uids in by_schedd.items():
            view = self._views[key]
            try:
                schedd = self._schedd(view.site)
                view.ads = list(schedd.query(_uid_constraint(uids), PROJECTION))
            except Exception as error:
                view.error = str(
                    error if isinstance(error, SchedulerUnavailable) else _unavailable(view.site, "polling", error)
                )
                self._schedds.pop(key, None)  # located again next cycle: the schedd may have moved or restarted
                continue
            view.error = None
            view.answered = True
            if view.site.remote:
                self._retrieve(schedd, view)
        self._covered = set(self._scans)
        self._refreshed_at = self.clock()

    def _retrieve(self, schedd: ScheddLike, view: _ScheddView) -> None:
        done = [
            _job_id(ad)
            for ad in view.ads
            if int(_attr(ad, "JobStatus", IDLE)) == COMPLETED and _job_id(ad) not in view.retrieved
        ]
        if not done:
            return
        try:
            schedd.retrieve(done)
        except Exception as error:  # tried again next cycle
            view.error = str(_unavailable(view.site, f"retrieving the output of {len(done)} job(s)", error))
            return
        view.retrieved.update(done)

    def _ensure_fresh(self, uid: str) -> None:
        stale = self._refreshed_at is None or self.clock() - self._refreshed_at > self.max_age_seconds
        if stale or uid not in self._covered:
            self.refresh()

    def _jobs(self, uid: str) -> Iterator[tuple[Site, _ScheddView, Any]]:
        """The scan's job ads from the last cycle, each with the site it was submitted for."""
        sites = self._scans[uid].sites
        keys: dict[tuple[str | None, str | None], Site] = {}
        for site in sites.values():
            assert site.htcondor is not None
            keys.setdefault(_schedd_key(site.htcondor), site)
        for key, first in keys.items():
            view = self._views[key]
            for ad in view.ads:
                if _attr(ad, UID_ATTR) == uid:
                    yield sites.get(str(_attr(ad, SITE_ATTR, "")), first), view, ad

    @_locked
    def poll(self, scan: ScanRef) -> dict[int, ShardStatus]:
        """Shard states from the last cycle (refreshing when it is older than max_age_seconds). A schedd that
        stopped answering marks its unfinished shards SchedulerUnavailable; one that never answered raises."""
        uid = self._uid(scan)
        if uid not in self._scans:
            return {}
        self._ensure_fresh(uid)
        for site in self._scans[uid].sites.values():
            assert site.htcondor is not None
            view = self._views[_schedd_key(site.htcondor)]
            if view.error and not view.answered:
                raise SchedulerUnavailable(view.error)
        states: dict[int, ShardStatus] = {}
        rank: dict[int, tuple[int, int]] = {}
        for site, view, ad in self._jobs(uid):
            state = shard_status(ad, site.name)
            live = int(_attr(ad, "JobStatus", IDLE)) != REMOVED
            order = (int(live), int(_attr(ad, "ClusterId", 0)))  # a live job beats a removed one, newer beats older
            if state.index in rank and rank[state.index] >= order:
                continue
            rank[state.index] = order
            if view.error and state.phase in {ShardPhase.PENDING, ShardPhase.RUNNING}:
                state = state.model_copy(update={"reason": "SchedulerUnavailable", "message": view.error})
            remote = site.htcondor is not None and site.htcondor.remote
            if remote and state.phase == ShardPhase.SUCCEEDED and _job_id(ad) not in view.retrieved:
                # Succeeded only once its results are here, so the last records are never missed.
                state = state.model_copy(update={"phase": ShardPhase.RUNNING, "reason": "RetrievingOutput"})
            states[state.index] = state
        for shard in self._cancelled.get(uid, set()) - set(states):
            states[shard] = ShardStatus(index=shard, phase=ShardPhase.SUSPENDED, reason="Suspended")
        return states

    @_locked
    def fetch_records(self, scan: ScanRef) -> list[ResultRecord]:
        """Records of completed shards (their returned results.jsonl, read once per job) and the records running
        jobs chirped since the last call."""
        uid = self._uid(scan)
        if uid not in self._scans:
            return []
        self._ensure_fresh(uid)
        read = self._read_jobs.setdefault(uid, set())
        live = self._live_seen.setdefault(uid, set())
        records: list[ResultRecord] = []
        for site, view, ad in self._jobs(uid):
            status = int(_attr(ad, "JobStatus", IDLE))
            job = f"{site.name}/{_job_id(ad)}"
            if status == COMPLETED and job not in read:
                assert site.htcondor is not None
                if site.htcondor.remote and _job_id(ad) not in view.retrieved:
                    continue
                path = self.scan_dir(scan) / shard_dir_name(int(_attr(ad, SHARD_ATTR, 0))) / RESULTS_FILE
                try:
                    lines = path.read_bytes().splitlines()
                except FileNotFoundError:
                    lines = []
                records.extend(_parse_records(lines))
                read.add(job)
            elif status in (RUNNING, TRANSFERRING_OUTPUT, SUSPENDED):
                for record in chirped_records(ad):
                    if record.id not in live:
                        live.add(record.id)
                        records.append(record)
        return records

    # cancel -------------------------------------------------------------------------------------------------

    def _act_remove(self, schedd: ScheddLike, site: HTCondorSite, job_spec: Any, why: str) -> None:
        import htcondor2

        try:
            schedd.act(htcondor2.JobAction.Remove, job_spec, reason=f"{REMOVE_REASON_PREFIX} {why}")
        except Exception as error:
            raise _unavailable(site, "removing jobs", error) from None

    @staticmethod
    def _distinct_schedds(tracked: _Tracked) -> list[Site]:
        """One site per schedd the scan uses."""
        first: dict[tuple[str | None, str | None], Site] = {}
        for site in tracked.sites.values():
            assert site.htcondor is not None
            first.setdefault(_schedd_key(site.htcondor), site)
        return list(first.values())

    def _cancel(self, uid: str, tracked: _Tracked, shards: Collection[int] | None) -> None:
        # Completed jobs are left alone: their state and output are what the scan keeps.
        constraint = f"{UID_ATTR} == {classad_string(uid)} && JobStatus != {COMPLETED}"
        if shards is not None:
            constraint += f" && member({SHARD_ATTR}, {{{', '.join(str(s) for s in sorted(shards))}}})"
        for site in self._distinct_schedds(tracked):
            assert site.htcondor is not None
            self._act_remove(self._schedd(site.htcondor), site.htcondor, constraint, "scan suspended or deleted")
        active = {
            int(_attr(ad, SHARD_ATTR, 0))
            for _, _, ad in self._jobs(uid)
            if int(_attr(ad, "JobStatus", IDLE)) not in (COMPLETED, REMOVED)
        }
        self._cancelled.setdefault(uid, set()).update(active if shards is None else shards)
        self._refreshed_at = None  # the next poll asks again

    @_locked
    def cancel(self, scan: ScanRef, shards: Collection[int] | None = None) -> None:
        """Remove the scan's unfinished jobs (of these shards; all when None) with one constraint per schedd;
        completed jobs and what was returned stay. The shards read as Suspended until submitted again."""
        uid = self._uid(scan)
        tracked = self._scans.get(uid)
        if tracked is None:
            raise BackendError(f"scan {scan.name!r} is not tracked; call track() with its spec first")
        if shards is not None and not shards:
            return
        self._cancel(uid, tracked, shards)
