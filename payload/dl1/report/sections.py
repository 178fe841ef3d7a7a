"""dl1's section of the report page: the retrained networks against the BDT, their ROC curves and f_c scan.

The generic page (hpscan.report.page) includes this fragment through the report plugin (dl1.report).
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from pathlib import Path
from typing import Any

from hpscan.report.page import cards, fmt, image, table

FC_TABLE_POINTS = (0.0, 0.018, 0.08, 0.2, 0.5, 1.0)
"""f_c values listed in the table under the f_c scan plot."""


def _with_passing(point: Mapping[str, Any], flavour: str) -> str:
    """A rejection with, in brackets, how many background jets passed the cut (its statistical weight)."""
    passing = point.get(f"{flavour}Passing")
    rejection = fmt(point[flavour], 3, none="∞")  # None: no background jet passed the cut
    return rejection if passing is None else f"{rejection} <small>({passing})</small>"


def retrain_sections(report_dir: Path, retrain: Mapping[str, Any]) -> str:
    """The retraining part of index.html: the comparison's numbers (``retrain``, metrics.json's ``retrain``) and
    the plots it drew into report_dir (roc.png, rejection-vs-fc.png)."""
    taggers: Mapping[str, Mapping[str, Any]] = retrain["taggers"]
    wp_names = list(next(iter(taggers.values()))["workingPoints"])
    fc = retrain["fc"]
    min_passing = retrain.get("minPassing", 5)
    parts = ["<h2>Retrained: best, median and worst against a BDT</h2>"]
    test = retrain["testSet"]
    parts.append(
        cards(
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
            params = ", ".join(f"{escape(k)}={fmt(v)}" for k, v in combination["parameters"].items())
            what += f"<br><small><code>{escape(combination['id'])}</code> {params}</small>"
        rows.append(
            [
                what,
                fmt(combination["scanValue"], 4) if combination else "",
                fmt(tagger.get("validationLoss"), 4),
                fmt(tagger.get("testLoss"), 4),
                fmt(tagger.get("epochs")),
                fmt(tagger.get("seconds"), 3),
            ]
        )
    metric = escape(retrain["objectiveMetric"])
    header = ["tagger", f"{metric} in the scan", "val_loss retrained", "test loss", "epochs", "training time (s)"]
    parts.append(table(header, rows, text_columns=1))
    parts.append(
        "<p>Losses are the payload's weighted cross-entropy (flavours weighted to the b-jet kinematics). A "
        "retraining starts from the scan's initial weights (seeded by the combination id) with the scan's settings, "
        "but sees the batches in another order, so its val_loss differs a little from the scan's.</p>"
    )
    parts.append(f'<div class="note">{escape(retrain["bdt"]["description"])}</div>')

    parts.append("<h3>ROC curves</h3>")
    parts.append(image(report_dir / "roc.png", "ROC curves", "roc"))
    header = ["tagger"] + [f"light rej. @ {w}%" for w in wp_names] + [f"c rej. @ {w}%" for w in wp_names]
    rows = []
    for tagger in taggers.values():
        points = tagger["workingPoints"]
        rows.append(
            [escape(tagger["label"])]
            + [_with_passing(points[w], "ujets") for w in wp_names]
            + [_with_passing(points[w], "cjets") for w in wp_names]
        )
    parts.append(table(header, rows))
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
    parts.append(image(report_dir / "rejection-vs-fc.png", "rejection against f_c"))
    header = ["tagger"] + [f"f<sub>c</sub> = {v:g}<br>light / c" for v in FC_TABLE_POINTS]
    fc_rows: list[str] = []
    for tagger in taggers.values():
        scan = tagger.get("fcScan")
        if scan:
            cells = []
            for value in FC_TABLE_POINTS:
                index = min(range(len(scan["fc"])), key=lambda i, v=value: abs(scan["fc"][i] - v))  # type: ignore[misc]
                cells.append(f"{fmt(scan['ujets'][index], 3, '∞')} / {fmt(scan['cjets'][index], 3, '∞')}")
            fc_rows.append("".join(f"<td>{c}</td>" for c in cells))
        else:
            points = tagger["workingPoints"][f"{round(retrain['scanWorkingPoint'] * 100)}"]
            fc_rows.append(
                f'<td colspan="{len(FC_TABLE_POINTS)}" style="text-align:center">'
                f"{fmt(points['ujets'], 3, '∞')} / {fmt(points['cjets'], 3, '∞')} at every f<sub>c</sub> "
                "(one output; the red star)</td>"
            )
        fc_rows[-1] = f'<tr><td class="text">{escape(tagger["label"])}</td>{fc_rows[-1]}</tr>'
    head = "".join(f'<th class="text">{h}</th>' if i == 0 else f"<th>{h}</th>" for i, h in enumerate(header))
    parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(fc_rows)}</tbody></table>")
    return "\n".join(parts)
