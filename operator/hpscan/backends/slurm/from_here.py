"""Slurm from this machine (``hpscan run --site``): the registry's ``here_factory`` for slurm sites. This
machine must see the site's spool at the same path as the compute nodes (a login node, or the centre's file
system mounted here); the token comes from SLURM_JWT. The scan's uid comes from its manifest, so running the same
manifest again finds the jobs it submitted before instead of submitting them again."""

from __future__ import annotations

from pathlib import Path

from hpscan.api.spec import HPScan
from hpscan.backends.base import ScanRef
from hpscan.backends.slurm.backend import SlurmBackend
from hpscan.backends.slurm.script import scan_uid


def create(scan: HPScan, run_dir: Path, poll_seconds: float) -> tuple[SlurmBackend, ScanRef]:
    """The backend (slurmrestd's answers kept ``poll_seconds``) and the scan as it knows it."""
    backend = SlurmBackend(max_age_seconds=poll_seconds)
    return backend, ScanRef(name=scan.metadata.name, namespace="local", uid=scan_uid(scan.metadata.name, scan.spec))
