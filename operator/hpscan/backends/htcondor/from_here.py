"""HTCondor from this machine (``hpscan run --site``): the registry's ``here_factory`` for htcondor sites.

Each job's sandbox lives under the run folder's ``condor/``; the scan's uid comes from its manifest, so running
the same manifest again finds the jobs it submitted before instead of submitting them again."""

from __future__ import annotations

from pathlib import Path

from hpscan.api.spec import HPScan
from hpscan.backends.base import ScanRef
from hpscan.backends.htcondor.backend import HTCondorBackend
from hpscan.backends.htcondor.submit import scan_uid


def create(scan: HPScan, run_dir: Path, poll_seconds: float) -> tuple[HTCondorBackend, ScanRef]:
    """The backend (a schedd's answers kept ``poll_seconds``) and the scan as it knows it."""
    backend = HTCondorBackend(run_dir / "condor", max_age_seconds=poll_seconds)
    return backend, ScanRef(name=scan.metadata.name, namespace="local", uid=scan_uid(scan.metadata.name, scan.spec))
