"""The paper's Figure 3: a parallel-coordinates plot of every combination, the best in red.

One vertical axis per hyperparameter (spec order) plus the objective as the last axis, better values up (a loss
axis runs from the highest loss at the bottom to the lowest at the top, and so does its colour bar). Explicit
`values` become categorical axes labelled with their values, log ranges log axes. Lines are coloured by the
objective, better lines drawn over worse ones, the best ten thicker and the best one red on top (legible with the
paper's 800 lines); failed combinations are grey and stop before the objective axis. Two renderings of the same
axes: a PNG (matplotlib, hpscan.report.parallel_png) and a self-contained interactive HTML (here: the figure as
plotly-shaped JSON, drawn on a canvas by static/parcoords.js, inline so the page works offline; the dashboard draws
its plot with the same figure and the same script).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from hpscan.api.contract import ParameterValue, ResultRecord
from hpscan.api.parameters import Parameter
from hpscan.core.planning import axis_size, axis_values
from hpscan.report.rundir import Ranked, ScanRun

AxisKind = Literal["categorical", "linear", "log"]

BEST_COLOUR = "#d62728"
FAILED_COLOUR = "#9a9a9a"
PRUNED_COLOUR = "#7f9fbf"
PARETO_COLOUR = "#e08214"
"""A multi-objective scan's Pareto set, in the parallel coordinates and in pareto-front.png."""
FADED_COLOUR = "#d5dde6"
"""Pruned trials in the interactive plot (the dashboard): pale, under the others."""
PRUNED_VALUE = -0.1
"""Their colour value: below every other line's (goodness runs 0..1)."""
COLOUR_MAP = "viridis"
MAX_LISTED_TICKS = 8
"""A discrete range with at most this many points gets one tick per point; longer ones get round ticks."""
HIGHLIGHTED = 10
"""The best lines drawn thicker (the best of all in red)."""


def _label_of(value: ParameterValue) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


@dataclass(frozen=True)
class Axis:
    """One vertical axis: maps a value to a height in [0, 1] and knows its ticks."""

    name: str
    kind: AxisKind
    lo: float = 0.0
    hi: float = 1.0
    categories: tuple[ParameterValue, ...] = ()
    tick_values: tuple[float, ...] = ()
    objective: bool = False
    flipped: bool = False
    """Low values at the top (a minimised objective: better is up)."""

    @property
    def label(self) -> str:
        return f"{self.name}\n(log scale)" if self.kind == "log" else self.name

    def _key(self, value: ParameterValue) -> tuple[str, ParameterValue]:
        return (type(value).__name__ if isinstance(value, bool | str) else "number", value)

    def position(self, value: ParameterValue) -> float:
        """Height of a value on this axis, 0 at the bottom and 1 at the top."""
        height = self._height(value)
        return 1.0 - height if self.flipped else height

    @cached_property
    def _category_heights(self) -> dict[tuple[str, ParameterValue], float]:
        """Each category's height, worked out once (10,000 lines ask for them on every dashboard update)."""
        last = len(self.categories) - 1
        return {self._key(c): (index / last if last else 0.5) for index, c in enumerate(self.categories)}

    def _height(self, value: ParameterValue) -> float:
        if self.kind == "categorical":
            height = self._category_heights.get(self._key(value))
            if height is None:
                raise ValueError(f"{value!r} is not one of the values of {self.name}")
            return height
        number = float(value)
        if self.hi == self.lo:
            return 0.5
        if self.kind == "log":
            return (math.log(number) - math.log(self.lo)) / (math.log(self.hi) - math.log(self.lo))
        return (number - self.lo) / (self.hi - self.lo)

    def ticks(self) -> list[tuple[float, str]]:
        """(height, label) of each tick."""
        if self.kind == "categorical":
            return [(self.position(c), _label_of(c)) for c in self.categories]
        digits = 4 if self.objective else 3
        return [(self.position(v), f"{v:.{digits}g}") for v in self.tick_values]


