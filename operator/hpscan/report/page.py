"""index.html: one self-contained page (plots inlined as data URIs) tying the report together.

The payload's report plugin adds its own section (hpscan.report.plugin); it may build it with the helpers here
(``fmt``, ``image``, ``table``, ``cards``) so that it matches the page's style.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from hpscan.core.ranking import tie_note
from hpscan.report.plugin import ENTRY_POINT_GROUP, ReportPlugin
from hpscan.report.rundir import ScanRun

STYLE = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2rem auto; max-width: 1200px;
       padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; }
.sub { color: #666; margin-top: 0; }
.cards { display: flex; flex-wrap: wrap; gap: 0.8rem; margin: 1rem 0; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 0.5rem 0.9rem; min-width: 7rem; }
.card b { display: block; font-size: 1.3rem; }
.card span { color: #666; font-size: 0.85rem; }
table { border-collapse: collapse; margin: 0.6rem 0; font-size: 0.92rem; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.6rem; text-align: right; }
th { background: #f4f4f4; } td.text, th.text { text-align: left; }
tr.best td { background: #fde8e8; font-weight: 600; }
img { max-width: 100%; border: 1px solid #eee; }
img.roc { max-width: 760px; }
.note { background: #f7f7fb; border-left: 4px solid #99c; padding: 0.5rem 0.9rem; }
code { background: #f3f3f3; padding: 0 0.25rem; }
"""


def fmt(value: Any, digits: int = 4, none: str = "") -> str:
    if value is None:
        return none
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return escape(str(value))


def image(path: Path, alt: str, css_class: str = "") -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    extra = f' class="{css_class}"' if css_class else ""
    return f'<img src="data:image/png;base64,{data}" alt="{escape(alt)}"{extra}>'


