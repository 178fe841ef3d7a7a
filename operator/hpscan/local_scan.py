"""`hpscan run`: a whole scan on this machine, as local processes, or (``--site``) as jobs at one site of the scan
whose backend submits from here (the registry's ``here_factory``: HTCondor today), followed from here. The shell
around hpscan.engine.step that keeps the scan's state in a run folder; the terminal display is an observer given
by the CLI.

Run folder layout (the same files the report and `hpscan results` read):
  scan.yaml        the manifest as run (a later run into the same folder must be the same scan)
  shards/          one shard file per shard
  work/shard-NNN/  the payload's own output folder and payload.log, per shard
  results.jsonl    every record, appended as it arrives
  status.json      the status, same shape as the HPScan status on Kubernetes
  models/<id>/     the trained models spec.artifacts keeps (gathered from work/shard-NNN/models/ at the end)
  condor/          with --site at an htcondor site: each job's sandbox (shard file in; results.jsonl, stdout,
                   stderr back); another backend keeps what it needs in a folder of its own
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import yaml

from hpscan.api import registry
from hpscan.api.contract import MODELS_DIR, RESULTS_FILE, PayloadExit, ResultRecord, shard_name
from hpscan.api.sites import Site
from hpscan.api.spec import HPScan, HPScanSpec
from hpscan.api.status import (
    TERMINAL_SCAN_PHASES,
    HPScanStatus,
    Reason,
    ScanPhase,
    ShardPhase,
    ShardStatus,
    SiteState,
)
from hpscan.api.trials import PROGRESS_FILE, JsonLines, read_progress
from hpscan.backends.base import Backend, ScanRef, pull_refusal
from hpscan.backends.local import LocalBackend
from hpscan.core.artifacts import models_to_keep, rank_records, saved_models
from hpscan.core.brokering import ProbeOutcome, Target, next_site_status, probe_needed
from hpscan.core.payloads import require_payload_accepts
from hpscan.core.planning import Plan, plan
from hpscan.core.results import Aggregate, aggregate, iter_record_lines, read_records
from hpscan.core.search import Search
from hpscan.core.shardfiles import write_shard_files
from hpscan.core.summary import build_status
from hpscan.engine import EngineSettings, StepInput, step
from hpscan.errors import HPScanError

LOCAL_SETTINGS = EngineSettings(poll_seconds=0.5)
"""`hpscan run`'s engine settings: every shard in status.json, a step every half second."""


class RunError(HPScanError):
    """A local run that cannot start (e.g. a GPU is required and none is here, or the folder holds another scan)."""

    exit_code = 2
    reason = Reason.RUN_REFUSED


class RunObserver(Protocol):
    """What the terminal display is told while a scan runs."""

    def started(self, planned: Plan, agg: Aggregate, workers: int) -> None: ...

    def recorded(self, record: ResultRecord, agg: Aggregate) -> None: ...

    def updated(self, status: HPScanStatus) -> None: ...


@dataclass(frozen=True)
class Machine:
    """What this machine offers to shards."""

    cpus: int
    gpus: list[str]
    """Visible NVIDIA GPU indices, as CUDA_VISIBLE_DEVICES values."""


def detect_machine() -> Machine:
    """CPU count and NVIDIA GPUs (via nvidia-smi; none when it is missing or fails)."""
    gpus: list[str] = []
    if shutil.which("nvidia-smi"):
        try:
            listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=True)
            gpus = [str(i) for i, line in enumerate(listing.stdout.splitlines()) if line.startswith("GPU ")]
        except (subprocess.SubprocessError, OSError):
            gpus = []
    return Machine(cpus=os.cpu_count() or 1, gpus=gpus)


@dataclass(frozen=True)
class Resources:
    """How a local run uses the machine: shards at once, GPU slots, threads per shard."""

    workers: int
    gpu_slots: list[str]
    threads_per_worker: int


