"""hpscan: declarative hyperparameter scans on GPUs (local, Kubernetes, HTCondor).

The public Python API is small on purpose: load a manifest, plan it, aggregate records.
"""

from hpscan.api.contract import ResultRecord, ShardFile
from hpscan.api.spec import HPScan, HPScanSpec
from hpscan.api.status import HPScanStatus
from hpscan.core.manifest import load_scan, load_scans
from hpscan.core.planning import Plan, plan
from hpscan.core.results import Aggregate, aggregate
from hpscan.errors import HPScanError, ManifestError, PlanningError

__version__ = "0.1.0"

__all__ = [
    "Aggregate",
    "HPScan",
    "HPScanError",
    "HPScanSpec",
    "HPScanStatus",
    "ManifestError",
    "Plan",
    "PlanningError",
    "ResultRecord",
    "ShardFile",
    "aggregate",
    "load_scan",
    "load_scans",
    "plan",
]
