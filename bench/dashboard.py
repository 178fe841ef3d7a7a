"""How live `hpscan dashboard` is, in Debian's Chromium (headless; `make chromium`), on a scan of 10,000 trials:

- update: the time from a record being appended to the run folder to its line being on the plot's canvas (drawn
  and rasterised), median over 100 records appended one at a time (to a scan with 200 recorded), and over 5 more
  once 9,995 are recorded;
- load: from navigating to the page to the plot's canvas showing 10,000 lines (median of 3 loads);
- view: the server's side of an update at 10,000 trials, RunFolder.view() after one appended record (median of 20);
- brush: at 10,000 lines, from brushing an axis (Parcoords.brush, what a mouse drag calls) to the filtered lines on
  the canvas (median of 5, brushing and clearing in turn), and draw: the page's draw call alone (the rasterising
  follows it).

The canvas is read back one pixel (getImageData) before a time is taken: that waits for Chromium to rasterise it,
so a figure is the pixels, not only the drawing calls handed to the canvas. Without a GPU the figures are this
machine's CPUs; docs/dashboard.md has them, before and after the plot moved from plotly's WebGL to a canvas.

    .venv/bin/python bench/dashboard.py      # last line: update_ms=<median> load_ms=<median> update_10k_ms=<median>
                                             #   view_10k_ms=<median> brush_10k_ms=<median> draw_10k_ms=<median>
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from hpscan.dashboard.server import start, stop  # noqa: E402
from hpscan.dashboard.source import RunFolder  # noqa: E402
from support.dashboard_runs import chromium  # noqa: E402
from support.report_runs import write_fake_run  # noqa: E402

TRIALS = 10_000
FIRST, UPDATES, LATE_UPDATES, LOADS = 200, 100, 5, 3
SCAN = f"""
apiVersion: hpscan.io/v1alpha1
kind: HPScan
metadata: {{name: bench-dashboard}}
spec:
  objective: {{metric: val_loss, goal: minimize}}
  parameters:
    - {{name: layer1, range: {{min: 16, max: 512, step: 16}}}}
    - {{name: layer2, range: {{min: 16, max: 512, step: 16}}}}
    - {{name: learning_rate, range: {{min: 1.0e-5, max: 1.0e-1, scale: log}}}}
    - {{name: activation, values: [relu, elu]}}
  sampling: {{strategy: random, samples: {TRIALS}, seed: 3}}
  sharding: {{shards: 10}}
  payload: {{image: p}}
"""
LINES = "const d = window.hpscanDashboard; return d && d.plot ? d.plot.drawn.lines : 0"
"""The lines the plot's canvas shows (set when a frame is drawn, not when a state arrives)."""
PAINTED = "hpscanDashboard.plot.canvas.getContext('2d', {willReadFrequently: true}).getImageData(0, 0, 1, 1)"
"""Reading a pixel waits for the canvas to be rasterised: the lines are on screen, not only handed to the canvas."""
BRUSHES = 5
BRUSH = f"""
const [axis, range, done] = arguments, plot = hpscanDashboard.plot, started = performance.now();
plot.brush(axis, range);
const painted = () => {{ {PAINTED}; return performance.now() - started; }};
const drawn = () => plot.drawn.at > started ? done([painted(), plot.drawn.selected, plot.drawn.ms]) :
  requestAnimationFrame(drawn);
requestAnimationFrame(drawn);
"""
"""Brush an axis as the mouse does (Parcoords.brush: the selection, the table of the best selected, a redraw at
the next frame); returns the ms until the filtered lines are on the canvas's pixels, how many are selected and the ms the page's
draw call took (the rasterising follows it)."""


def brush_ms(browser) -> tuple[float, float]:
    """Median ms from brushing the activation axis (then clearing it) to the filtered redraw at 10,000 lines, and
    the median ms the canvas took to draw them."""
    took, draws = [], []
    for k in range(BRUSHES):
        ms, selected, draw = browser.execute_async_script(BRUSH, 3, [[-0.1, 0.1]] if k % 2 == 0 else None)
        assert 0 < selected <= TRIALS, selected
        took.append(ms)
        draws.append(draw)
    return statistics.median(took), statistics.median(draws)


