"""examples/multi-objective.yaml (light against c rejection at 77%, Optuna's multi-objective TPE) through the operator
on the local control plane, the real dl1 payload in pods on the test node agent: the status holds the Pareto set
of the records the pods published, and `hpscan report NAME` copies the scan from the cluster and draws the front."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from support.multi_objective import SAMPLES, SETTINGS, drawn_front, front_of
from support.operator_support import REPO, create, wait_phase

pytestmark = [pytest.mark.integration, pytest.mark.slow]
pytest.importorskip("tensorflow")

PREFIX = f"hpsmo-{secrets.token_hex(2)}"


def test_the_multi_objective_example_through_the_operator_holds_its_front_and_the_report_draws_it(
    cluster, k8s, ns, operator, tmp_path
):
    body = yaml.safe_load((REPO / "examples" / "multi-objective.yaml").read_text())
    spec = body["spec"]
    spec["sampling"]["samples"] = SAMPLES
    spec["payload"]["settings"] = SETTINGS
    spec["artifacts"] = {"keep": "none"}
    spec["parallelism"] = 2  # two TensorFlow pods at once on a 2-core machine
    create(k8s, ns, body)
    status = wait_phase(cluster, k8s, ns, "multi-objective", {"Succeeded", "Failed"}, 900)["status"]
    assert status["phase"] == "Succeeded", status.get("message")

    hpscan = str(Path(sys.executable).parent / "hpscan")
    env = {"KUBECONFIG": str(cluster.kubeconfig), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    exported = subprocess.run([hpscan, "results", "multi-objective", "-n", ns], env=env, capture_output=True,
                              text=True, timeout=120, check=False)  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    records = [json.loads(line) for line in exported.stdout.splitlines()]
    assert len({r["id"] for r in records}) == len(records) == SAMPLES
    expected = front_of(records)
    assert status["paretoSize"] == len(expected) and [m["id"] for m in status["pareto"]] == expected
    row = cluster.kubectl("get", "hps", "multi-objective", "-n", ns).stdout.splitlines()[1].split()
    assert row[4] == str(len(expected))  # NAME PHASE DONE BEST PARETO ...

    folder = tmp_path / "copy"
    report = subprocess.run([hpscan, "report", "multi-objective", "-n", ns, "--out", str(folder)], env=env,
                            capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    assert drawn_front(folder / "report" / "pareto-front.png") == sorted(expected)  # exactly the non-dominated