def plan_resources(scan: HPScan, planned: Plan, machine: Machine, workers: int | None) -> Resources:
    """Pure: how many shards run at once and on which GPUs. One GPU group per shard; CPU threads shared out."""
    gpu = scan.spec.gpu
    if gpu.count > 0 and machine.gpus:
        groups = [",".join(machine.gpus[i : i + gpu.count]) for i in range(0, len(machine.gpus), gpu.count)]
        groups = [g for g in groups if len(g.split(",")) == gpu.count]
        if not groups:
            raise RunError(f"spec.gpu.count is {gpu.count} but this machine has {len(machine.gpus)} GPU(s)")
        default = len(groups)
    else:  # a required GPU that is not here is the local site's probe failing (local_probe)
        groups, default = [], machine.cpus
    limit = min(x for x in (workers or default, scan.spec.parallelism or planned.shard_count, planned.shard_count))
    if groups:
        limit = min(limit, len(groups))
    return Resources(workers=max(1, limit), gpu_slots=groups[:limit], threads_per_worker=max(1, machine.cpus // limit))


def local_probe(scan: HPScan, machine: Machine) -> ProbeOutcome:
    """The local site's probe: whether this machine has the GPUs the shards require (nvidia-smi's view)."""
    if scan.spec.gpu.count > 0 and not machine.gpus:
        return ProbeOutcome(
            PayloadExit.GPU_UNAVAILABLE,
            "spec.gpu.required is true but no NVIDIA GPU is visible here (nvidia-smi); "
            "set spec.gpu.required: false to train on the CPU",
        )
    return ProbeOutcome(PayloadExit.OK, f"{len(machine.gpus)} GPU(s) visible (nvidia-smi)")


def refuse_unusable_site(scan: HPScan, probe: ProbeOutcome) -> None:
    """A local run has one site, this machine: refused at once when its probe excludes it (the brokering rule
    that fails a scan with no usable site left), before anything runs."""
    target = Target(name=LocalBackend.name, backend=LocalBackend.name)
    site = next_site_status(target, None, now=datetime.now(UTC), needed=probe_needed(scan.spec), probe=probe)
    if site.state == SiteState.EXCLUDED:
        raise RunError(site.message)


def prepare_run_dir(scan: HPScan, planned: Plan, run_dir: Path) -> None:
    """Create the run folder, or check that an existing one holds this very scan (so a re-run resumes)."""
    manifest = run_dir / "scan.yaml"
    wanted = scan.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"status"})
    if manifest.exists():
        held = yaml.safe_load(manifest.read_text())
        try:  # compared as validated specs: a field added since with its default is the same scan
            held_spec = HPScanSpec.model_validate(held.get("spec")).model_dump(
                mode="json", by_alias=True, exclude_none=True
            )
        except ValueError:
            held_spec = held.get("spec")
        if held_spec != wanted["spec"]:
            raise RunError(
                f"{run_dir} holds a run of a different scan ({manifest}); choose another --out or delete the folder"
            )
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest.write_text(yaml.safe_dump(wanted, sort_keys=False))
    write_shard_files(planned, run_dir / "shards")


def earlier_attempts(run_dir: Path) -> dict[int, int]:
    """Attempts per shard that an earlier run of this folder recorded in status.json (none when unreadable)."""
    try:
        status = HPScanStatus.model_validate_json((run_dir / "status.json").read_bytes())
    except (OSError, ValueError):
        return {}
    return {shard.index: shard.attempts for shard in status.shards}


def write_status(run_dir: Path, status: HPScanStatus) -> None:
    """status.json, replaced atomically so a reader never sees half a file."""
    partial = run_dir / "status.json.partial"
    partial.write_text(status.model_dump_json(by_alias=True, exclude_none=True, indent=2) + "\n")
    partial.replace(run_dir / "status.json")


def keep_models(scan: HPScan, planned: Plan, run_dir: Path) -> list[str]:
    """Gather the models spec.artifacts keeps into run_dir/models/ and delete the others; returns the kept ids.

    The decision is core.artifacts.models_to_keep; this only moves folders (work/shard-NNN/models/<id>/ to
    models/<id>/) and deletes what is not kept. Running it again changes nothing."""
    records, _problems = read_records(run_dir / RESULTS_FILE)
    ranked = rank_records((r for r in records if planned.owns(r.id, r.parameters)), scan.spec.objective)
    keep = models_to_keep(ranked, scan.spec.artifacts)
    kept_dir = run_dir / MODELS_DIR
    held = saved_models(kept_dir)
    for index in range(planned.shard_count):
        work_models = run_dir / "work" / shard_name(index) / MODELS_DIR
        for model_id, model in saved_models(work_models).items():
            if model_id in keep:
                target = kept_dir / model_id
                if target.exists():
                    shutil.rmtree(target)
                kept_dir.mkdir(exist_ok=True)
                model.path.replace(target)
                held[model_id] = model
            else:
                shutil.rmtree(model.path, ignore_errors=True)
    for model_id, model in saved_models(kept_dir).items():
        if model_id not in keep:
            shutil.rmtree(model.path, ignore_errors=True)
    return sorted(keep & set(held))


