"""The parallel-coordinates plot (the paper's Figure 3) from synthetic records: axes, order, colours, self-contained HTML."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from hpscan.api.parameters import Parameter
from hpscan.report.parallel import (
    BEST_COLOUR,
    draw_html,
    figure,
    layout,
    objective_axis,
    parameter_axis,
    parcoords_js,
)
from hpscan.report.parallel_png import draw_png
from hpscan.report.rundir import load_run
from support.report_runs import write_fake_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_explicit_values_are_categorical_axes_labelled_with_their_values():
    axis = parameter_axis(Parameter.model_validate({"name": "activation", "values": ["relu", "elu", "tanh"]}))
    assert axis.kind == "categorical"
    assert [text for _, text in axis.ticks()] == ["relu", "elu", "tanh"]
    assert axis.position("relu") == 0.0 and axis.position("tanh") == 1.0


def test_a_value_not_on_a_categorical_axis_is_an_error_naming_the_axis():
    axis = parameter_axis(Parameter.model_validate({"name": "activation", "values": ["relu", "elu"]}))
    assert axis.position("elu") == 1.0 and axis.position("elu") == 1.0  # worked out once, the same again
    with pytest.raises(ValueError, match="'tanh' is not one of the values of activation"):
        axis.position("tanh")
    assert parameter_axis(Parameter.model_validate({"name": "seed", "values": [7]})).position(7) == 0.5


def test_numeric_values_are_sorted_bottom_to_top():
    axis = parameter_axis(Parameter.model_validate({"name": "layer1", "values": [128, 32, 64]}))
    assert [text for _, text in axis.ticks()] == ["32", "64", "128"]
    assert axis.position(64) == pytest.approx(0.5)


def test_a_log_range_gets_a_log_axis_with_a_tick_per_point():
    parameter = Parameter.model_validate(
        {"name": "learning_rate", "range": {"min": 1e-4, "max": 1e-2, "count": 3, "scale": "log"}}
    )
    axis = parameter_axis(parameter)
    assert axis.kind == "log"
    assert axis.label.endswith("(log scale)")
    assert axis.position(1e-3) == pytest.approx(0.5)
    assert [text for _, text in axis.ticks()] == ["0.0001", "0.001", "0.01"]


def test_a_long_linear_range_gets_round_ticks():
    axis = parameter_axis(Parameter.model_validate({"name": "dropout", "range": {"min": 0, "max": 0.5, "count": 51}}))
    assert axis.kind == "linear"
    assert 3 <= len(axis.ticks()) <= 8


def test_objective_axis_goes_log_only_for_a_wide_positive_spread():
    assert objective_axis("val_loss", [0.6, 0.7]).kind == "linear"
    assert objective_axis("val_loss", [0.6, 50.0]).kind == "log"
    assert objective_axis("val_loss", [0.6, 0.6]).position(0.6) == pytest.approx(0.5)


def test_layout_puts_the_objective_last_and_the_best_on_top(tmp_path: Path):
    run = load_run(write_fake_run(tmp_path, failed_every=5))
    placed = layout(run)
    assert [a.name for a in placed.axes] == run.plan.parameter_names
    assert len(placed.lines) == len(run.ranked) and len(placed.lines[0]) == len(placed.axes) + 1
    assert placed.ids[-1] == run.best.id  # drawn last: on top
    assert placed.values == sorted(placed.values, reverse=True)  # minimize: worst first
    assert len(placed.failed_lines) == len(run.failed) > 0
    assert f"{len(run.failed)} failed" in placed.title


def test_pruned_trials_are_their_own_faded_lines_never_ranked_or_failed(tmp_path: Path):
    run = load_run(write_fake_run(tmp_path, failed_every=5, pruned_every=3))
    assert run.pruned and all(r.status == "pruned" for r in run.pruned)
    assert not {r.id for r in run.pruned} & ({r.id for r in run.ranked} | {r.id for r in run.failed})
    placed = layout(run)
    assert len(placed.pruned_lines) == len(run.pruned) and len(placed.pruned_lines[0]) == len(placed.axes) + 1
    assert all(0.0 <= line[-1] <= 1.0 for line in placed.pruned_lines)  # held inside the objective axis
    assert f"{len(run.pruned)} pruned" in placed.title
    assert run.recorded == run.plan.total
    draw_png(run, tmp_path / "pc.png")


def test_png_is_written(tmp_path: Path):
    run = load_run(write_fake_run(tmp_path, failed_every=7))
    path = draw_png(run, tmp_path / "report" / "parallel-coordinates.png")
    assert path.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.slow
def test_800_combinations_draw_in_seconds(tmp_path: Path):
    run = load_run(write_fake_run(tmp_path, "dl1-seed-scan.yaml", failed_every=40))
    assert len(run.ranked) + len(run.failed) == 800
    started = time.monotonic()
    draw_png(run, tmp_path / "pc.png")
    draw_html(run, tmp_path / "pc.html")
    assert time.monotonic() - started < 20


def _parcoords(html: str) -> dict:
    """The figure JSON the page embeds for parcoords.js to draw."""
    match = re.search(r'<script type="application/json" id="figure">(.*?)</script>', html, re.S)
    assert match, "no figure in the page"
    assert "<" not in match.group(1)  # the title's <br> escaped: nothing in it can end the script element
    assert "HPScanParcoords.create(" in html and parcoords_js() in html  # drawn by the dashboard's own code
    return json.loads(match.group(1))["data"][0]


def test_html_is_self_contained_with_labelled_categorical_axes(tmp_path: Path):
    run = load_run(write_fake_run(tmp_path, failed_every=5))
    html = draw_html(run, tmp_path / "pc.html").read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]+src=", html), "its script must be inline, not from a CDN"
    assert "<link" not in html
    trace = _parcoords(html)
    assert trace["type"] == "parcoords"
    labels = [d["label"] for d in trace["dimensions"]]
    assert labels[:-1] == ["layer1", "layer2", "learning_rate (log)", "activation"]
    assert labels[-1].startswith("val_loss")
    activation = trace["dimensions"][3]
    assert activation["ticktext"] == ["relu", "elu"]
    # The best combination is the last line and takes the top of the colour scale, which is red; plotly draws
    # higher colour values on top, so better lines get higher values.
    colours = trace["line"]["color"]
    assert colours[-1] == 1.0 and max(colours[:-1]) <= 0.9
    assert colours[:-1] == sorted(colours[:-1])  # worst first, so the values rise
    assert trace["line"]["colorscale"][-1][1] == BEST_COLOUR
    # Failed combinations are left out of the interactive plot and counted in its title.
    assert len(colours) == len(run.ranked)
    assert f"{len(run.failed)} failed" in html


def test_better_is_up_on_the_objective_axis_and_its_colour_bar_alike(tmp_path: Path):
    run = load_run(write_fake_run(tmp_path, failed_every=5))
    placed = layout(run)
    assert placed.objective.flipped  # minimised: the lowest loss at the top
    assert placed.lines[-1][-1] == pytest.approx(1.0)  # the best line ends at the top of the objective axis
    trace = _parcoords(draw_html(run, tmp_path / "pc.html").read_text(encoding="utf-8"))
    objective = trace["dimensions"][-1]
    # the HTML plots -loss (plotly cannot flip an axis) with the real values as tick labels
    assert max(objective["values"]) == pytest.approx(-run.best.value)
    assert [float(t) for t in objective["ticktext"]] == pytest.approx([-v for v in objective["tickvals"]], rel=1e-3)
    # the colour bar's ticks rise with goodness: the lowest loss sits at the top of the bar, as on the axis
    bar = trace["line"]["colorbar"]
    ticks = [(v, float(t)) for v, t in zip(bar["tickvals"], bar["ticktext"], strict=False) if t != "best"]
    assert [loss for _, loss in sorted(ticks)] == sorted((loss for _, loss in ticks), reverse=True)


RANDOM_SCAN = """
apiVersion: hpscan.io/v1alpha1
kind: HPScan
metadata: {name: random-scan}
spec:
  objective: {metric: val_loss, goal: maximize}
  parameters:
    - {name: layer1, range: {min: 16, max: 512, step: 16}}
    - {name: learning_rate, range: {min: 1.0e-5, max: 1.0e-1, scale: log}}
    - {name: batch_norm, values: [true, false]}
  sampling: {strategy: random, samples: 60, seed: 3}
  sharding: {shards: 3}
  payload: {image: p}
