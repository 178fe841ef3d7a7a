"""The submit description of a scan's shards at one site (pure: builds and checks, writes only sandboxes)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpscan.api.contract import (
    CHECKPOINTS_DIR,
    MODELS_DIR,
    RESULTS_FILE,
    ShardFile,
    shard_file_name,
    shard_name,
)
from hpscan.api.sites import HTCondorSite, Site
from hpscan.api.spec import HPScanSpec
from hpscan.api.status import FINAL_EXITS
from hpscan.backends.base import ScanRef
from hpscan.backends.htcondor.schedd import (
    CANCELLED_REMOVED,
    COMPLETED,
    HELD,
    HOLD_EXECUTE_EXCEEDED,
    KEEP_COMPLETED_SECONDS,
    MOVES_ATTR,
    NAME_ATTR,
    NAMESPACE_ATTR,
    PROBE_ATTR,
    RELEASED_ATTR,
    SHARD_ATTR,
    SITE_ATTR,
    TIMED_OUT_REASON,
    TIMED_OUT_REMOVED,
    TOTAL_ATTR,
    UID_ATTR,
    condor_of,
)
from hpscan.backends.sandbox_models import wants_models_back
from hpscan.errors import BackendError
from hpscan.job.chirp import classad_string
from hpscan.job.runner import CHECKPOINT_EXIT_CODE


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


def container_image(site: HTCondorSite, spec: HPScanSpec) -> str:
    """The site's image, or payload.image as a docker:// URL (a bare registry name would be taken for a path)."""
    image = site.container_image or spec.payload.image
    if "://" in image or image.endswith(".sif") or image.startswith("/"):
        return image
    return "docker://" + image


def scan_dir(work_dir: Path, scan: ScanRef) -> Path:
    """Where a scan's sandboxes live on the operator's side: one folder per shard (shard file in, results back)."""
    return work_dir / scan.namespace / (f"{scan.name}-{scan.uid}" if scan.uid else scan.name)


def shard_runner_arguments(spec: HPScanSpec, shard_file: str) -> list[str]:
    """The job's command line: the shard runner, chirping progress and ending for checkpoints, around the payload."""
    checkpoints = ["--checkpoint-exit-code", str(CHECKPOINT_EXIT_CODE)]
    return [
        "hpscan",
        "shard-run",
        shard_file,
        "--out",
        ".",
        "--channel",
        "htcondor",
        *checkpoints,
        "--",
        *spec.payload.command,
    ]


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
    scan: ScanRef,
    spec: HPScanSpec,
    site: Site,
    shard_files: Sequence[ShardFile],
    folder: Path,
    moves: Mapping[int, int] | None = None,
) -> SubmitPlan:
    """The submit description of these shards on one site. Pure: builds, checks and returns; writes nothing.

    ``folder`` is the scan's folder on the operator's side (absolute): each job's initialdir is
    ``folder/shard-NNN``, holding its shard file and, after the job, its results.
    """
    import htcondor2

    condor = condor_of(site)
    shard_macro = shard_name(0).replace("000", "$INT(Shard,%03d)")  # shard-NNN, per job
    commands = _job_commands(scan, spec, site, shard_runner_arguments(spec, f"{shard_macro}.json"))
    commands["initialdir"] = f"{folder}/{shard_macro}"
    # A retry prefers a machine other than the two that last ran it (the manual's black-hole idiom), as a rank, not
    # a requirement: as a requirement, a retry at a site with one GPU node stayed idle for ever (the real pool).
    commands["job_machine_attrs"] = "Machine"
    commands["job_machine_attrs_history_length"] = "3"
    commands["rank"] = "(TARGET.Machine =!= MY.MachineAttrMachine1) + (TARGET.Machine =!= MY.MachineAttrMachine2)"
    if condor.requirements:
        commands["requirements"] = condor.requirements
    # results.jsonl goes in as well: a retried attempt skips what an earlier one recorded (the contract); and
    # checkpoints/ (made by write_sandboxes, so the output list never names a missing folder): what an earlier job of
    # the shard brought back, so a new job (a move, a retry) resumes its trials.
    commands["should_transfer_files"] = "YES"
    commands["transfer_input_files"] = f"{shard_macro}.json, {RESULTS_FILE}, {CHECKPOINTS_DIR}"
    # models/ comes back too when the scan keeps models in a store: the operator uploads them (sandbox_models).
    # checkpoints/ too: an evicted job's output goes to the access point's spool (ON_EXIT_OR_EVICT) and comes with it
    # to the next slot, so an eviction loses only the epoch in flight, not the training since the last exit with 85.
    outputs = [RESULTS_FILE, CHECKPOINTS_DIR, *([MODELS_DIR] if wants_models_back(spec) else [])]
    commands["transfer_output_files"] = ", ".join(outputs)
    commands["when_to_transfer_output"] = "ON_EXIT_OR_EVICT"
    # Self-checkpointing: the runner ends with this code after a checkpoint (at most every HPSCAN_CHECKPOINT_SECONDS);
    # HTCondor keeps these files at the access point and starts it again, and an evicted job starts from them on any
    # slot, its trials resuming at their last epoch (docs/checkpoints.md).
    commands["checkpoint_exit_code"] = str(CHECKPOINT_EXIT_CODE)
    commands["transfer_checkpoint_files"] = f"{CHECKPOINTS_DIR}, {RESULTS_FILE}"
    retries = condor.max_retries if condor.max_retries is not None else spec.retries
    commands["max_retries"] = str(retries)
    # Exits that a retry would repeat end the job at once (the contract; Kubernetes' podFailurePolicy does the same).
    commands["retry_until"] = f"member(ExitCode, {{{', '.join(str(code) for code in sorted(FINAL_EXITS))}}})"
    periodic: dict[str, str] = {}
    # Jobs hpscan removed stay until it read what they chirped while stopping (removal.Removal) and released them.
    kept = [f"JobStatus == {COMPLETED}", f"({CANCELLED_REMOVED})"]
    if spec.payload.timeout_seconds:
        commands["allowed_execute_duration"] = str(spec.payload.timeout_seconds)
        periodic = timeout_policy(retries)
        kept.append(f"({TIMED_OUT_REMOVED})")
    commands["leave_in_queue"] = leave_in_queue(" || ".join(kept))
    commands["+WantIOProxy"] = "true"
    commands[f"+{SHARD_ATTR}"] = "$(Shard)"
    commands[f"+{TOTAL_ATTR}"] = "$(Combinations)"
    commands[f"+{MOVES_ATTR}"] = "$(Moves)"
    commands.update(with_site_policy(periodic, condor.extra_submit))
    try:
        description = htcondor2.Submit(commands)
    except Exception as error:  # the bindings reject what condor_submit would reject
        raise BackendError(f"site {site.name!r}: the submit description is not valid: {error}") from None
    moved = moves or {}
    itemdata = [
        {"Shard": str(f.shard), "Combinations": str(len(f.combinations)), "Moves": str(moved.get(f.shard, 0))}
        for f in shard_files
    ]
    return SubmitPlan(site=site, description=description, itemdata=itemdata, spool=condor.remote)


