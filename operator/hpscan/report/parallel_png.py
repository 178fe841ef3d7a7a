"""The parallel-coordinates plot as a PNG (matplotlib): the axes of hpscan.report.parallel.layout, drawn in layers
(pruned, failed, the rest, the best ten, the best in red), then the axes, the colour bar and the legend."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpscan.report.parallel import (
    BEST_COLOUR,
    COLOUR_MAP,
    FAILED_COLOUR,
    HIGHLIGHTED,
    PARETO_COLOUR,
    PRUNED_COLOUR,
    Layout,
    layout,
)
from hpscan.report.rundir import ScanRun

if TYPE_CHECKING:
    from matplotlib.axes import Axes

JITTER = 0.012
"""Half-width of the vertical spread given to lines at one tick (in axis-height units), so bundles show their size."""


def _jittered(lines: list[list[float]], n_parameter_axes: int, seed: int) -> list[list[float]]:
    """Spread lines that share a tick a little (deterministically), so a bundle of 80 lines looks like 80."""
    rng = random.Random(seed)
    out = []
    for line in lines:
        out.append([h + rng.uniform(-JITTER, JITTER) if i < n_parameter_axes else h for i, h in enumerate(line)])
    return out


class _Style:
    """Line widths, opacity and colours for this many lines and this objective."""

    def __init__(self, run: ScanRun, placed: Layout) -> None:
        import matplotlib
        from matplotlib import colors

        count = len(placed.lines) + len(placed.failed_lines)
        self.alpha = min(0.9, max(0.12, 5.0 / math.sqrt(max(count, 1))))
        self.width = 1.6 if count <= 50 else 1.0 if count <= 200 else 0.6
        if placed.objective.kind == "log":
            self.norm: colors.Normalize = colors.LogNorm(placed.objective.lo, placed.objective.hi)
        else:
            self.norm = colors.Normalize(placed.objective.lo, placed.objective.hi)
        # Dark colours for good values: they stand out on white; poor ones fade to light yellow-green.
        goal = run.scan.spec.objective.goal
        self.cmap = matplotlib.colormaps[COLOUR_MAP if goal == "minimize" else f"{COLOUR_MAP}_r"]


def _draw_pareto(ax: Axes, placed: Layout, xs: list[int], pareto: set[str]) -> None:
    """A multi-objective scan's Pareto set: orange lines over the others (the best stays red on top)."""
    lines = [line for line, i in zip(placed.lines, placed.ids, strict=True) if i in pareto and i != placed.ids[-1]]
    for line in lines:
        ax.plot(xs, line, color=PARETO_COLOUR, linewidth=2.4, zorder=5, solid_capstyle="round")


def _draw_lines(ax: Axes, placed: Layout, xs: list[int], style: _Style) -> None:
    """Pruned and failed lines under the others; worse lines under better ones; the best in red on top."""
    from matplotlib import patheffects
    from matplotlib.collections import LineCollection

    n_parameters = len(placed.axes)
    alpha, width = style.alpha, style.width
    if placed.pruned_lines:  # faded: they were judged hopeless before the end; their value is not final
        pruned = _jittered(placed.pruned_lines, n_parameters, seed=3)
        ax.add_collection(
            LineCollection(
                [list(zip(xs, line, strict=True)) for line in pruned],
                colors=PRUNED_COLOUR,
                linewidths=width,
                alpha=min(alpha, 0.35),
                zorder=1,
            )
        )
    if placed.failed_lines:
        failed = _jittered(placed.failed_lines, n_parameters, seed=2)
        ax.add_collection(
            LineCollection(
                [list(zip(xs[:n_parameters], line, strict=True)) for line in failed],
                colors=FAILED_COLOUR,
                linewidths=width,
                linestyles="dashed",
                alpha=alpha,
                zorder=1,
            )
        )
    lines = _jittered(placed.lines, n_parameters, seed=1)
    # worst first: the rest thin and faint, then the best HIGHLIGHTED (but the best) thicker, then the best in red
    split = max(len(lines) - HIGHLIGHTED, 0)
    for group, values, lw, opacity, z in (
        (lines[:split], placed.values[:split], width, alpha, 2),
        (lines[split:-1], placed.values[split:-1], max(1.8, width), 0.95, 3),
    ):
        if group:
            ax.add_collection(
                LineCollection(
                    [list(zip(xs, line, strict=True)) for line in group],
                    colors=style.cmap(style.norm(values)),
                    linewidths=lw,
                    alpha=opacity,
                    zorder=z,
                )
            )
    if placed.lines:
        ax.plot(
            xs,
            placed.lines[-1],
            color=BEST_COLOUR,
            linewidth=3.2,
            zorder=6,
            solid_capstyle="round",
            path_effects=[patheffects.withStroke(linewidth=5.5, foreground="white")],
        )


