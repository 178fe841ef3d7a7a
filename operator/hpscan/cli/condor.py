"""`hpscan condor-submit`: a whole scan as HTCondor jobs at one site, or (--dry-run) the submit file it would send."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hpscan.api.sites import Site
from hpscan.api.spec import HPScan
from hpscan.backends.base import ScanRef, ShardLaunch, manifest_uid
from hpscan.backends.htcondor import HTCondorBackend, schedd_label
from hpscan.backends.htcondor.schedd import condor_of
from hpscan.cli.output import Commands, err, out
from hpscan.core.manifest import load_scan
from hpscan.core.planning import plan
from hpscan.errors import BackendError

commands = Commands()


def _pick_site(scan: HPScan, name: str | None) -> Site:
    condor_sites = [s for s in scan.spec.sites if s.backend == "htcondor"]
    names = ", ".join(s.name for s in condor_sites) or "none"
    if name is not None:
        for site in scan.spec.sites:
            if site.name == name:
                if site.backend != "htcondor":
                    raise BackendError(f"site {name!r} is not an htcondor site (htcondor sites: {names})")
                return site
        raise BackendError(f"no site {name!r} in spec.sites (htcondor sites: {names})")
    if len(condor_sites) != 1:
        raise BackendError(f"pick the site with --site (htcondor sites: {names})")
    return condor_sites[0]


@commands("condor-submit")
def condor_submit(
    file: Annotated[Path, typer.Argument(help="An HPScan manifest.")],
    site_name: Annotated[
        str | None, typer.Option("--site", help="The htcondor site to send every shard to (needed with several).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the submit description and itemdata; submit nothing.")
    ] = False,
    work_dir: Annotated[
        Path,
        typer.Option("--work-dir", help="Where shard sandboxes live on this machine (shard files in, results back)."),
    ] = Path("runs/condor"),
) -> None:
    """Submit every shard of a scan to one HTCondor site (one job per shard); idempotent: submitting the same
    manifest again only submits shards that have no job."""
    scan = load_scan(file)
    site = _pick_site(scan, site_name)
    planned = plan(scan.metadata.name, scan.spec)
    ref = ScanRef(
        name=scan.metadata.name,
        namespace=scan.metadata.namespace or "default",
        uid=scan.metadata.uid or manifest_uid(scan.metadata.name, scan.spec, work_dir),
    )
    launches = [ShardLaunch(shard_file, site) for shard_file in planned.shard_files()]
    backend = HTCondorBackend(work_dir)
    if dry_run:
        for submit_plan in backend.plans(ref, scan.spec, launches):
            typer.echo(submit_plan.text(), nl=False)
        return
    backend.submit(ref, scan.spec, launches)
    states = backend.poll(ref)
    out.print(
        f"{len(states)} of {planned.shard_count} shard jobs of {ref.name} are queued at {schedd_label(condor_of(site))} "
        f"(uid {ref.uid}); sandboxes in {backend.scan_dir(ref)}/",
        highlight=False,
    )
    if len(states) < planned.shard_count:
        err.print("[yellow]note:[/] some jobs are not visible in the queue yet", highlight=False)