def _round_ticks(lo: float, hi: float, log: bool) -> tuple[float, ...]:
    from matplotlib.ticker import LogLocator, MaxNLocator

    if lo == hi:
        return (lo,)
    locator = LogLocator(base=10, subs=(1.0, 2.0, 5.0)) if log else MaxNLocator(nbins=6)
    values = [float(v) for v in locator.tick_values(lo, hi)]
    inside = [v for v in values if lo - 1e-12 * abs(lo) <= v <= hi + 1e-12 * abs(hi)]
    if log and len(inside) > MAX_LISTED_TICKS:
        inside = [v for v in inside if f"{v:.1e}".startswith("1.0")]
    return tuple(inside) or (lo, hi)


def parameter_axis(parameter: Parameter) -> Axis:
    """The axis of one hyperparameter, from its definition in the spec (so unexplored values still show)."""
    if parameter.values is not None:
        values = list(parameter.values)
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        ordered = sorted(values, key=float) if numeric else values
        return Axis(parameter.name, "categorical", categories=tuple(ordered))
    value_range = parameter.range
    assert value_range is not None
    kind: AxisKind = "log" if value_range.scale == "log" else "linear"
    size = axis_size(parameter)
    if size is not None and size <= MAX_LISTED_TICKS:
        ticks = tuple(float(v) for v in axis_values(parameter))
    else:
        ticks = _round_ticks(value_range.min, value_range.max, kind == "log")
    return Axis(parameter.name, kind, lo=value_range.min, hi=value_range.max, tick_values=ticks)


def objective_axis(name: str, values: Sequence[float], flipped: bool = False) -> Axis:
    """The objective's axis: linear, or log when positive values span more than a factor 30 (a diverged fit);
    ``flipped`` puts low values at the top (minimised: better is up)."""
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    log = lo > 0 and hi / lo > 30
    if not log and lo == hi:
        lo, hi = lo - 0.5 * abs(lo or 1.0), hi + 0.5 * abs(hi or 1.0)
    kind: AxisKind = "log" if log else "linear"
    return Axis(name, kind, lo=lo, hi=hi, tick_values=_round_ticks(lo, hi, log), objective=True, flipped=flipped)


@dataclass(frozen=True)
class Layout:
    """The axes and every line's heights, shared by the PNG and the HTML."""

    axes: list[Axis]
    objective: Axis
    lines: list[list[float]]
    """Heights on the parameter axes and the objective axis, succeeded combinations only, worst first."""
    values: list[float]
    """Objective value of each line, in the same order."""
    ids: list[str]
    failed_lines: list[list[float]]
    """Heights on the parameter axes only."""
    pruned_lines: list[list[float]]
    """Trials stopped early: heights on the parameter axes and, on the objective axis, their last epoch's value
    (held inside the axis)."""
    title: str
    subtitle: str


def axes(run: ScanRun) -> tuple[list[Axis], Axis]:
    """The parameter axes (from the spec, so unexplored values still show) and the objective's axis."""
    spec = run.scan.spec
    goal = spec.objective.goal
    objective = objective_axis(
        f"{spec.objective.metric}\n({'lower' if goal == 'minimize' else 'higher'} is better, up)",
        [r.value for r in run.ranked],
        flipped=goal == "minimize",
    )
    return [parameter_axis(p) for p in spec.parameters], objective


def titles(run: ScanRun) -> tuple[str, str]:
    """The plot's title (what was recorded) and subtitle (the best)."""
    metric = run.scan.spec.objective.metric
    title = f"HPScan {run.name}: {len(run.ranked)} of {run.plan.total} combinations succeeded"
    if run.pruned:
        title += f", {len(run.pruned)} pruned"
    if run.failed:
        title += f", {len(run.failed)} failed"
    pending = run.plan.total - run.recorded
    if pending:
        title += f", {pending} not run"
    subtitle = f"best: {run.best.id}, {metric} = {run.best.value:.4g}" if run.ranked else "no succeeded combination"
    return title, subtitle