def _draw_axes(ax: Axes, placed: Layout, xs: list[int]) -> None:
    """One vertical axis per parameter and the objective's, with ticks and bold names; the title."""
    for x, axis in zip(xs, [*placed.axes, placed.objective], strict=True):
        ax.plot([x, x], [0, 1], color="black", linewidth=1.3, zorder=7)
        for height, text in axis.ticks():
            ax.plot([x - 0.03, x], [height, height], color="black", linewidth=1.0, zorder=7)
            ax.text(
                x - 0.05,
                height,
                text,
                ha="right",
                va="center",
                fontsize=10,
                zorder=8,
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.92, "pad": 0.8},
            )
        ax.text(x, 1.03, axis.label, ha="center", va="bottom", fontsize=10.5, fontweight="bold")
    ax.set_xlim(-0.45, len(xs) - 1 + 0.2)
    ax.set_ylim(-0.03, 1.16)
    ax.set_axis_off()
    ax.set_title(placed.title, fontsize=12.5, loc="left")


def _legend_handles(placed: Layout, metric: str, pareto: int | None = None) -> list[Any]:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=BEST_COLOUR, linewidth=3.0, label=placed.subtitle)]
    if pareto is not None:
        label = f"Pareto set: {pareto} (no other combination better in every objective)"
        handles.append(Line2D([], [], color=PARETO_COLOUR, linewidth=2.4, label=label))
    if len(placed.lines) > 2:
        shown = min(HIGHLIGHTED, len(placed.lines)) - 1
        handles.append(Line2D([], [], color="black", linewidth=1.8, label=f"the next {shown} best (thicker)"))
    if placed.pruned_lines:
        pruned = f"pruned: {len(placed.pruned_lines)} (stopped early; {metric} at their last epoch)"
        handles.append(Line2D([], [], color=PRUNED_COLOUR, alpha=0.5, label=pruned))
    if placed.failed_lines:
        failed = f"failed: {len(placed.failed_lines)} (no {metric})"
        handles.append(Line2D([], [], color=FAILED_COLOUR, linestyle="dashed", label=failed))
    return handles


def draw_png(run: ScanRun, path: Path) -> Path:
    """Write parallel-coordinates.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    placed = layout(run)
    n_axes = len(placed.axes) + 1
    xs = list(range(n_axes))
    fig, ax = plt.subplots(figsize=(max(8.0, 1.55 * n_axes + 3.0), 6.0), layout="constrained")
    style = _Style(run, placed)
    _draw_lines(ax, placed, xs, style)
    multi = run.scan.spec.multi_objective
    if multi:
        _draw_pareto(ax, placed, xs, set(run.pareto))
    _draw_axes(ax, placed, xs)

    metric = run.scan.spec.objective.metric
    scalar = matplotlib.cm.ScalarMappable(norm=style.norm, cmap=style.cmap)
    colourbar = fig.colorbar(scalar, ax=ax, pad=0.01, fraction=0.035, aspect=30)
    colourbar.set_label(f"{metric} (line colour)")
    if placed.objective.flipped:
        colourbar.ax.invert_yaxis()  # the same way as the objective axis: better is up
    # Level with the title, above the axis names.
    ax.legend(
        handles=_legend_handles(placed, metric, len(run.pareto) if multi else None),
        loc="lower right",
        bbox_to_anchor=(1.0, 1.0),
        fontsize=9.5,
        frameon=False,
        borderaxespad=0.2,
    )

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path
