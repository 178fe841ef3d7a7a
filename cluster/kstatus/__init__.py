"""How GitOps tools judge a resource, as tests see it: `compute(body)` runs kstatus (sigs.k8s.io/cli-utils, the
library behind Flux's health checks, Helm 4's --wait and the cli-utils appliers) on one object, `flux_health(body,
expressions)` Flux's own evaluator of a Kustomization's healthCheckExprs. Both are the Go programs of this folder,
built and cached by build.sh."""

from __future__ import annotations

import json
import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
GITOPS_DOC = HERE.parents[1] / "docs" / "gitops.md"


@cache
def checker(name: str = "kstatus") -> Path:
    """A checker binary (kstatus or flux-health): built by build.sh once per content of its sources (cached in the
    tools cache; a cold build takes a minute or a few on 2 cores), linked into .tools/bin."""
    built = subprocess.run([str(HERE / "build.sh"), name], capture_output=True, text=True, check=False)
    if built.returncode != 0:
        raise RuntimeError(f"cluster/kstatus/build.sh {name} failed ({built.returncode}):\n{built.stderr[-3000:]}")
    return Path(built.stdout.strip().splitlines()[-1])


def _verdict(command: list[str], body: dict[str, Any]) -> tuple[str, str]:
    result = subprocess.run(command, input=json.dumps(body), capture_output=True, text=True, check=False, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"{Path(command[0]).name} refused: {result.stderr.strip()}")
    verdict = json.loads(result.stdout)
    return verdict["status"], verdict["message"]


def compute(body: dict[str, Any]) -> tuple[str, str]:
    """kstatus's verdict on one object: its status (InProgress, Failed, Current, Terminating, ...) and message."""
    return _verdict([str(checker("kstatus"))], body)


def flux_health(body: dict[str, Any], expressions: dict[str, str]) -> tuple[str, str]:
    """What Flux makes of one object with a healthCheckExprs entry (its current, failed and inProgress): InProgress,
    Failed or Current, or Unknown with the error when an expression cannot be evaluated."""
    return _verdict([str(checker("flux-health")), json.dumps(expressions)], body)


def documented_flux_expressions() -> dict[str, str]:
    """The HPScan entry of the Flux Kustomization's healthCheckExprs in docs/gitops.md (current, failed,
    inProgress), as users copy it."""
    import yaml

    for block in re.findall(r"```yaml\n(.*?)```", GITOPS_DOC.read_text(), re.S):
        document = yaml.safe_load(block)
        if not isinstance(document, dict) or not document.get("apiVersion", "").startswith("kustomize.toolkit.fluxcd"):
            continue  # not a Flux Kustomization (kustomize's own, an argocd-cm, ...)
        for entry in document["spec"].get("healthCheckExprs", []):
            if entry["kind"] == "HPScan":
                return {k: entry[k] for k in ("current", "failed", "inProgress") if k in entry}
    raise LookupError(f"{GITOPS_DOC} has no Flux Kustomization with healthCheckExprs for HPScan")