def layout(run: ScanRun) -> Layout:
    """Place every recorded combination on the axes: worst first, so better lines are drawn on top."""
    parameter_axes, objective = axes(run)

    def heights(parameters: dict[str, ParameterValue]) -> list[float]:
        return [axis.position(parameters[axis.name]) for axis in parameter_axes]

    ordered = list(reversed(run.ranked))
    lines = [[*heights(r.record.parameters), objective.position(r.value)] for r in ordered]
    failed_lines = [heights(r.parameters) for r in run.failed]
    metric = run.scan.spec.objective.metric
    pruned_lines = [
        [*heights(r.parameters), min(max(objective.position(r.metrics[metric]), 0.0), 1.0)]
        for r in run.pruned
        if metric in r.metrics
    ]
    title, subtitle = titles(run)
    return Layout(
        axes=parameter_axes,
        objective=objective,
        lines=lines,
        values=[r.value for r in ordered],
        ids=[r.id for r in ordered],
        failed_lines=failed_lines,
        pruned_lines=pruned_lines,
        title=title,
        subtitle=subtitle,
    )


def _plotly_dimension(axis: Axis, values: list[ParameterValue] | list[float]) -> dict[str, object]:
    """A go.Parcoords dimension: categories as indices with their labels, log axes as log10 with real labels."""
    label = axis.name.replace("\n", " ")
    if axis.kind == "categorical":
        heights = [axis.position(v) for v in values]
        ticks = axis.ticks()
        return {
            "label": label,
            "values": heights,
            "range": [0, 1],
            "tickvals": [h for h, _ in ticks],
            "ticktext": [t for _, t in ticks],
        }
    # plotly cannot flip an axis (plotly.js#6159): a flipped axis plots -value (-log10) with the real tick labels
    sign = -1.0 if axis.flipped else 1.0
    if axis.kind == "log":
        low, high = sorted((sign * math.log10(axis.lo), sign * math.log10(axis.hi)))
        return {
            "label": f"{label} (log)",
            "values": [sign * math.log10(float(v)) for v in values],
            "range": [low, high],
            "tickvals": [sign * math.log10(v) for v in axis.tick_values],
            "ticktext": [f"{v:.4g}" for v in axis.tick_values],
        }
    low, high = sorted((sign * axis.lo, sign * axis.hi))
    dimension: dict[str, object] = {"label": label, "values": [sign * float(v) for v in values], "range": [low, high]}
    if axis.flipped:
        dimension["tickvals"] = [sign * v for v in axis.tick_values]
        dimension["ticktext"] = [f"{v:.4g}" for v in axis.tick_values]
    return dimension


def pruned_lines(run: ScanRun) -> list[ResultRecord]:
    """The pruned trials the interactive plot can draw: those whose last epoch has a number for the objective."""
    metric = run.scan.spec.objective.metric
    return [r for r in run.pruned if math.isfinite(r.metrics.get(metric, math.nan))]


def _pareto_dimension(run: ScanRun, stopped: int, ordered: list[Ranked]) -> dict[str, object]:
    """An axis to brush: select "yes" and only the Pareto set stays (pruned lines, first, are never on it)."""
    on_front = set(run.pareto)
    return {
        "label": "in the Pareto set",
        "values": [0] * stopped + [int(r.id in on_front) for r in ordered],
        "range": [0, 1],
        "tickvals": [0, 1],
        "ticktext": ["no", "yes"],
    }