def resume_search(planned: Plan, backend: Backend, ref: ScanRef, records: list[ResultRecord], run_dir: Path) -> Search:
    """The scan's search, rebuilt from what an earlier run of this folder handed out (each worker's trials.jsonl),
    recorded and reported: a re-run hands out only what is left of the budget and runs nothing twice."""
    search = Search(planned)
    progress = []
    for path in sorted((run_dir / "work").glob(f"shard-*/{PROGRESS_FILE}")):
        progress += read_progress(JsonLines(path).read_new())
    stops = search.rebuild(backend.assignments(ref), records, progress)
    for worker, trial_id in stops:
        backend.stop_trials(ref, worker, [trial_id])
    return search


def site_from_here(scan: HPScan, name: str) -> Site:
    """The scan's site called ``name`` (``hpscan run --site``), whose backend can submit from this machine."""
    here = {n for n, e in registry.entries().items() if e.submits_from_here}
    names = ", ".join(s.name for s in scan.spec.sites if s.backend in here) or "none"
    for site in scan.spec.sites:
        if site.name == name:
            if site.backend not in here:
                raise RunError(
                    f"site {name!r} is a {site.backend} site, which cannot run from this machine; --site takes a "
                    f"site of a backend that submits from here ({', '.join(sorted(here)) or 'none'}): {names}"
                )
            return site
    raise RunError(f"no site {name!r} in spec.sites (sites that run from here: {names})")


def run_scan(
    scan: HPScan,
    run_dir: Path,
    observer: RunObserver,
    settings: EngineSettings = LOCAL_SETTINGS,
    *,
    workers: int | None = None,
    machine: Machine | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    site: Site | None = None,
) -> HPScanStatus:
    """Run every shard not yet complete, aggregate records as they arrive, and return the final status. With
    ``site`` (see site_from_here) every shard is a job at that site instead of a process here. ``settings``: the
    engine's, from the CLI (settings.poll_seconds between two steps).

    KeyboardInterrupt stops the payloads (removes the jobs), keeps what they recorded, writes the status, and
    re-raises.
    """
    planned = plan(scan.metadata.name, scan.spec)
    require_payload_accepts(planned)  # before anything runs: a misspelt setting is a clear error, not 24 crashes
    resources, probe = run_resources(scan, planned, machine, workers, site)
    prepare_run_dir(scan, planned, run_dir)
    records, problems = read_records(run_dir / RESULTS_FILE)
    agg = aggregate(planned, records)
    agg.unreadable[RESULTS_FILE] = len(problems)  # e.g. a line cut short by a full disk: said in the status
    earlier = earlier_attempts(run_dir)
    backend, ref, targets = open_backend(scan, run_dir, resources, earlier, probe, site, settings)
    if refused := pull_refusal(backend, planned):
        raise RunError(refused[0])
    backend.track(ref, scan.spec)  # an htcondor site's jobs from an earlier run: their ads say what they were handed
    search = resume_search(planned, backend, ref, records, run_dir) if planned.pull else None
    finished = finished_shards(agg, earlier, search)
    spec = scan.spec.model_copy(update={"parallelism": resources.workers})
    observer.started(planned, agg, resources.workers)
    status = build_status(planned, agg, finished, held=search.held() if search else None)
    work = StepInput(ref, spec, agg, targets, previous=status, known=finished, search=search)
    status = follow(work, backend, settings, run_dir, observer, should_stop)
    if status.phase in TERMINAL_SCAN_PHASES:
        keep_models(scan, planned, run_dir)
        backend.forget(ref)  # e.g. HTCondor's completed jobs may leave the queue: the results are in the run folder
    return status


def run_resources(
    scan: HPScan, planned: Plan, machine: Machine | None, workers: int | None, site: Site | None
) -> tuple[Resources, ProbeOutcome | None]:
    """How the run uses this machine, and the local site's probe; refused at once when the probe excludes it.
    With ``site`` the site's slots decide (its probe job checks its GPUs): no local probe."""
    if site is None:
        machine = machine or detect_machine()
        probe = local_probe(scan, machine)
        refuse_unusable_site(scan, probe)
        return plan_resources(scan, planned, machine, workers), probe
    jobs = min(x for x in (workers, scan.spec.parallelism, planned.shard_count) if x)
    return Resources(workers=jobs, gpu_slots=[], threads_per_worker=1), None