def table(
    header: Sequence[str], rows: Sequence[Sequence[str]], text_columns: int = 1, best_row: int | None = None
) -> str:
    head = "".join(f'<th class="text">{h}</th>' if i < text_columns else f"<th>{h}</th>" for i, h in enumerate(header))
    body = []
    for r, row in enumerate(rows):
        cells = "".join(
            f'<td class="text">{c}</td>' if i < text_columns else f"<td>{c}</td>" for i, c in enumerate(row)
        )
        body.append(f'<tr class="best">{cells}</tr>' if r == best_row else f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def cards(items: Sequence[tuple[str, str]]) -> str:
    return (
        '<div class="cards">'
        + "".join(f'<div class="card"><b>{v}</b><span>{k}</span></div>' for k, v in items)
        + "</div>"
    )


def _top_table(run: ScanRun, top: int) -> str:
    names = run.plan.parameter_names
    metric = escape(run.scan.spec.objective.metric)
    rows = []
    for ranked in run.ranked[:top]:
        record = ranked.record
        rows.append(
            [
                str(ranked.rank + 1),
                f"<code>{escape(ranked.id)}</code>",
                *[fmt(record.parameters.get(n)) for n in names],
                fmt(ranked.value, 5),
                str(record.shard),
                fmt(record.epochs) if record.epochs is not None else "",
                f"{record.duration_seconds:.0f}" if record.duration_seconds is not None else "",
            ]
        )
    header = ["rank", "combination", *[escape(n) for n in names], metric, "shard", "epochs", "time (s)"]
    return table(header, rows, text_columns=2, best_row=0)


def _with_error(value: float, error: float | None) -> str:
    return fmt(value, 4) if error is None else f"{fmt(value, 4)} ± {fmt(error, 2)}"


def _pareto_section(run: ScanRun, metrics: Mapping[str, Any]) -> str:
    """A multi-objective scan's front: the figure and its members with their errors ('' for one objective)."""
    pareto = metrics["scan"].get("pareto")
    if not pareto:
        return ""
    names = [o["metric"] for o in pareto["objectives"]]
    rows = [
        [f"<code>{escape(m['id'])}</code>", *[_with_error(m["values"][n], m["errors"].get(n)) for n in names]]
        for m in pareto["members"]
    ]
    goals = ", ".join(f"{escape(o['metric'])} ({o['goal']})" for o in pareto["objectives"])
    return "".join(
        [
            f"<h2>Pareto front: {len(rows)} combinations</h2>",
            f"<p>Objectives: {goals}. A combination is in the Pareto set when no other one is at least as good in "
            "every objective and better in one; the trade-off between them is the physicist's choice. Error bars and "
            "±: statistical uncertainty, where the records report it (<code>&lt;metric&gt;_err</code>); members "
            "whose error bars overlap are not told apart by this scan. The parallel coordinates mark the set in "
            "orange.</p>",
            image(run.run_dir / "report" / "pareto-front.png", "Pareto front"),
            table(["combination", *[escape(n) for n in names]], rows, text_columns=1),
        ]
    )


def _tie_note(run: ScanRun) -> str:
    """The honest word on the best: tied within errors, where the leaders' values overlap ('' when it is clear)."""
    if not run.tied:
        return ""
    metric = escape(run.scan.spec.objective.metric)
    listed = min(run.scan.spec.top_k, len(run.ranked))
    return (
        f'<div class="note">The best {metric} is <b>{escape(tie_note(run.tied, listed))}</b>: their values '
        "overlap within their statistical errors, so this scan names no single winner among them.</div>"
    )


def _retraining(
    run: ScanRun, report_dir: Path, metrics: Mapping[str, Any], plugin: ReportPlugin | None, payload: str
) -> str:
    if metrics.get("retrain") and plugin is not None:
        return plugin.sections(report_dir, metrics["retrain"])
    if plugin is None:
        return (
            f"<h2>Retraining</h2><p>Not available: the payload <code>{escape(payload)}</code> has no report plugin "
            f"(an entry point named <code>{escape(payload)}</code> in the group <code>{ENTRY_POINT_GROUP}</code>), "
            "so <code>--retrain</code> has nothing to retrain with.</p>"
        )
    return (
        "<h2>Retraining</h2><p>Not run: the scan kept no model of its best, median and worst combination "
        "(spec.artifacts). <code>hpscan report "
        f"{escape(str(run.run_dir))} --retrain</code> {plugin.retrain_summary}.</p>"
    )


def _also(spec: Any) -> str:
    """For several objectives: the others, and that the first ranks (best, median and worst are picked by it)."""
    if not spec.multi_objective:
        return ""
    others = ", ".join(f"{escape(g.metric)} ({g.goal})" for g in spec.goals[1:])
    return f", with {others} (several objectives: the first ranks the table and picks the best, median and worst)"


def write_page(
    run: ScanRun,
    report_dir: Path,
    metrics: Mapping[str, Any],
    top: int,
    plugin: ReportPlugin | None = None,
    payload: str = "",
) -> Path:
    """Write report_dir/index.html from the run, the plots already in report_dir, and the metrics.json content.

    ``plugin`` (the payload's report plugin, None when it has none) draws the retraining section from
    ``metrics["retrain"]``; ``payload`` is the name it is registered under.
    """
    spec = run.scan.spec
    scan = metrics["scan"]
    counts = scan["combinations"]
    objective = f"{spec.objective.metric} ({spec.objective.goal})"
    best = run.best
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>hpscan report: {escape(run.name)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>HPScan <code>{escape(run.name)}</code></h1>",
        f'<p class="sub">Report generated {escape(metrics["generatedAt"])} by hpscan {escape(metrics["hpscanVersion"])} '
        f"from <code>{escape(str(run.run_dir))}</code>.</p>",
        cards(
            [
                ("phase", escape(scan["phase"])),
                ("combinations", f"{counts['total']:,}"),
                ("succeeded", f"{counts['succeeded']:,}"),
                ("failed", f"{counts['failed']:,}"),
                ("not run", f"{counts['notRun']:,}"),
                ("shards", f"{run.plan.shard_count}"),
                (f"best {escape(spec.objective.metric)}", fmt(best.value, 5)),
            ]
        ),
        f"<p>Objective: <b>{escape(objective)}</b>{_also(spec)}. Axes, in the manifest's order: "
        + ", ".join(f"<code>{escape(n)}</code>" for n in run.plan.parameter_names)
        + ".</p>",
    ]
    if run.problems or run.foreign:
        parts.append(
            f'<div class="note">{len(run.problems)} unreadable lines in results.jsonl and {run.foreign} records of '
            "another plan were left out.</div>"
        )
    parts += [
        "<h2>Parallel coordinates</h2>",
        "<p>One line per combination, one axis per hyperparameter and the objective last; colour = objective, "
        "the best combination in red, failed combinations grey. "
        '<a href="parallel-coordinates.html">Interactive version</a> (drag along an axis to filter).</p>',
        image(report_dir / "parallel-coordinates.png", "parallel coordinates"),
        _pareto_section(run, metrics),
        f"<h2>Top {min(top, len(run.ranked))} of {len(run.ranked)} succeeded combinations</h2>",
        _tie_note(run),
        _top_table(run, top),
    ]
    parts.append(_retraining(run, report_dir, metrics, plugin, payload))
    parts.append(
        '<h2>Data</h2><p>Every number on this page: <a href="metrics.json">metrics.json</a>. Every record: '
        "<code>results.jsonl</code> in the run folder.</p></body></html>"
    )
    path = report_dir / "index.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