def figure(run: ScanRun, pruned: bool = False) -> dict[str, Any]:
    """The interactive plot as a plotly figure (``{"data": [...], "layout": {...}}``, plain JSON): what
    ``draw_html`` writes and what the dashboard sends to its page, so both draw the same plot. With ``pruned``,
    trials stopped early are faded lines under the others (their last epoch's value, held inside the objective
    axis); the report leaves them out."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    parameter_axes, objective = axes(run)  # not layout(): the lines' heights are plotly's to work out
    ordered = list(reversed(run.ranked))  # worst first
    metric = run.scan.spec.objective.metric
    stopped = pruned_lines(run) if pruned else []
    parameters = [r.parameters for r in stopped] + [r.record.parameters for r in ordered]
    dimensions = [_plotly_dimension(axis, [p[axis.name] for p in parameters]) for axis in parameter_axes]
    held = [min(max(r.metrics[metric], objective.lo), objective.hi) for r in stopped]
    objective_values = [r.value for r in ordered]
    dimensions.append(_plotly_dimension(objective, held + objective_values))
    if run.scan.spec.multi_objective:
        dimensions.append(_pareto_dimension(run, len(stopped), ordered))

    # go.Parcoords draws lines with higher colour values on top, so the colour value is the *goodness* (the height
    # on the objective axis, which has better up), squeezed into [0, 0.9]; the best line gets 1.0, which the scale
    # paints red. Good lines are dark, as in the PNG; the colour bar runs the same way as the objective axis.
    # Pruned lines get PRUNED_VALUE, below every other, which the scale paints faded: drawn first, under the rest.
    cmap = colormaps[COLOUR_MAP]

    def goodness(value: float) -> float:
        return 0.9 * objective.position(value)

    colour = [goodness(v) for v in objective_values]
    if colour:
        colour[-1] = 1.0
    stops = [(0.9 * i / 10, to_hex(cmap(1.0 - i / 10))) for i in range(11)]
    stops += [(0.95, to_hex(cmap(0.0))), (0.9501, BEST_COLOUR), (1.0, BEST_COLOUR)]
    low = 0.0
    if stopped:
        low = PRUNED_VALUE
        stops = [(PRUNED_VALUE, FADED_COLOUR), (PRUNED_VALUE / 2, FADED_COLOUR), *stops]
        colour = [PRUNED_VALUE] * len(stopped) + colour
    scale = [[(value - low) / (1.0 - low), hex_colour] for value, hex_colour in stops]
    bar_ticks = objective.ticks()
    bar_values = [goodness(v) for v in objective.tick_values] + [0.975]
    bar_texts = [t for _, t in bar_ticks] + ["best"]
    if stopped:
        bar_values.append(PRUNED_VALUE * 0.75)
        bar_texts.append("pruned")
    trace = {
        "type": "parcoords",
        "dimensions": dimensions,
        "line": {
            "color": colour,
            "colorscale": scale,
            "cmin": low,
            "cmax": 1.0,
            "showscale": True,
            "colorbar": {
                "title": {"text": metric},
                "tickvals": bar_values,
                "ticktext": bar_texts,
            },
        },
        "labelangle": 0,
        "labelside": "top",
        "labelfont": {"size": 15},
        "tickfont": {"size": 13},
    }
    title, subtitle = titles(run)
    note = f"{title}<br><sup>{subtitle} (red); drag along an axis to select a range</sup>"
    return {
        "data": [trace],
        "layout": {
            "title": {"text": note, "x": 0.01, "y": 0.97, "yanchor": "top"},
            "margin": {"l": 90, "r": 60, "t": 150, "b": 40},
            "height": 620,
            "font": {"size": 13},
        },
    }


PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>{title}</title>
<style>body {{ font-family: system-ui, sans-serif; margin: 1em; color: #222; }}</style></head>
<body>
<div id="plot"></div>
<p>lines selected: <span id="selected"></span> (drag along an axis to select a range; click the axis to clear it)</p>
<script>{script}</script>
<script type="application/json" id="figure">{figure}</script>
<script>
window.hpscanPlot = HPScanParcoords.create(document.getElementById("plot"),
  JSON.parse(document.getElementById("figure").textContent),
  (lines) => {{ document.getElementById("selected").textContent = lines.length; }});
</script>
</body>
</html>
"""


def parcoords_js() -> str:
    """The canvas parallel-coordinates drawing (static/parcoords.js) both this page and the dashboard use."""
    from importlib import resources

    return resources.files("hpscan.report").joinpath("static", "parcoords.js").read_text(encoding="utf-8")


def draw_html(run: ScanRun, path: Path) -> Path:
    """Write parallel-coordinates.html: interactive (drag on an axis to filter), self-contained (its script inline,
    nothing fetched), drawn by parcoords.js from ``figure(run)``, as the dashboard draws it."""
    import html
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    # no "<" in the script element's text: "</script>" or "<!--" in a label would end or bend it
    figure_json = json.dumps(figure(run), allow_nan=False).replace("<", "\\u003c")
    page = PAGE.format(title=html.escape(f"HPScan {run.name}"), script=parcoords_js(), figure=figure_json)
    path.write_text(page, encoding="utf-8")
    return path
