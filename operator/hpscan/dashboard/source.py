"""A run folder (`hpscan run --out DIR`) as the dashboard's source: noticed changing by its files' sizes and
times, read again when it changes."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hpscan.api.contract import RESULTS_FILE, LineProblem, ResultRecord, complete_lines, parse_records
from hpscan.api.status import HPScanStatus
from hpscan.api.trials import PROGRESS_FILE, JsonLines, read_progress
from hpscan.core.manifest import load_scan
from hpscan.core.planning import plan
from hpscan.dashboard.view import arrival_times, curve, view
from hpscan.report.rundir import ReportError, scan_run

Signature = tuple[tuple[str, int, int], ...]


def read_status(path: Path) -> HPScanStatus | None:
    """status.json (written whole by `hpscan run`), or None when missing or unreadable."""
    try:
        return HPScanStatus.model_validate_json(path.read_bytes())
    except (OSError, ValueError):
        return None


class RunFolder:
    """The scan in a run folder. ``signature()`` is cheap (a stat per file) and changes when a record, the
    status or a trial's epoch is written; ``view()`` reads what was appended to results.jsonl since the last
    view (records are parsed and checked against the plan once each: at 10,000 trials a view takes a third of
    what reading the whole folder again took; bench/dashboard.py)."""

    def __init__(self, run_dir: Path, clock: Callable[[], float] = time.time) -> None:
        if not (run_dir / "scan.yaml").is_file():
            raise ReportError(f"{run_dir}: no scan.yaml; give the output folder of hpscan run (its --out)")
        self.run_dir = run_dir
        self.clock = clock
        self.scan = load_scan(run_dir / "scan.yaml")
        self.plan = plan(self.scan.metadata.name, self.scan.spec)
        self.seen: dict[str, float | None] = {}
        """When the dashboard first saw each record without a finished_at (for the ETA)."""
        self.read_before = False
        self._offset = 0
        self._owned: list[ResultRecord] = []
        self._foreign = 0
        self._problems: list[LineProblem] = []

    def _files(self) -> list[Path]:
        work = sorted((self.run_dir / "work").glob(f"shard-*/{PROGRESS_FILE}"))
        return [self.run_dir / RESULTS_FILE, self.run_dir / "status.json", *work]

    def signature(self) -> Signature:
        stamps = []
        for path in self._files():
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            stamps.append((path.name, stat.st_size, stat.st_mtime_ns))
        return tuple(stamps)

    def _read_new_records(self) -> None:
        """Fold in the records appended since the last read (all of them again if the file was replaced by a
        shorter one)."""
        path = self.run_dir / RESULTS_FILE
        try:
            if path.stat().st_size < self._offset:
                self._offset, self._owned, self._foreign, self._problems = 0, [], 0, []
        except FileNotFoundError:
            return
        lines, self._offset = complete_lines(path, self._offset)
        records, problems = parse_records(lines)
        owned = [r for r in records if self.plan.owns(r.id, r.parameters)]
        self._owned += owned
        self._foreign += len(records) - len(owned)
        self._problems += problems

    def view(self) -> dict[str, Any]:
        now = self.clock()
        status = read_status(self.run_dir / "status.json")
        self._read_new_records()
        try:
            run = scan_run(self.run_dir, self.scan, self.plan, self._owned, self._foreign, self._problems)
        except ReportError:  # no record yet: progress, sites and shards only
            run = None
        records = [] if run is None else [*(r.record for r in run.ranked), *run.failed, *run.pruned]
        # a record without finished_at arrived when first seen; those there before the first read, at unknown times
        first_read = not self.read_before
        self.read_before = True
        for record in records:
            if record.finished_at is None and record.id not in self.seen:
                self.seen[record.id] = None if first_read else now
        return view(self.scan, run, status, arrival_times(records, self.seen), now)

    def curve(self, trial_id: str) -> dict[str, Any]:
        progress = []
        for path in self._files()[2:]:
            progress += read_progress(JsonLines(path).read_new())
        return curve(progress, trial_id)
