"""pareto-front.png: a multi-objective scan's trade-off (for dl1, light against c rejection at 77% b-efficiency).

Every succeeded combination is a point in the plane of the first two objectives, with its statistical error bars
where the records carry them (``<metric>_err``); the Pareto set (no other point better in every objective) is
drawn over them and joined in order, the best by the first objective in red. A third objective is named, not drawn.
A payload's report plugin may add reference taggers in the same plane (dl1: the BDT, the paper's red star): drawn
as labelled stars when comparable, else named in the legend with the reason (``ReferencePoint``). The PNG's
``hpscan`` text chunk lists, as JSON, the Pareto set and the references drawn, so a reader (or a test) can check the
figure against the records.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpscan.core.results import error_of
from hpscan.report.parallel import BEST_COLOUR, PARETO_COLOUR
from hpscan.report.rundir import Ranked, ReportError, ScanRun

OTHERS_COLOUR = "#8a8a8a"
REFERENCE_COLOUR = "#ffbf00"
"""Reference taggers are gold stars: red already marks the scan's best."""
REFERENCE_POINTS = "referencePoints"
"""The key of a plugin's ``compare`` result that lists its reference taggers (see ReferencePoint)."""


@dataclass(frozen=True)
class FrontPoint:
    """One combination in the objectives' plane: its values and errors (None: not reported)."""

    id: str
    values: tuple[float, ...]
    errors: tuple[float | None, ...]


@dataclass(frozen=True)
class ReferencePoint:
    """A tagger outside the scan, in the metrics of its records (dl1: the BDT at 77% b-efficiency).

    ``note`` says why it is not comparable with this scan's combinations (then it is named in the legend, not
    drawn); None: comparable."""

    label: str
    values: Mapping[str, float]
    errors: Mapping[str, float]
    note: str | None = None

    def position(self, metrics: Sequence[str]) -> tuple[float, ...] | None:
        """Its values in the plane of ``metrics``; None when it lacks one or is not comparable."""
        if self.note is not None or not all(m in self.values for m in metrics):
            return None
        return tuple(float(self.values[m]) for m in metrics)


