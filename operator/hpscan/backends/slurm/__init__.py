"""The Slurm backend: shards as batch jobs at an HPC centre, submitted through its REST API (slurmrestd with a
JWT), their live channel the centre's shared file system (docs/slurm.md).

One job per shard attempt, named hpscan.<scan uid>.<shard>.<moves>.<attempt>, runs the shard runner (``hpscan
shard-run --channel slurm``) in the shard's folder of the site's spool: the payload writes results.jsonl and
progress.jsonl there and reads trials the operator writes to inbox/ (``hpscan.job.slurm``). The jobs hpscan
submitted are also listed in each shard folder's jobs.jsonl, and the job script leaves the shard runner's exit
code beside them, so a restarted operator finds every shard and outcome even after slurmctld forgot the job.

Modules: ``site`` (the ``slurm:`` block), ``script`` (job names, the job script and the REST request, pure),
``states`` (Slurm job states and pending reasons -> shard states, pure), ``rest`` (the slurmrestd client),
``spool`` (files on the shared file system), ``probes`` (site probes), ``backend`` (the backend),
``from_here`` (``hpscan run --site``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the package stays light: the registry imports its site model (site.py) to validate sites
    from hpscan.backends.base import BackendContext
    from hpscan.backends.slurm.backend import SlurmBackend


def create(context: BackendContext) -> SlurmBackend:
    """The operator's Slurm backend: tokens from each scan's namespace's Secrets (or SLURM_JWT)."""
    from hpscan.backends.slurm.backend import SlurmBackend

    return SlurmBackend(read_secret=context.read_secret, environ=dict(context.environ))
