"""dl1's section of the report page: the picked networks against the BDT, ROC curves, f_c scan and c-tagging, each
rejection with its statistical uncertainty and the counts behind it.

The generic page (hpscan.report.page) includes this fragment through the report plugin (dl1.report).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from html import escape
from pathlib import Path
from typing import Any

from hpscan.report.page import cards, fmt, image, table

FC_TABLE_POINTS = (0.0, 0.018, 0.08, 0.2, 0.5, 1.0)
"""f_c values listed in the table under the f_c scan plot."""


def _value_error(value: float | None, error: float | None) -> str:
    """``213 ± 8``: digits to the uncertainty's precision; ∞ when no background jet passed the cut."""
    if value is None:
        return "∞"
    if error is None or not math.isfinite(error) or error <= 0:
        return fmt(value, 3)
    digits = max(0, 1 - math.floor(math.log10(error))) if error < 1 else 0
    shown = round(error, digits) if digits else round(error)
    return f"{value:.{digits}f} ± {shown:.{digits}f}"


def _with_counts(point: Mapping[str, Any], flavour: str) -> str:
    """A rejection ± its uncertainty with, in brackets, background jets passing the cut of those in the test set."""
    text = _value_error(point[flavour], point.get(f"{flavour}Error"))
    passing, total = point.get(f"{flavour}Passing"), point.get(f"{flavour}Total")
    if passing is None:
        return text
    counts = f"{passing:,} / {total:,}" if total is not None else f"{passing:,}"
    return f"{text}<br><small>({counts})</small>"


def _loss_note(retrain: Mapping[str, Any]) -> str:
    """What the losses mean, and (retrained networks) how far the retraining's val_loss is from the scan's."""
    note = (
        "Losses are the payload's weighted cross-entropy (flavours weighted to the b-jet kinematics); the test loss "
        "is measured on the report's test jets."
    )
    if retrain.get("mode") != "retrained":
        return f"<p>{note} The networks are the models the scan kept: evaluated here, not trained again.</p>"
    gaps = [
        abs(t["validationLoss"] - t["combination"]["scanValue"])
        for t in retrain["taggers"].values()
        if t.get("combination") and t.get("validationLoss") is not None
    ]
    if gaps and max(gaps) < 5e-5:
        return (
            f"<p>{note} A retraining starts from the scan's initial weights (seeded by the combination id) and sees "
            "the batches in the scan's order (seeded by the epoch): its val_loss is the scan's.</p>"
        )
    largest = f" by up to {max(gaps):.2g}" if gaps else ""
    return (
        f"<p>{note} A retraining starts from the scan's initial weights and batch order, yet its val_loss differs "
        f"from the scan's{largest}: multi-threaded CPU arithmetic is not bit-reproducible, and training amplifies "
        "the rounding.</p>"
    )


