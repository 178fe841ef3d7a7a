"""The seam between the generic report and a payload's physics: report plugins, found through entry points.

hpscan knows nothing about what a payload's networks do; ``hpscan report`` asks the payload's own report plugin to
compare the picked combinations (best, median, worst) and to draw its section of index.html: from the models the scan
kept (``ScanRun.models``, spec.artifacts), or, with ``--retrain``, by training them again. A payload package
registers one object under the entry point group ``hpscan.report``, named by the first word of the payload's
command (``spec.payload.command[0]``), e.g. in its pyproject.toml::

    [project.entry-points."hpscan.report"]
    dl1 = "dl1.report:plugin"

The plugin may import hpscan (``hpscan.api``, ``hpscan.report``); hpscan never imports the plugin's package.
Loading the entry point should stay cheap (no TensorFlow): heavy imports belong inside ``compare``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, Protocol, runtime_checkable

from hpscan.api.spec import HPScanSpec
from hpscan.report.rundir import ReportError, ScanRun

ENTRY_POINT_GROUP = "hpscan.report"
"""The entry point group a payload package registers its report plugin in."""

Step = Callable[[str, int], None]
"""Told (what is being done, steps done of the plugin's ``steps``) as a comparison goes."""


@runtime_checkable
class ReportPlugin(Protocol):
    """What a payload adds to ``hpscan report``: the comparison of the picked networks and its part of index.html."""

    steps: int
    """How many progress steps ``compare`` reports (its ``step`` calls count 0 to steps - 1)."""
    files: Sequence[str]
    """The files ``compare`` writes into the report folder (listed in metrics.json under files.retrain)."""
    retrain_summary: str
    """What ``--retrain`` does, for the page of a report made without it (HTML, completes "hpscan report DIR
    --retrain ..."), e.g. "retrains the best, the median and the worst combination and compares them"."""

    def compare(self, run: ScanRun, report_dir: Path, step: Step, retrain: bool) -> dict[str, Any]:
        """Compare the run's picked combinations: their kept models (``run.picked_models()``), or retrained ones
        with ``retrain``; write the plots into report_dir and return the numbers behind them (JSON-ready, stored as
        metrics.json's ``retrain``). Raise ReportError for user errors. Its optional ``referencePoints`` lists taggers
        to set beside a multi-objective scan's Pareto front (hpscan.report.pareto.reference_points says the form)."""
        ...

    def sections(self, report_dir: Path, retrain: Mapping[str, Any]) -> str:
        """The HTML fragment index.html shows for a comparison: ``retrain`` is what ``compare`` returned."""
        ...


def payload_name(spec: HPScanSpec) -> str:
    """The name a scan's report plugin is registered under: the payload command's first word (its file name)."""
    return PurePosixPath(spec.payload.command[0]).name


def find_plugin(payload: str) -> ReportPlugin | None:
    """The report plugin registered for ``payload``, or None when no installed package registers one.

    Raises ReportError when one is registered but cannot be loaded, or is not a ReportPlugin.
    """
    found = [ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == payload]
    if not found:
        return None
    entry_point = found[0]
    try:
        plugin = entry_point.load()
    except ImportError as error:
        raise ReportError(
            f"the report plugin of the payload {payload!r} ({entry_point.value}, entry point group "
            f"{ENTRY_POINT_GROUP!r}) cannot be loaded: {error}"
        ) from None
    if not isinstance(plugin, ReportPlugin):
        raise ReportError(
            f"{entry_point.value} (entry point {payload!r} of the group {ENTRY_POINT_GROUP!r}) is not a report plugin: "
            "it needs steps, files, retrain_summary, compare() and sections()"
        )
    return plugin


def require(module: str, extra: str) -> None:
    """ReportError naming the pip extra to install when the Python package ``module`` is missing."""
    try:
        importlib.import_module(module)
    except ImportError:
        raise ReportError(f"the report needs the Python package {module!r}: pip install 'hpscan[{extra}]'") from None
