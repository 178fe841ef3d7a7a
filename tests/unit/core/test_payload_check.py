"""A payload's settings and parameter values are checked with the payload's own models before anything is
submitted: `hpscan validate`, `plan`, `run` and the operator refuse what dl1 would refuse 24 times over."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from hpscan.api.spec import HPScan
from hpscan.cli import app
from hpscan.controller.reconcile import reconcile_scan
from hpscan.core import payloads
from hpscan.core.payloads import check_payload, representative_combinations
from hpscan.core.planning import plan
from hpscan.errors import ManifestError
from hpscan.local_scan import Machine, run_scan

QUICKSTART = yaml.safe_load(Path("examples/quickstart.yaml").read_text())


def scan_with(settings: dict | None = None, parameter: dict | None = None, command: list[str] | None = None) -> dict:
    document = yaml.safe_load(yaml.safe_dump(QUICKSTART))
    document["spec"]["payload"]["settings"].update(settings or {})
    if parameter is not None:  # replaces the axis of that name, or adds one
        axes = [p for p in document["spec"]["parameters"] if p["name"] != parameter["name"]]
        document["spec"]["parameters"] = [*axes, parameter]
    if command is not None:
        document["spec"]["payload"]["command"] = command
    return document


@pytest.mark.parametrize(
    ("document", "complaint"),
    [
        (scan_with({"patiense": 3}), "settings.patiense: unknown setting"),
        (scan_with({"data": {"path": "/data/train.h5"}}), "settings.data.path: unknown setting"),
        (scan_with(parameter={"name": "activation", "values": ["relu", "swishh"]}), "'swishh' is not one of relu"),
        (scan_with(parameter={"name": "dropout", "values": [0.1]}), "unknown parameter 'dropout'"),
    ],
)
def test_validate_names_what_the_payload_refuses(tmp_path, document, complaint):
    path = tmp_path / "scan.yaml"
    path.write_text(yaml.safe_dump(document))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2 and complaint in result.output, result.output


def test_plan_and_run_refuse_before_anything_is_written(tmp_path):
    path = tmp_path / "scan.yaml"
    path.write_text(yaml.safe_dump(scan_with({"patiense": 3})))
    planned = CliRunner().invoke(app, ["plan", str(path), "--out", str(tmp_path / "shards")])
    assert planned.exit_code == 2 and "patiense" in planned.output and not (tmp_path / "shards").exists()
    with pytest.raises(ManifestError, match="patiense"):
        run_scan(HPScan.model_validate(scan_with({"patiense": 3})), tmp_path / "run", None, machine=Machine(2, []))  # type: ignore[arg-type]
    assert not (tmp_path / "run").exists()


def test_the_operator_fails_such_a_scan_with_invalid_spec():
    document = scan_with(parameter={"name": "activation", "values": ["swishh"]})
    document["metadata"].update({"namespace": "physics", "uid": "u-pc", "generation": 1})
    outcome = reconcile_scan(document, {})
    assert outcome.status.phase == "Failed" and "swishh" in outcome.status.message
    assert outcome.events[0].reason == "InvalidSpec"


def test_a_payload_without_a_checker_is_not_checked():
    spec = HPScan.model_validate(scan_with({"anything": 1}, command=["my-payload"])).spec
    assert check_payload(plan("other", spec)) == []


def test_every_value_of_every_axis_is_checked_without_building_the_grid():
    spec = HPScan.model_validate(QUICKSTART).spec
    planned = plan("q", spec)
    seen = {p.name: {c[p.name] for c in representative_combinations(planned)} for p in spec.parameters}
    assert all(len(seen[p.name]) == len(p.values or []) or p.range for p in spec.parameters)
    assert len(representative_combinations(planned)) <= 1 + sum(len(v) for v in seen.values())


def test_dl1s_checker_loads_and_refuses_without_h5py():
    """The operator image has no h5py: dl1's checker loads all the same and names what it refuses."""
    script = (
        "import sys\n"
        "sys.modules['h5py'] = None  # as in the operator image: importing it fails\n"
        "from hpscan.core.payloads import find_checker\n"
        "checker = find_checker(['dl1'])\n"
        "assert checker is not None, 'no checker'\n"
        "print(checker({'epochs': -3, 'data': {'synthetic': {'jets': 1000}}}, [{}]))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "settings.epochs" in result.stdout


class BrokenEntryPoint:
    value = "dl1.validation:check"

    def load(self):
        raise ModuleNotFoundError("No module named 'h5py'")


def test_a_registered_checker_that_cannot_load_refuses_the_scan_with_its_cause(monkeypatch):
    monkeypatch.setattr(payloads, "entry_points", lambda group, name: [BrokenEntryPoint()])
    document = scan_with({"epochs": -3})
    document["metadata"].update({"namespace": "physics", "uid": "u-broken", "generation": 1})
    outcome = reconcile_scan(document, {})
    failed = next(c for c in outcome.status.conditions if c.type == "Failed")
    assert (failed.status, failed.reason) == ("True", "PayloadCheckUnavailable")
    assert "dl1.validation:check" in failed.message and "No module named 'h5py'" in failed.message
    assert [(e.type, e.reason) for e in outcome.events] == [("Warning", "PayloadCheckUnavailable")]
    assert "h5py" in outcome.events[0].message


def test_validate_refuses_when_the_checker_cannot_load(tmp_path, monkeypatch):
    monkeypatch.setattr(payloads, "entry_points", lambda group, name: [BrokenEntryPoint()])
    path = tmp_path / "scan.yaml"
    path.write_text(yaml.safe_dump(scan_with()))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 1 and "cannot be loaded" in result.output, result.output  # not checked: not valid