PERIODIC_COMMANDS = ("periodic_release", "periodic_remove")
"""The policy commands hpscan sets that a site's extraSubmit may set too: the two are or-ed, neither replaced."""


def timeout_policy(retries: int) -> dict[str, str]:
    """What makes spec.payload.timeoutSeconds a per-attempt limit that is retried, as on Kubernetes: past
    allowed_execute_duration HTCondor holds the job (JobExecuteExceeded), and max_retries and retry_until act only
    when a job exits, so the shard would sit held until its site's holdTimeoutSeconds moved it. A job held so is
    released (the next attempt) while it has started at most ``retries`` times, and removed after, with a
    RemoveReason that says why (the schedd evaluates both every PERIODIC_EXPR_INTERVAL)."""
    timed_out = f"JobStatus == {HELD} && HoldReasonCode =?= {HOLD_EXECUTE_EXCEEDED}"
    exhausted = f"{timed_out} && NumJobStarts > {retries}"
    why = (
        f'strcat("{TIMED_OUT_REASON} (", AllowedExecuteDuration, " s) and was stopped; no retry left after ", '
        'NumJobStarts, " attempt(s)")'
    )
    return {
        "periodic_release": f"{timed_out} && NumJobStarts <= {retries}",
        "periodic_remove": exhausted,
        # undefined when another periodic_remove (the site's) fired: the schedd then writes its own reason
        "MY.PeriodicRemoveReason": f"ifThenElse({exhausted}, {why}, undefined)",
    }


def with_site_policy(policy: Mapping[str, str], extra_submit: Mapping[str, str]) -> dict[str, str]:
    """A site's extra submit commands, with hpscan's periodic policy or-ed into the site's own (the site's
    periodic_remove still removes, and hpscan's still retries a timed-out attempt)."""
    combined = dict(policy)
    for key, value in extra_submit.items():
        # periodic_remove, +PeriodicRemove and MY.PeriodicRemove all set the job's PeriodicRemove
        bare = key.lower().removeprefix("+").removeprefix("my.").replace("_", "")
        name = next((command for command in PERIODIC_COMMANDS if command.replace("_", "") == bare), key)
        if name in combined:
            combined[name] = f"({combined[name]}) || ({value})"
        else:
            combined[key] = value
    return combined


