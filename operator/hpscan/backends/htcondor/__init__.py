"""The HTCondor backend: shards as jobs at an access point (schedd), as the paper ran them on WLCG grid sites.

One submit description per scan and site, one job per shard (itemdata). Each job runs the shard runner
(``hpscan shard-run ... --channel htcondor``) around the payload: the shard file travels in the input sandbox,
``results.jsonl`` comes back in the output sandbox (spooled to and retrieved from a remote schedd), and while the
job runs the runner sets job attributes through chirp (``hpscan.job.chirp``) that the poller turns into live
records. Every job carries ``HPScanUid``/``HPScanShard``, so a restarted operator finds what it submitted and
submission is idempotent.

Modules: ``schedd`` (job attributes, locating a schedd), ``submit`` (the submit description, pure), ``ads`` (job
ad -> shard state, pure), ``credentials`` (which credential a call uses, pure), ``worker`` (one process per
credential), ``auth`` (IDTOKEN files), ``state`` (what the backend holds per scan), ``schedds`` (the handles, and
the one way to call a schedd), ``poller`` (the shared poll cycle), ``pull`` (the channel to workers that pull),
``probes`` (site probes), ``removal`` (cancel, and a deleted scan's completed jobs), ``backend`` (the backend).
"""

from __future__ import annotations

from pathlib import Path

from hpscan.backends.base import BackendContext
from hpscan.backends.htcondor.ads import shard_status
from hpscan.backends.htcondor.auth import install_token
from hpscan.backends.htcondor.backend import HTCondorBackend
from hpscan.backends.htcondor.schedd import PROJECTION, ScheddLike, locate_schedd, schedd_label
from hpscan.backends.htcondor.submit import (
    SubmitPlan,
    condor_arguments,
    container_image,
    submit_description,
)

__all__ = [
    "PROJECTION",
    "HTCondorBackend",
    "ScheddLike",
    "SubmitPlan",
    "condor_arguments",
    "container_image",
    "create",
    "install_token",
    "locate_schedd",
    "schedd_label",
    "shard_status",
    "submit_description",
]


def create(context: BackendContext) -> HTCondorBackend:
    """The operator's HTCondor backend: sandboxes in $HPSCAN_CONDOR_DIR, IDTOKENs from Secrets."""
    folder = context.environ.get("HPSCAN_CONDOR_DIR", "/var/lib/hpscan/condor")  # an emptyDir in the chart
    return HTCondorBackend(Path(folder), read_secret=context.read_secret)
