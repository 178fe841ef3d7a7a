"""For the dashboard's tests and bench: run folders of a scan still running (a status with a failing site, records
appended as a payload appends them), and Debian's Chromium driven by selenium."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

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


CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def chromium(width: int = 1280, height: int = 1400) -> Any:
    """Debian's Chromium, headless, through Debian's chromedriver (`make chromium` installs both). The driver is
    named, so selenium-manager (which would download one) never runs; were it called, it would fail."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        raise RuntimeError("Debian's chromium and chromium-driver are missing: `make chromium` installs them")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    # root in a container: no sandbox; no GPU: WebGL (plotly's parcoords) on SwiftShader, which Chromium now
    # only uses when asked
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}",
                     "--enable-unsafe-swiftshader", "--use-angle=swiftshader"):  # fmt: skip
        options.add_argument(argument)
    saved = os.environ.get("SE_MANAGER_PATH")
    os.environ["SE_MANAGER_PATH"] = "/bin/false"
    try:
        return webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    finally:
        if saved is None:
            del os.environ["SE_MANAGER_PATH"]
        else:
            os.environ["SE_MANAGER_PATH"] = saved