def reference_points(compared: Mapping[str, Any] | None) -> list[ReferencePoint]:
    """The reference taggers a plugin's ``compare`` result lists under ``referencePoints`` (none without one).

    Each entry: ``{"label", "values": {metric: value}, "errors": {metric: error}, "note": why not comparable or
    null}``. Raises ReportError naming the entry when one is malformed (a plugin's defect, said plainly)."""
    entries = (compared or {}).get(REFERENCE_POINTS) or []
    points = []
    for index, entry in enumerate(entries):
        try:
            points.append(
                ReferencePoint(
                    label=str(entry["label"]),
                    values={str(k): float(v) for k, v in entry["values"].items()},
                    errors={str(k): float(v) for k, v in (entry.get("errors") or {}).items() if v is not None},
                    note=None if entry.get("note") is None else str(entry["note"]),
                )
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ReportError(
                f"the report plugin's {REFERENCE_POINTS}[{index}] is malformed ({error!r}): it needs a label and "
                "values by metric"
            ) from None
    return points


def front_points(run: ScanRun) -> list[FrontPoint]:
    """The succeeded combinations with a value of every objective, in rank order."""
    goals = run.scan.spec.goals

    def point(ranked: Ranked) -> FrontPoint | None:
        metrics = ranked.record.metrics
        if not all(g.metric in metrics for g in goals):
            return None
        return FrontPoint(
            ranked.id,
            tuple(metrics[g.metric] for g in goals),
            tuple(error_of(ranked.record, g.metric) for g in goals),
        )

    return [p for p in map(point, run.ranked) if p is not None]


def _label(run: ScanRun, index: int) -> str:
    goal = run.scan.spec.goals[index]
    return f"{goal.metric} ({'higher' if goal.goal == 'maximize' else 'lower'} is better)"


def _errorbar(ax: object, points: list[FrontPoint], **style: object) -> None:
    if not points:
        return
    xs = [p.values[0] for p in points]
    ys = [p.values[1] for p in points]
    x_err = [p.errors[0] or 0.0 for p in points]
    y_err = [p.errors[1] or 0.0 for p in points]
    ax.errorbar(xs, ys, xerr=x_err, yerr=y_err, linestyle="none", **style)  # type: ignore[attr-defined]


def _draw_references(ax: Any, run: ScanRun, references: Sequence[ReferencePoint]) -> list[str]:
    """Comparable references as labelled stars with error bars; the others named in the legend. Returns the labels
    of those drawn."""
    metrics = [g.metric for g in run.scan.spec.goals[:2]]
    drawn = []
    for reference in references:
        where = reference.position(metrics)
        if where is None:
            why = reference.note or f"it has no {' or '.join(m for m in metrics if m not in reference.values)}"
            ax.plot([], [], marker="*", markersize=12, color="none", markeredgecolor="black", linestyle="none",
                    label=textwrap.fill(f"{reference.label}: not drawn ({why})", 52))  # fmt: skip
            continue
        x_err, y_err = (reference.errors.get(m) for m in metrics)
        ax.errorbar([where[0]], [where[1]], xerr=x_err, yerr=y_err, marker="*", markersize=18,
                    color=REFERENCE_COLOUR, markeredgecolor="black", ecolor="black", capsize=3, linestyle="none",
                    zorder=6, label=reference.label)  # fmt: skip
        drawn.append(reference.label)
    return drawn


def _front_figure(run: ScanRun, references: Sequence[ReferencePoint]) -> tuple[Any, dict[str, list[str]]]:
    """The figure, and what it shows: the Pareto set's ids (in the order joined) and the references drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = front_points(run)
    on_front = set(run.pareto)
    front = sorted((p for p in points if p.id in on_front), key=lambda p: p.values[0])
    others = [p for p in points if p.id not in on_front]
    fig, ax = plt.subplots(figsize=(7.5, 5.8), layout="constrained")
    style = {"elinewidth": 0.8, "capsize": 2}
    _errorbar(
        ax, others, marker="o", markersize=4, color=OTHERS_COLOUR, alpha=0.55, label="other combinations", **style
    )
    _errorbar(
        ax, front, marker="D", markersize=6, color=PARETO_COLOUR, label=f"Pareto set: {len(front)}", zorder=4, **style
    )
    if front:
        ax.plot([p.values[0] for p in front], [p.values[1] for p in front], color=PARETO_COLOUR, zorder=3)
    best = next((p for p in points if p.id == run.best.id), None)
    if best is not None:
        name = run.scan.spec.goals[0].metric
        ax.plot(*best.values[:2], marker="*", markersize=15, color=BEST_COLOUR, linestyle="none", zorder=5,
                label=f"best {name}: {best.id}")  # fmt: skip
    drawn = _draw_references(ax, run, references)
    ax.set_xlabel(_label(run, 0))
    ax.set_ylabel(_label(run, 1))
    goals = run.scan.spec.goals
    third = f"; a third objective, {goals[2].metric}, is not drawn" if len(goals) > 2 else ""
    ax.set_title(
        f"HPScan {run.name}: {len(points)} combinations, Pareto set of {len(front)}\n"
        f"error bars: statistical uncertainty (where reported){third}",
        fontsize=11,
        loc="left",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="best")
    return fig, {"pareto": [p.id for p in front], "references": drawn}


def draw_front(run: ScanRun, path: Path, references: Sequence[ReferencePoint] = ()) -> Path:
    """Write pareto-front.png: every succeeded combination, the Pareto set joined, the best (first objective), the
    comparable references; what it shows goes into the PNG's ``hpscan`` text chunk (JSON)."""
    import matplotlib.pyplot as plt

    fig, shown = _front_figure(run, references)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, metadata={"hpscan": json.dumps(shown)})
    plt.close(fig)
    return path
