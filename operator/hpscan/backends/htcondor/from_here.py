"""HTCondor from this machine (``hpscan run --site``): the registry's ``here_factory`` for htcondor sites.

Each job's sandbox lives under the run folder's ``condor/``; the scan's uid comes from its manifest and the run
folder, so running the same manifest again into that folder finds the jobs it submitted before (manifest_uid)."""

from __future__ import annotations

from pathlib import Path

from hpscan.api.spec import HPScan
from hpscan.backends.base import ScanRef, manifest_uid
from hpscan.backends.htcondor.backend import HTCondorBackend


def create(scan: HPScan, run_dir: Path, poll_seconds: float) -> tuple[HTCondorBackend, ScanRef]:
    """The backend (a schedd's answers kept ``poll_seconds``) and the scan as it knows it."""
    backend = HTCondorBackend(run_dir / "condor", max_age_seconds=poll_seconds)
    return backend, ScanRef(
        name=scan.metadata.name, namespace="local", uid=manifest_uid(scan.metadata.name, scan.spec, run_dir)
    )