def leave_in_queue(ended: str) -> str:
    """The leave_in_queue expression: jobs that ended so stay queued, for the poller and for retrieve(), until
    hpscan releases them (HPScanReleased, a deleted scan) or for KEEP_COMPLETED_SECONDS."""
    return f"({ended}) && {RELEASED_ATTR} =!= true && (time() - EnteredCurrentStatus) < {KEEP_COMPLETED_SECONDS}"


PROBE_DIR = "probe-"
"""A site probe's initialdir on the operator's side: SCAN_DIR/probe-<site>/ (stdout.txt, stderr.txt)."""


def probe_description(scan: ScanRef, spec: HPScanSpec, site: Site, folder: Path) -> Any:
    """The site probe as one job (an ``htcondor2.Submit``): spec.payload.gpuCheck with the shards' universe, image,
    GPU request, environment and site settings, no input, no retries; its exit code and output say whether the
    site's GPUs work. Pure."""
    import htcondor2

    condor = condor_of(site)
    commands = _job_commands(scan, spec, site, list(spec.payload.gpu_check))
    commands["initialdir"] = str(folder / f"{PROBE_DIR}{site.name}")
    if condor.requirements:
        commands["requirements"] = condor.requirements
    commands["should_transfer_files"] = "YES"
    commands["when_to_transfer_output"] = "ON_EXIT"
    commands["max_retries"] = "0"
    commands["allowed_execute_duration"] = "600"  # a probe that hangs says as much as one that fails
    commands[f"+{PROBE_ATTR}"] = classad_string(site.name)
    commands.update(condor.extra_submit)
    try:
        return htcondor2.Submit(commands)
    except Exception as error:
        raise BackendError(f"site {site.name!r}: the probe's submit description is not valid: {error}") from None


def _job_commands(scan: ScanRef, spec: HPScanSpec, site: Site, arguments: Sequence[str]) -> dict[str, str]:
    """What a shard job and a probe job of one site share: universe and image, the command, environment, the
    GPU, CPU, memory and disk requests, accounting, output files, and the attributes hpscan finds its jobs by."""
    condor = condor_of(site)
    if not scan.uid:
        raise BackendError(f"scan {scan.name!r} has no uid to tag its jobs with")
    commands: dict[str, str] = {"batch_name": f"hpscan-{scan.name}"}
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
    if variables := [*spec.payload.env, *site.env]:  # the site's after the payload's: a site admin's fix wins
        commands["environment"] = condor_environment((v.name, v.value) for v in variables)
    if spec.gpu.count > 0:
        commands["request_gpus"] = str(spec.gpu.count)
        if spec.gpu.min_compute_capability:
            commands["gpus_minimum_capability"] = spec.gpu.min_compute_capability
        if spec.gpu.min_memory_mb:
            commands["gpus_minimum_memory"] = str(spec.gpu.min_memory_mb)
    commands["request_cpus"] = str(condor.request_cpus)
    commands["request_memory"] = condor.request_memory
    commands["request_disk"] = condor.request_disk
    if condor.accounting_group:
        commands["accounting_group"] = condor.accounting_group
    commands["output"] = "stdout.txt"
    commands["error"] = "stderr.txt"
    # Completed jobs stay queued a while, so the poller sees how they ended and can retrieve their output.
    commands["leave_in_queue"] = leave_in_queue(f"JobStatus == {COMPLETED}")
    commands[f"+{UID_ATTR}"] = classad_string(scan.uid)
    commands[f"+{NAME_ATTR}"] = classad_string(scan.name)
    commands[f"+{NAMESPACE_ATTR}"] = classad_string(scan.namespace)
    commands[f"+{SITE_ATTR}"] = classad_string(site.name)
    return commands


def write_sandboxes(folder: Path, shard_files: Iterable[ShardFile]) -> None:
    """Each shard's initialdir with its shard file, and a results.jsonl and a checkpoints/ to carry over between
    attempts (existing ones are kept: they hold what earlier attempts recorded and saved)."""
    for shard_file in shard_files:
        directory = folder / shard_name(shard_file.shard)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / shard_file_name(shard_file.shard)).write_text(
            shard_file.model_dump_json(by_alias=True, exclude_none=True, indent=1) + "\n"
        )
        (directory / RESULTS_FILE).touch()
        (directory / CHECKPOINTS_DIR).mkdir(exist_ok=True)
