"""kstatus, the library Flux's health checks, Helm 4's --wait and the cli-utils appliers judge a resource with, as
tests see it: `compute(body)` runs the Go checker of this folder (main.go, sigs.k8s.io/cli-utils) on one object."""

from __future__ import annotations

import json
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


@cache
def checker() -> Path:
    """The checker binary: built by build.sh once per content of its sources (cached in the tools cache; a cold
    build takes about a minute on 2 cores), linked into .tools/bin."""
    built = subprocess.run([str(HERE / "build.sh")], capture_output=True, text=True, check=False)
    if built.returncode != 0:
        raise RuntimeError(f"cluster/kstatus/build.sh failed ({built.returncode}):\n{built.stderr[-3000:]}")
    return Path(built.stdout.strip().splitlines()[-1])


def compute(body: dict[str, Any]) -> tuple[str, str]:
    """kstatus's verdict on one object: its status (InProgress, Failed, Current, Terminating, ...) and message."""
    result = subprocess.run(
        [str(checker())], input=json.dumps(body), capture_output=True, text=True, check=False, timeout=30
    )
    if result.returncode != 0:
        raise RuntimeError(f"the kstatus checker refused the object: {result.stderr.strip()}")
    verdict = json.loads(result.stdout)
    return verdict["status"], verdict["message"]
