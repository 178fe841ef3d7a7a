"""pareto-front.png: a multi-objective scan's trade-off (for dl1, light against c rejection at 77% b-efficiency).

Every succeeded combination is a point in the plane of the first two objectives, with its statistical error bars
where the records carry them (``<metric>_err``); the Pareto set (no other point better in every objective) is
drawn over them and joined in order, the best by the first objective in red. A third objective is named, not drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hpscan.core.results import error_of
from hpscan.report.parallel import BEST_COLOUR, PARETO_COLOUR
from hpscan.report.rundir import Ranked, ScanRun

OTHERS_COLOUR = "#8a8a8a"


@dataclass(frozen=True)
class FrontPoint:
    """One combination in the objectives' plane: its values and errors (None: not reported)."""

    id: str
    values: tuple[float, ...]
    errors: tuple[float | None, ...]


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


def draw_front(run: ScanRun, path: Path) -> Path:
    """Write pareto-front.png: every succeeded combination, the Pareto set joined, the best (first objective)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = front_points(run)
    on_front = set(run.pareto)
    front = [p for p in points if p.id in on_front]
    front.sort(key=lambda p: p.values[0])
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
    ax.set_xlabel(_label(run, 0))
    ax.set_ylabel(_label(run, 1))
    third = (
        f"; a third objective, {run.scan.spec.goals[2].metric}, is not drawn" if len(run.scan.spec.goals) > 2 else ""
    )
    ax.set_title(
        f"HPScan {run.name}: {len(points)} combinations, Pareto set of {len(front)}\n"
        f"error bars: statistical uncertainty (where reported){third}",
        fontsize=11,
        loc="left",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="best")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path
