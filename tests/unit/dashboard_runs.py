"""Run folders of a scan still running, for the dashboard's tests: a status with a failing site, records appended
as a payload appends them."""

from __future__ import annotations

import json
from pathlib import Path

from hpscan.api.contract import ResultRecord
from hpscan.core.manifest import load_scan
from hpscan.core.planning import plan
from hpscan.core.results import iter_record_lines

FAILING_SITE = "spec.gpu.required is true but no NVIDIA GPU is visible here (nvidia-smi)"


def write_status(run_dir: Path) -> None:
    status = {
        "phase": "Running",
        "sites": [
            {"name": "local", "backend": "local", "state": "Usable", "reason": "ProbePassed"},
            {"name": "grid", "backend": "htcondor", "state": "Excluded", "reason": "GPUUnavailable",
             "message": FAILING_SITE},
        ],
        "shards": [{"index": 0, "site": "local", "phase": "Running", "done": 3, "total": 8, "moves": 1}],
    }  # fmt: skip
    (run_dir / "status.json").write_text(json.dumps(status), encoding="utf-8")


def append_record(run_dir: Path, position: int, loss: float) -> str:
    """Append the record of the plan's combination at ``position``, as a payload would; returns its id."""
    scan = load_scan(run_dir / "scan.yaml")
    planned = plan(scan.metadata.name, scan.spec)
    combination = list(planned.combinations())[position]
    record = ResultRecord(
        id=combination.id,
        shard=planned.shard_of(position),
        parameters=combination.parameters,
        metrics={"val_loss": loss},
        status="succeeded",
    )
    with (run_dir / "results.jsonl").open("a", encoding="utf-8") as results:
        results.writelines(iter_record_lines([record]))
    return record.id
