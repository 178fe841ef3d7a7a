"""Slurm from this machine (``hpscan run --site``): the registry's ``here_factory`` for slurm sites. This
machine must see the site's spool at the same path as the compute nodes (a login node, or the centre's file
system mounted here); the token comes from SLURM_JWT. The scan's uid comes from its manifest and the run folder, so running
the same manifest again into the same folder finds the jobs it submitted before instead of submitting them again."""

from __future__ import annotations

from pathlib import Path

from hpscan.api.spec import HPScan
from hpscan.backends.base import ScanRef, manifest_uid
from hpscan.backends.slurm.backend import SlurmBackend


def create(scan: HPScan, run_dir: Path, poll_seconds: float) -> tuple[SlurmBackend, ScanRef]:
    """The backend (slurmrestd's answers kept ``poll_seconds``) and the scan as it knows it."""
    backend = SlurmBackend(max_age_seconds=poll_seconds)
    return backend, ScanRef(
        name=scan.metadata.name, namespace="local", uid=manifest_uid(scan.metadata.name, scan.spec, run_dir)
    )
