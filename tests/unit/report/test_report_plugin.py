"""The seam between the generic report and a payload's physics: report plugins found through entry points."""

from __future__ import annotations

import json
from collections.abc import Mapping
from html import escape
from pathlib import Path
from typing import Any

import pytest

from hpscan.report import ENTRY_POINT_GROUP, ReportError, ScanRun, build_report, load_run
from hpscan.report import plugin as plugin_module
from hpscan.report.plugin import ReportPlugin, Step, find_plugin, payload_name
from support.report_runs import write_fake_run


class FakeEntryPoint:
    def __init__(self, name: str, loaded: object) -> None:
        self.name, self.value, self.group, self._loaded = name, f"fake_{name}:plugin", ENTRY_POINT_GROUP, loaded

    def load(self) -> object:
        if isinstance(self._loaded, Exception):
            raise self._loaded
        return self._loaded


class CountingPlugin:
    """A payload's plugin that 'compares' in two steps and draws a one-line section."""

    steps = 2
    files = ("compared.txt",)
    retrain_summary = "compares <i>things</i>"

    def compare(self, run: ScanRun, report_dir: Path, step: Step, retrain: bool) -> dict[str, Any]:
        step("comparing", 0)
        (report_dir / "compared.txt").write_text(run.best.id)
        step("still comparing", 1)
        return {"best": run.best.id}

    def sections(self, report_dir: Path, retrain: Mapping[str, Any]) -> str:
        return f"<h2>Compared</h2><p>best: {escape(retrain['best'])}</p>"


@pytest.fixture
def registered(monkeypatch):
    """Replace the installed entry points of the group with the ones a test names."""
    plugins: dict[str, object] = {}

    def entry_points(group: str):
        assert group == ENTRY_POINT_GROUP
        return [FakeEntryPoint(name, loaded) for name, loaded in plugins.items()]

    monkeypatch.setattr(plugin_module.importlib.metadata, "entry_points", entry_points)
    return plugins


def test_dl1_registers_its_plugin_under_the_group():
    plugin = find_plugin("dl1")
    assert isinstance(plugin, ReportPlugin)
    assert type(plugin).__module__ == "dl1.report"
    assert list(plugin.files) == ["roc.png", "rejection-vs-fc.png", "c-tagging.png"] and plugin.steps == 6


def test_a_payload_without_a_plugin_still_gets_the_parallel_coordinates_report(tmp_path: Path):
    run_dir = write_fake_run(tmp_path / "run", command=["my-payload", "train"])
    assert find_plugin("my-payload") is None
    page = build_report(run_dir)
    report = run_dir / "report"
    for name in ("parallel-coordinates.png", "parallel-coordinates.html", "index.html", "metrics.json"):
        assert (report / name).stat().st_size > 0, name
    assert json.loads((report / "metrics.json").read_text())["retrain"] is None
    html = page.read_text()
    assert "<code>my-payload</code> has no report plugin" in html and ENTRY_POINT_GROUP in html

    with pytest.raises(ReportError, match="'my-payload' has no report plugin") as raised:
        build_report(run_dir, retrain=True)
    assert ENTRY_POINT_GROUP in str(raised.value)


def test_the_plugin_is_named_by_the_command_s_first_word(tmp_path: Path):
    run_dir = write_fake_run(tmp_path / "run", command=["/opt/payload/bin/my-payload", "train"])
    assert payload_name(load_run(run_dir).scan.spec) == "my-payload"


def test_the_generic_report_runs_the_plugin_and_includes_its_section(tmp_path: Path, registered):
    registered["my-payload"] = CountingPlugin()
    run_dir = write_fake_run(tmp_path / "run", command=["my-payload"])
    steps: list[tuple[str, int, int]] = []
    page = build_report(run_dir, retrain=True, progress=lambda what, done, total: steps.append((what, done, total)))
    assert [(what, done) for what, done, _ in steps] == [
        ("reading the run folder", 0),
        ("drawing parallel-coordinates.png", 1),
        ("writing parallel-coordinates.html", 2),
        ("comparing", 3),
        ("still comparing", 4),
        ("writing index.html and metrics.json", 5),
        ("done", 6),
    ]
    assert {total for _, _, total in steps} == {6}  # the plugin's steps count from the first step on
    metrics = json.loads((run_dir / "report" / "metrics.json").read_text())
    best = metrics["scan"]["best"]["id"]
    assert metrics["retrain"] == {"best": best}
    assert metrics["files"]["retrain"] == ["compared.txt"]
    html = page.read_text()
    assert f"<h2>Compared</h2><p>best: {best}</p>" in html and "Not run" not in html

    build_report(run_dir)  # without --retrain the page says what the plugin would do
    assert "--retrain</code> compares <i>things</i>." in page.read_text()


def test_a_broken_plugin_is_a_clear_error_only_when_retraining(tmp_path: Path, registered):
    registered["my-payload"] = ImportError("No module named 'sklearn'")
    registered["odd-payload"] = object()
    run_dir = write_fake_run(tmp_path / "run", command=["my-payload"])
    build_report(run_dir)  # the plugin is not needed without --retrain
    with pytest.raises(ReportError, match=r"my-payload.*cannot be loaded: No module named 'sklearn'"):
        build_report(run_dir, retrain=True)
    with pytest.raises(ReportError, match="is not a report plugin"):
        find_plugin("odd-payload")
