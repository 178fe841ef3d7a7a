"""index.html: one self-contained page (plots inlined as data URIs) tying the report together."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from hpscan.report.rundir import ScanRun

FC_TABLE_POINTS = (0.0, 0.018, 0.08, 0.2, 0.5, 1.0)
"""f_c values listed in the table under the f_c scan plot."""

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


def _fmt(value: Any, digits: int = 4, none: str = "") -> str:
    if value is None:
        return none
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return escape(str(value))


def _image(path: Path, alt: str, css_class: str = "") -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    extra = f' class="{css_class}"' if css_class else ""
    return f'<img src="data:image/png;base64,{data}" alt="{escape(alt)}"{extra}>'


def _table(
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


def _cards(items: Sequence[tuple[str, str]]) -> str:
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
                *[_fmt(record.parameters.get(n)) for n in names],
                _fmt(ranked.value, 5),
                str(record.shard),
                _fmt(record.epochs) if record.epochs is not None else "",
                f"{record.duration_seconds:.0f}" if record.duration_seconds is not None else "",
            ]
        )
    header = ["rank", "combination", *[escape(n) for n in names], metric, "shard", "epochs", "time (s)"]
    return _table(header, rows, text_columns=2, best_row=0)


def _with_passing(point: Mapping[str, Any], flavour: str) -> str:
    """A rejection with, in brackets, how many background jets passed the cut (its statistical weight)."""
    passing = point.get(f"{flavour}Passing")
    rejection = _fmt(point[flavour], 3, none="∞")  # None: no background jet passed the cut
    return rejection if passing is None else f"{rejection} <small>({passing})</small>"


def _retrain_sections(report_dir: Path, retrain: Mapping[str, Any]) -> str:
    taggers: Mapping[str, Mapping[str, Any]] = retrain["taggers"]
    wp_names = list(next(iter(taggers.values()))["workingPoints"])
    fc = retrain["fc"]
    min_passing = retrain.get("minPassing", 5)
    parts = ["<h2>Retrained: best, median and worst against a BDT</h2>"]
    test = retrain["testSet"]
    parts.append(
        _cards(
            [
                ("test jets (held out)", f"{test['jets']:,}"),
                ("b / c / light", f"{test['bjets']:,} / {test['cjets']:,} / {test['ujets']:,}"),
                ("training jets", f"{retrain['trainSet']['jets']:,}"),
                ("f_c of the ROC curves", f"{fc:g}"),
                ("retraining time", f"{retrain['seconds']:.0f} s"),
            ]
        )
    )
    rows = []
    for tagger in taggers.values():
        combination = tagger.get("combination")
        what = escape(tagger["label"])
        if combination:
            params = ", ".join(f"{escape(k)}={_fmt(v)}" for k, v in combination["parameters"].items())
            what += f"<br><small><code>{escape(combination['id'])}</code> {params}</small>"
        rows.append(
            [
                what,
                _fmt(combination["scanValue"], 4) if combination else "",
                _fmt(tagger.get("validationLoss"), 4),
                _fmt(tagger.get("testLoss"), 4),
                _fmt(tagger.get("epochs")),
                _fmt(tagger.get("seconds"), 3),
            ]
        )
    metric = escape(retrain["objectiveMetric"])
    header = ["tagger", f"{metric} in the scan", "val_loss retrained", "test loss", "epochs", "training time (s)"]
    parts.append(_table(header, rows, text_columns=1))
    parts.append(
        "<p>Losses are the payload's weighted cross-entropy (flavours weighted to the b-jet kinematics). A "
        "retraining starts from the scan's initial weights (seeded by the combination id) with the scan's settings, "
        "but sees the batches in another order, so its val_loss differs a little from the scan's.</p>"
    )
    parts.append(f'<div class="note">{escape(retrain["bdt"]["description"])}</div>')

    parts.append("<h3>ROC curves</h3>")
    parts.append(_image(report_dir / "roc.png", "ROC curves", "roc"))
    header = ["tagger"] + [f"light rej. @ {w}%" for w in wp_names] + [f"c rej. @ {w}%" for w in wp_names]
    rows = []
    for tagger in taggers.values():
        points = tagger["workingPoints"]
        rows.append(
            [escape(tagger["label"])]
            + [_with_passing(points[w], "ujets") for w in wp_names]
            + [_with_passing(points[w], "cjets") for w in wp_names]
        )
    parts.append(_table(header, rows))
    parts.append(
        f"<p>Rejection = 1 / (fraction of background jets passing the cut on D<sub>b</sub> that keeps the given "
        f"b-jet efficiency), D<sub>b</sub> = ln(p<sub>b</sub> / (f<sub>c</sub> p<sub>c</sub> + (1 &minus; f<sub>c</sub>) "
        f"p<sub>u</sub>)) with f<sub>c</sub> = {fc:g}. In brackets: background jets of the test set passing the cut; "
        f"with few of them the rejection is rough, and the ROC curves leave out points where fewer than {min_passing} "
        "pass. ∞: none passed.</p>"
    )

    parts.append(
        f"<h3>Light and c rejection at {round(retrain['scanWorkingPoint'] * 100)}% b-efficiency as f_c varies</h3>"
    )
    parts.append(_image(report_dir / "rejection-vs-fc.png", "rejection against f_c"))
    header = ["tagger"] + [f"f<sub>c</sub> = {v:g}<br>light / c" for v in FC_TABLE_POINTS]
    fc_rows: list[str] = []
    for tagger in taggers.values():
        scan = tagger.get("fcScan")
        if scan:
            cells = []
            for value in FC_TABLE_POINTS:
                index = min(range(len(scan["fc"])), key=lambda i, v=value: abs(scan["fc"][i] - v))  # type: ignore[misc]
                cells.append(f"{_fmt(scan['ujets'][index], 3, '∞')} / {_fmt(scan['cjets'][index], 3, '∞')}")
            fc_rows.append("".join(f"<td>{c}</td>" for c in cells))
        else:
            points = tagger["workingPoints"][f"{round(retrain['scanWorkingPoint'] * 100)}"]
            fc_rows.append(
                f'<td colspan="{len(FC_TABLE_POINTS)}" style="text-align:center">'
                f"{_fmt(points['ujets'], 3, '∞')} / {_fmt(points['cjets'], 3, '∞')} at every f<sub>c</sub> "
                "(one output; the red star)</td>"
            )
        fc_rows[-1] = f'<tr><td class="text">{escape(tagger["label"])}</td>{fc_rows[-1]}</tr>'
    head = "".join(f'<th class="text">{h}</th>' if i == 0 else f"<th>{h}</th>" for i, h in enumerate(header))
    parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(fc_rows)}</tbody></table>")
    return "\n".join(parts)


def write_page(run: ScanRun, report_dir: Path, metrics: Mapping[str, Any], top: int) -> Path:
    """Write report_dir/index.html from the run, the plots already in report_dir, and the metrics.json content."""
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
        _cards(
            [
                ("phase", escape(scan["phase"])),
                ("combinations", f"{counts['total']:,}"),
                ("succeeded", f"{counts['succeeded']:,}"),
                ("failed", f"{counts['failed']:,}"),
                ("not run", f"{counts['notRun']:,}"),
                ("shards", f"{run.plan.shard_count}"),
                (f"best {escape(spec.objective.metric)}", _fmt(best.value, 5)),
            ]
        ),
        f"<p>Objective: <b>{escape(objective)}</b>. Axes, in the manifest's order: "
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
        _image(report_dir / "parallel-coordinates.png", "parallel coordinates"),
        f"<h2>Top {min(top, len(run.ranked))} of {len(run.ranked)} succeeded combinations</h2>",
        _top_table(run, top),
    ]
    if metrics.get("retrain"):
        parts.append(_retrain_sections(report_dir, metrics["retrain"]))
    else:
        parts.append(
            "<h2>Retraining</h2><p>Not run. <code>hpscan report "
            f"{escape(str(run.run_dir))} --retrain</code> retrains the best, the median and the worst combination "
            "on the full training set and compares them on a held-out test set against a BDT (the paper's "
            "Figure 4).</p>"
        )
    parts.append(
        '<h2>Data</h2><p>Every number on this page: <a href="metrics.json">metrics.json</a>. Every record: '
        "<code>results.jsonl</code> in the run folder.</p></body></html>"
    )
    path = report_dir / "index.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
