"""dl1's part of ``hpscan report``: the b-tagging comparison of the paper's Figure 4, and c-tagging.

hpscan finds ``plugin`` through the entry point ``dl1`` of the group ``hpscan.report`` (pyproject.toml) for every
scan whose payload command starts with ``dl1``. Modules: ``retrain`` (the payload's jets, a kept model evaluated, one
retrained network), ``bdt`` (the BDT baseline), ``cache`` (what need not be computed twice), ``performance``
(rejections with uncertainties, f_c scans, c-tagging; atlas-ftag-tools), ``tagging_plots`` (roc.png,
rejection-vs-fc.png, c-tagging.png; puma-hep), ``comparison`` (all of it in order) and ``sections`` (the HTML of
index.html's section).
Importing this package stays cheap: TensorFlow, puma and scikit-learn are imported only when a comparison runs.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hpscan.report.plugin import ReportPlugin, Step, require
from hpscan.report.rundir import ReportError, ScanRun


class DL1ReportPlugin:
    """Compares the best, the median and the worst combination's network (kept or retrained) with a BDT on held-out
    jets."""

    steps: int = 6
    """the test jets, three networks (evaluated or retrained), the BDT, the rejections and plots."""
    files: Sequence[str] = ("roc.png", "rejection-vs-fc.png", "c-tagging.png")
    retrain_summary: str = (
        "retrains the best, the median and the worst combination on the full training set and compares them on a "
        "held-out test set against a BDT (the paper's Figure 4)"
    )

    def compare(self, run: ScanRun, report_dir: Path, step: Step, retrain: bool) -> dict[str, Any]:
        require("puma", "report")
        require("sklearn", "report")
        require("h5py", "payload")
        require("ftag", "payload")
        if importlib.util.find_spec("tensorflow") is None:  # found, not imported: dl1 imports it when it trains
            raise ReportError("the report needs the Python package 'tensorflow': pip install 'hpscan[tf-cpu]'")
        from dl1.report.comparison import compare

        return compare(run, report_dir, step, retrain=retrain)

    def sections(self, report_dir: Path, retrain: Mapping[str, Any]) -> str:
        from dl1.report.sections import retrain_sections

        return retrain_sections(report_dir, retrain)


plugin: ReportPlugin = DL1ReportPlugin()
"""The object the ``hpscan.report`` entry point ``dl1`` names."""