def open_backend(
    scan: HPScan,
    run_dir: Path,
    resources: Resources,
    earlier: dict[int, int],
    probe: ProbeOutcome | None,
    site: Site | None,
    settings: EngineSettings,
) -> tuple[Backend, ScanRef, list[Target]]:
    """The run's backend, the scan as it knows it, and its one site: processes here, or jobs at ``site``."""
    if site is not None:  # the backend's here_factory (a re-run finds the jobs it submitted before: see its module)
        try:
            here_factory = registry.resolve(site.backend, "here_factory")
        except registry.RegistryError as error:
            raise RunError(str(error)) from None
        backend, ref = here_factory(scan, run_dir, settings.poll_seconds)
        return backend, ref, [Target.of(site)]
    threads = str(resources.threads_per_worker)
    local = LocalBackend(
        run_dir,
        retries=scan.spec.retries,
        env={"OMP_NUM_THREADS": threads, "TF_NUM_INTRAOP_THREADS": threads, "TF_NUM_INTEROP_THREADS": "1"},
        gpu_slots=resources.gpu_slots,
        timeout_seconds=scan.spec.payload.timeout_seconds,
        earlier_attempts=earlier,
        probe_outcome=probe,
    )
    ref = ScanRef(name=scan.metadata.name, namespace="local")
    return local, ref, [Target(name=LocalBackend.name, backend=LocalBackend.name)]


def finished_shards(agg: Aggregate, earlier: dict[int, int], search: Search | None) -> dict[int, ShardStatus]:
    """Shards an earlier run of this folder finished, so a re-run trains nothing twice: planned shards whose every
    combination is recorded; workers that pull, told "no more", that recorded all they held."""
    planned = agg.plan
    if search is not None:
        return {
            i: ShardStatus(index=i, site="local", phase=ShardPhase.SUCCEEDED, attempts=earlier.get(i, 0))
            for i in search.ended_workers
            if not search.open_trials(i)
        }
    if planned.pull:
        return {}
    return {
        i: ShardStatus(
            index=i,
            site="local",
            phase=ShardPhase.SUCCEEDED,
            attempts=earlier.get(i, 0),
            message="recorded in an earlier run",
        )
        for i in range(planned.shard_count)
        if agg.shard_done[i] == planned.shard_size(i)
    }


def follow(
    work: StepInput,
    backend: Backend,
    settings: EngineSettings,
    run_dir: Path,
    observer: RunObserver,
    should_stop: Callable[[], bool],
) -> HPScanStatus:
    """Step the scan until it ends (or ``should_stop``), then cancel what runs: each new record appended to
    results.jsonl as it arrives, status.json written after every step. KeyboardInterrupt: see interrupted."""
    status = work.previous
    try:
        with (run_dir / RESULTS_FILE).open("a", encoding="utf-8") as results:
            while True:
                result = step(replace(work, previous=status), {backend.name: backend}, settings)
                status = result.status
                for record in result.new_records:
                    results.writelines(iter_record_lines([record]))
                    results.flush()
                    observer.recorded(record, work.agg)
                write_status(run_dir, status)
                observer.updated(status)
                if status.phase in TERMINAL_SCAN_PHASES or should_stop():
                    backend.cancel(work.ref)
                    return status
                time.sleep(settings.poll_seconds)
    except KeyboardInterrupt:
        interrupted(replace(work, previous=status), backend, run_dir)
        raise


def interrupted(work: StepInput, backend: Backend, run_dir: Path) -> None:
    """A run stopped with Ctrl-C: its payloads stop (jobs removed), what they recorded is kept, and the status says
    how to resume (Suspended unless the scan had ended)."""
    backend.cancel(work.ref)
    for record in backend.fetch_records(work.ref):
        if work.agg.add(record):
            with (run_dir / RESULTS_FILE).open("a", encoding="utf-8") as results:
                results.writelines(iter_record_lines([record]))
    held = work.search.held() if work.search else None
    shards = {**work.known, **backend.poll(work.ref)}
    status = build_status(work.agg.plan, work.agg, shards, previous=work.previous, held=held)
    status = status.model_copy(
        update={"message": "interrupted; run the same command again to resume (nothing recorded is lost)"}
    )
    if status.phase not in TERMINAL_SCAN_PHASES:
        status = status.model_copy(update={"phase": ScanPhase.SUSPENDED})
    write_status(run_dir, status)