def _summary(retrain: Mapping[str, Any], taggers: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The heading, the test set in cards, and each tagger's combination, losses, epochs and time."""
    retrained = retrain.get("mode") == "retrained"
    fc = retrain["fc"]
    title = "Retrained" if retrained else "The scan's kept models"
    parts = [f"<h2>{title}: best, median and worst against a BDT</h2>"]
    test = retrain["testSet"]
    bdt = taggers.get("bdt", {})
    parts.append(
        cards(
            [
                ("test jets (held out)", f"{test['jets']:,}"),
                ("b / c / light", f"{test['bjets']:,} / {test['cjets']:,} / {test['ujets']:,}"),
                ("training jets", f"{retrain['trainSet']['jets']:,}"),
                ("f_c of the ROC curves", f"{fc:g}"),
                ("BDT iterations (converged)", fmt(bdt.get("iterations"))),
                ("comparison time", f"{retrain['seconds']:.0f} s"),
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
                fmt(tagger.get("seconds"), 3, none="cached"),
            ]
        )
    metric = escape(retrain["objectiveMetric"])
    val_header = "val_loss retrained" if retrained else "val_loss of the kept model"
    time_header = "training time (s)" if retrained else "evaluation / BDT training time (s)"
    header = ["tagger", f"{metric} in the scan", val_header, "test loss", "epochs", time_header]
    parts.append(table(header, rows, text_columns=1))
    parts.append(_loss_note(retrain))
    parts.append(f'<div class="note">{escape(retrain["bdt"]["description"])}</div>')

    return parts


def _roc(report_dir: Path, retrain: Mapping[str, Any], taggers: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The ROC curves and the rejections at the working points, with their uncertainties and counts."""
    wp_names = list(next(iter(taggers.values()))["workingPoints"])
    fc = retrain["fc"]
    min_passing = retrain.get("minPassing", 5)
    parts = []
    parts.append("<h3>ROC curves</h3>")
    parts.append(image(report_dir / "roc.png", "ROC curves", "roc"))
    header = ["tagger"] + [f"light rej. @ {w}%" for w in wp_names] + [f"c rej. @ {w}%" for w in wp_names]
    rows = []
    for tagger in taggers.values():
        points = tagger["workingPoints"]
        rows.append(
            [escape(tagger["label"])]
            + [_with_counts(points[w], "ujets") for w in wp_names]
            + [_with_counts(points[w], "cjets") for w in wp_names]
        )
    parts.append(table(header, rows))
    parts.append(
        f"<p>Rejection = 1 / (fraction of background jets passing the cut on D<sub>b</sub> that keeps the given "
        f"b-jet efficiency), D<sub>b</sub> = ln(p<sub>b</sub> / (f<sub>c</sub> p<sub>c</sub> + (1 &minus; f<sub>c</sub>) "
        f"p<sub>u</sub>)) with f<sub>c</sub> = {fc:g}. ± : binomial statistical uncertainty (about rejection / "
        "&radic;passing). In brackets: background jets passing the cut / background jets in the test set. The ROC "
        f"curves leave out points where fewer than {min_passing} pass; their bands are the same uncertainty. "
        "∞: none passed.</p>"
    )

    return parts


def _fc_scan(report_dir: Path, retrain: Mapping[str, Any], taggers: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Light and c rejection at the scan's working point as f_c varies: the plot and a table of a few f_c."""
    parts = []
    scan_wp = f"{round(retrain['scanWorkingPoint'] * 100)}"
    parts.append(f"<h3>Light and c rejection at {scan_wp}% b-efficiency as f_c varies</h3>")
    parts.append(image(report_dir / "rejection-vs-fc.png", "rejection against f_c"))
    header = ["tagger"] + [f"f<sub>c</sub> = {v:g}<br>light / c" for v in FC_TABLE_POINTS]
    fc_rows: list[str] = []
    for tagger in taggers.values():
        scan = tagger.get("fcScan")
        if scan:
            cells = []
            for value in FC_TABLE_POINTS:
                index = min(range(len(scan["fc"])), key=lambda i, v=value: abs(scan["fc"][i] - v))  # type: ignore[misc]
                light = _value_error(scan["ujets"][index], (scan.get("ujetsError") or [None] * (index + 1))[index])
                charm = _value_error(scan["cjets"][index], (scan.get("cjetsError") or [None] * (index + 1))[index])
                cells.append(f"{light}<br>{charm}")
            fc_rows.append("".join(f"<td>{c}</td>" for c in cells))
        else:
            points = tagger["workingPoints"][scan_wp]
            fc_rows.append(
                f'<td colspan="{len(FC_TABLE_POINTS)}" style="text-align:center">'
                f"{_value_error(points['ujets'], points.get('ujetsError'))} / "
                f"{_value_error(points['cjets'], points.get('cjetsError'))} at every f<sub>c</sub> "
                "(one output; the red star)</td>"
            )
        fc_rows[-1] = f'<tr><td class="text">{escape(tagger["label"])}</td>{fc_rows[-1]}</tr>'
    head = "".join(f'<th class="text">{h}</th>' if i == 0 else f"<th>{h}</th>" for i, h in enumerate(header))
    parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(fc_rows)}</tbody></table>")

    return parts


def _c_tagging(report_dir: Path, retrain: Mapping[str, Any], taggers: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """c-tagging from the same networks, when the comparison drew it."""
    parts: list[str] = []
    networks = {k: t for k, t in taggers.items() if t.get("cTagging")}
    if networks and (report_dir / "c-tagging.png").exists():
        fb = retrain.get("fb")
        parts.append("<h3>c-tagging from the same networks</h3>")
        parts.append(image(report_dir / "c-tagging.png", "c-tagging ROC curves", "roc"))
        c_wps = list(next(iter(networks.values()))["cTagging"]["workingPoints"])
        header = ["network"] + [f"light rej. @ {w}% c-eff." for w in c_wps] + [f"b rej. @ {w}% c-eff." for w in c_wps]
        rows = []
        for tagger in networks.values():
            points = tagger["cTagging"]["workingPoints"]
            rows.append(
                [escape(tagger["label"])]
                + [_with_counts(points[w], "ujets") for w in c_wps]
                + [_with_counts(points[w], "bjets") for w in c_wps]
            )
        parts.append(table(header, rows))
        parts.append(
            "<p>The DL1 outputs give c-tagging too: D<sub>c</sub> = ln(p<sub>c</sub> / (f<sub>b</sub> p<sub>b</sub> + "
            f"(1 &minus; f<sub>b</sub>) p<sub>u</sub>)) with f<sub>b</sub> = {fmt(fb)}, cut to keep the given c-jet "
            "efficiency. The BDT separates b-jets from the rest and has no c-tagging output.</p>"
        )
    return parts


def retrain_sections(report_dir: Path, retrain: Mapping[str, Any]) -> str:
    """The comparison part of index.html: its numbers (``retrain``, metrics.json's ``retrain``) and the plots it
    drew into report_dir (roc.png, rejection-vs-fc.png, c-tagging.png)."""
    taggers: Mapping[str, Mapping[str, Any]] = retrain["taggers"]
    parts = [
        *_summary(retrain, taggers),
        *_roc(report_dir, retrain, taggers),
        *_fc_scan(report_dir, retrain, taggers),
        *_c_tagging(report_dir, retrain, taggers),
    ]
    return "\n".join(parts)
