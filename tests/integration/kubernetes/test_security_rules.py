"""A site's security review: Checkov's public Kubernetes rules over the Helm chart and the objects the operator
creates for a scan pass, except the rules docs/security.md lists as deliberately not followed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def scan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REPO / "security" / "scan.sh"), *args], capture_output=True, text=True, timeout=900, check=False
    )


def test_the_chart_and_a_scans_objects_pass_the_rule_set():
    result = scan()
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "Failed checks: 0" in result.stdout and "Passed checks:" in result.stdout


def test_the_rule_set_does_flag_a_pod_that_breaks_the_rules(tmp_path):
    """The same run, pointed at a Job running as root with a writable root filesystem, fails: the check bites."""
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "careless", "namespace": "physics"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x:1"}]}}},
    }
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    cache = Path(os.environ.get("HPSCAN_TOOLS_CACHE", Path.home() / ".cache" / "hpscan-tools"))
    checkov = next(cache.glob("checkov-*/bin/checkov"), None)
    assert checkov is not None, "security/scan.sh installs checkov first"
    result = subprocess.run(
        [str(checkov), "--config-file", str(REPO / "security" / "checkov.yaml"), "-d", str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode != 0 and "CKV_K8S_20" in result.stdout  # allowPrivilegeEscalation