def wait(condition, seconds: float = 120.0) -> float:
    started = time.perf_counter()
    while not condition():
        if time.perf_counter() - started > seconds:
            raise TimeoutError(f"not within {seconds} s")
    return time.perf_counter() - started


def server_view_ms(every: list[str], folder: Path, manifest: Path) -> float:
    """RunFolder.view() right after one more record, with 10,000 recorded: median of 20, in ms."""
    run_dir = write_fake_run(folder / "views", manifest=str(manifest), limit=0)
    results = run_dir / "results.jsonl"
    results.write_text("".join(every[:-20]))
    source = RunFolder(run_dir)
    source.view()
    took = []
    for line in every[-20:]:
        with results.open("a", encoding="utf-8") as handle:
            handle.write(line)
        started = time.perf_counter()
        source.view()
        took.append(time.perf_counter() - started)
    return statistics.median(took) * 1000


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    manifest = folder / "scan.yaml"
    manifest.write_text(SCAN)
    every = (write_fake_run(folder / "all", manifest=str(manifest), pruned_every=9) / "results.jsonl").read_text()
    lines = every.splitlines(keepends=True)  # every trial's record, in plan order: each one is a line of the plot
    run_dir = write_fake_run(folder / "run", manifest=str(manifest), limit=0)
    results = run_dir / "results.jsonl"
    results.write_text("".join(lines[:FIRST]))
    view_ms = server_view_ms(lines, folder, manifest)
    server = start(RunFolder(run_dir))
    browser = chromium()
    browser.set_script_timeout(300)

    def append(text: str) -> None:
        with results.open("a", encoding="utf-8") as handle:
            handle.write(text)

    def timed_appends(positions: range) -> list[float]:
        took = []
        for position in positions:
            shown = browser.execute_script(LINES)
            started = time.perf_counter()
            append(lines[position])
            wait(lambda shown=shown: browser.execute_script(LINES) > shown)
            browser.execute_script(PAINTED)
            took.append(time.perf_counter() - started)
            print(f"record {position}: {took[-1] * 1000:.0f} ms", file=sys.stderr)
        return took

    try:
        browser.get(server.url)
        wait(lambda: browser.execute_script(LINES) == FIRST)
        updates = timed_appends(range(FIRST, FIRST + UPDATES))
        append("".join(lines[FIRST + UPDATES : TRIALS - LATE_UPDATES]))
        wait(lambda: browser.execute_script(LINES) == TRIALS - LATE_UPDATES)
        late = timed_appends(range(TRIALS - LATE_UPDATES, TRIALS))
        loads = []
        for _ in range(LOADS):
            browser.get("about:blank")
            started = time.perf_counter()
            browser.get(server.url)
            wait(lambda: browser.execute_script(LINES) == TRIALS)
            browser.execute_script(PAINTED)
            loads.append(time.perf_counter() - started)
        brushed, draw = brush_ms(browser)
    finally:
        browser.quit()
        stop(server)
    ms = lambda seconds: f"{seconds * 1000:.0f}"  # noqa: E731
    print(f"updates at {FIRST}..{FIRST + UPDATES} trials (ms): min {ms(min(updates))} max {ms(max(updates))}; "
          f"at {TRIALS}: {', '.join(map(ms, late))}; loads at {TRIALS} (ms): {', '.join(map(ms, loads))}")  # fmt: skip
    print(
        f"update_ms={ms(statistics.median(updates))} load_ms={ms(statistics.median(loads))} "
        f"update_10k_ms={ms(statistics.median(late))} view_10k_ms={view_ms:.0f} brush_10k_ms={brushed:.0f} "
        f"draw_10k_ms={draw:.0f}"
    )


if __name__ == "__main__":
    main()
