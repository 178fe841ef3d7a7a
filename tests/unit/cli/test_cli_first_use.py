"""What a newcomer meets first: clear words for a missing folder, other YAML beside the scans, a YAML slip, a
failed scan's exit code, help in click's style (flags without a type), plurals, and attempts that survive a resume."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from dl1.cli import app as dl1_app
from hpscan.api.spec import HPScan
from hpscan.cli import app
from hpscan.engine import EngineSettings
from hpscan.local_scan import Machine, run_scan
from support import CONTRACT_PAYLOAD
from support.run_observers import Quiet

PAYLOAD = CONTRACT_PAYLOAD
FAST = EngineSettings(poll_seconds=0.05)  # a step every 50 ms: the stand-in payload is quick
runner = CliRunner()


def small_scan(knobs: dict | None = None, values: list | None = None, shards: int = 2) -> HPScan:
    return HPScan.model_validate(
        {
            "apiVersion": "hpscan.io/v1alpha1",
            "kind": "HPScan",
            "metadata": {"name": "first"},
            "spec": {
                "parameters": [{"name": "x", "values": values or [1, 2, 3, 4]}],
                "sharding": {"shards": shards},
                "retries": 0,
                "gpu": {"count": 0, "required": False},
                "payload": {
                    "image": "example.org/p:1",
                    "command": [sys.executable, str(PAYLOAD)],
                    "settings": {"contractPayload": knobs or {}},
                },
            },
        }
    )


def test_status_of_a_missing_run_folder_says_so(tmp_path):
    result = runner.invoke(app, ["status", str(tmp_path / "runs" / "nothing-here")])
    assert result.exit_code == 1 and "no such run folder" in result.output
    assert "Kubernetes" not in result.output and "kubeconfig" not in result.output.lower()


def test_validate_skips_what_is_not_an_hpscan_and_never_prints_none():
    result = runner.invoke(app, ["validate", *sorted(str(p) for p in Path("examples").glob("*.yaml"))])
    assert result.exit_code == 0, result.output
    assert "skipped: a Kustomization" in result.output and "None" not in result.output
    assert "HPScan quickstart: 24 combinations in 4 shards" in result.output


def test_a_misspelt_kind_is_still_a_problem(tmp_path):
    document = yaml.safe_load(Path("examples/quickstart.yaml").read_text())
    document["kind"] = "HPScn"
    (tmp_path / "scan.yaml").write_text(yaml.safe_dump(document))
    result = runner.invoke(app, ["validate", str(tmp_path / "scan.yaml")])
    assert result.exit_code == 2 and "kind: is 'HPScn', expected 'HPScan'" in result.output
    del document["apiVersion"]
    document["kind"] = "HPScan"
    (tmp_path / "scan.yaml").write_text(yaml.safe_dump(document))
    assert "apiVersion: is missing" in runner.invoke(app, ["validate", str(tmp_path / "scan.yaml")]).output


def test_a_yaml_error_names_the_line_of_its_cause(tmp_path):
    lines = ["apiVersion: hpscan.io/v1alpha1", "kind: HPScan", "metadata: {name: x}", "spec:", "  gpu: {count: 0",
             "  retries: 1"]  # fmt: skip
    (tmp_path / "scan.yaml").write_text("\n".join(lines) + "\n")
    result = runner.invoke(app, ["validate", str(tmp_path / "scan.yaml")])
    assert result.exit_code == 2 and "at line 5" in result.output and "not closed" in result.output


def test_one_of_a_kind_is_singular(tmp_path):
    document = yaml.safe_load(Path("examples/quickstart.yaml").read_text())
    document["spec"]["parameters"] = [{"name": "learning_rate", "values": [0.001]}]
    document["spec"]["sharding"] = {"shards": 1}
    (tmp_path / "scan.yaml").write_text(yaml.safe_dump(document))
    result = runner.invoke(app, ["validate", str(tmp_path / "scan.yaml")])
    assert "1 combination in 1 shard" in result.output and "1 combinations" not in result.output


def test_plain_flags_show_no_type_in_help():
    result = runner.invoke(app, ["run", "--help"], terminal_width=120)
    flags = [line for line in result.output.splitlines() if "--report" in line or "--plain" in line]
    assert len(flags) == 2 and not any("<bool>" in line for line in flags), flags


TYPER_METAVAR = re.compile(r"<(?:str|int|float|bool|path|file|directory|uuid|datetime)\b[^>]*>|<[^<>\s]*\|[^<>\s]*>")
"""typer's own metavars (``<str>``, ``<int range>``, ``<bool>``, choices ``<jsonl|csv>``), not help text's ``<id>``."""


def _every_command(cli: typer.Typer) -> list[tuple[str, ...]]:
    return [(), *((name,) for name in typer.main.get_command(cli).commands)]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("cli", "command"),
    [(app, c) for c in _every_command(app)] + [(dl1_app, c) for c in _every_command(dl1_app)],
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else "",
)
def test_help_shows_click_style_metavars_and_every_option(cli, command):
    """TEXT, INTEGER, PATH as typer and click users know them; nothing after a flag or --help; NAME, not {name}; every
    option's whole name on an 80-column terminal (rich cuts a long one to "--checkpoint-upload-se…")."""
    result = runner.invoke(cli, [*command, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert TYPER_METAVAR.findall(result.output) == []
    usage = next(line for line in result.output.splitlines() if "Usage:" in line)
    assert "{" not in usage
    help_line = next(line for line in result.output.splitlines() if "--help" in line)
    assert re.search(r"--help\s+Show this message", help_line), help_line  # a flag: no type between
    click_command = typer.main.get_command(cli)
    if command:
        click_command = click_command.commands[command[0]]  # type: ignore[attr-defined]
    for param in click_command.params:
        for option in (o for o in param.opts if o.startswith("--") and not getattr(param, "hidden", False)):
            assert option in result.output


def test_valued_options_show_their_type_the_click_way():
    result = runner.invoke(app, ["run", "--help"], terminal_width=200)
    lines = result.output.splitlines()
    assert re.search(r"--workers\s+-w\s+INTEGER RANGE", next(line for line in lines if "--workers" in line))
    assert "PATH" in next(line for line in lines if "--out" in line)
    assert "Usage: hpscan run [OPTIONS] FILE" in result.output


def test_a_failed_scan_exits_1_from_status_and_attempts_survive_a_resume(tmp_path):
    failing = small_scan({"exitCode": 1})
    status = run_scan(failing, tmp_path / "failing", Quiet(), machine=Machine(cpus=2, gpus=[]), settings=FAST)
    assert status.phase == "Failed"
    result = runner.invoke(app, ["status", str(tmp_path / "failing")])
    assert result.exit_code == 1 and "Failed" in result.output
    assert "condition Failed: " in result.output and "condition Stalled" not in result.output  # said once

    scan = small_scan()
    run_scan(scan, tmp_path / "ok", Quiet(), machine=Machine(cpus=2, gpus=[]), settings=FAST)
    again = run_scan(scan, tmp_path / "ok", Quiet(), machine=Machine(cpus=2, gpus=[]), settings=FAST)
    assert [s.attempts for s in again.shards] == [1, 1]
    shown = runner.invoke(app, ["status", str(tmp_path / "ok")], terminal_width=160)
    assert shown.exit_code == 0
    site_rows = [line.split("│")[1:4] for line in shown.output.split("sites", 1)[1].splitlines() if "│" in line]
    assert [cell.strip() for cell in site_rows[0]] == ["local", "local", "Usable"]  # the machine: the run's one site