"""


def test_random_scan_with_continuous_and_boolean_axes(tmp_path: Path):
    manifest = tmp_path / "random.yaml"
    manifest.write_text(RANDOM_SCAN)
    run = load_run(write_fake_run(tmp_path / "run", manifest=str(manifest)))
    placed = layout(run)
    kinds = [a.kind for a in placed.axes]
    assert kinds == ["linear", "log", "categorical"]
    assert [t for _, t in placed.axes[2].ticks()] == ["true", "false"]
    assert all(0.0 <= h <= 1.0 for line in placed.lines for h in line)
    assert placed.ids[-1] == run.best.id
    assert placed.values[-1] == max(placed.values)  # maximize: the best is the highest
    assert "higher is better" in placed.objective.name
    draw_png(run, tmp_path / "pc.png")
    trace = _parcoords(draw_html(run, tmp_path / "pc.html").read_text())
    assert trace["dimensions"][1]["label"] == "learning_rate (log)"


def test_a_diverged_loss_never_ranks_and_both_plots_still_draw(tmp_path: Path):
    """A network whose loss diverged reports inf or NaN: it is counted as failed, never ranked (not even last, where
    an inf stretched the objective axis until the tick maths overflowed), and both plots draw."""
    run_dir = write_fake_run(tmp_path / "run", limit=12)
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    for i, value in ((3, float("inf")), (4, float("nan")), (5, float("-inf"))):
        record = json.loads(lines[i])
        record["metrics"]["val_loss"] = value
        lines[i] = json.dumps(record)
    (run_dir / "results.jsonl").write_text("\n".join(lines) + "\n")
    run = load_run(run_dir)
    diverged = {json.loads(lines[i])["id"] for i in (3, 4, 5)}
    assert {r.id for r in run.failed} >= diverged and not diverged & {r.id for r in run.ranked}
    assert len(run.ranked) == 9
    assert figure(run, pruned=True)["data"][0]["dimensions"]
    draw_png(run, tmp_path / "parallel.png")
    assert (tmp_path / "parallel.png").stat().st_size > 10_000
