"""The Argo CD health check for HPScan, exactly as docs/gitops.md prints it, run with a real Lua interpreter (lupa):
``health(status)`` is what Argo CD would show (tests/unit/api/test_gitops_health.py, tests/unit/core/test_kstatus.py)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import lupa
import yaml

from hpscan.api.status import HPScanStatus

REPO = Path(__file__).resolve().parents[2]
KEY = "resource.customizations.health.hpscan.io_HPScan"
ARGO_HEALTH = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def health_script() -> str:
    """The Lua in docs/gitops.md's argocd-cm block."""
    for block in re.findall(r"```yaml\n(.*?)```", (REPO / "docs" / "gitops.md").read_text(), re.S):
        document = yaml.safe_load(block)
        if isinstance(document, dict) and KEY in (document.get("data") or {}):
            return document["data"][KEY]
    raise AssertionError(f"docs/gitops.md has no argocd-cm block with {KEY}")


def to_lua(runtime: Any, value: Any) -> Any:
    """JSON-like data as Argo CD hands it to Lua: objects and arrays as (1-based) tables."""
    if isinstance(value, dict):
        return runtime.table_from({k: to_lua(runtime, v) for k, v in value.items()})
    if isinstance(value, list):
        return runtime.table_from([to_lua(runtime, v) for v in value])
    return value


def health(status: dict[str, Any] | None, generation: int = 1) -> tuple[str, str]:
    if status is not None:
        HPScanStatus.model_validate(status)  # the samples are statuses the operator could write
    scan: dict[str, Any] = {
        "apiVersion": "hpscan.io/v1alpha1",
        "kind": "HPScan",
        "metadata": {"name": "dl1-seed-scan", "namespace": "ml-team", "generation": generation},
        "spec": {"objective": {"metric": "val_loss", "goal": "minimize"}},
    }
    if status is not None:
        scan["status"] = status
    runtime = lupa.LuaRuntime(unpack_returned_tuples=True)
    runtime.globals().obj = to_lua(runtime, scan)
    result = runtime.execute(health_script())
    assert result["status"] in ARGO_HEALTH
    return result["status"], result["message"]
