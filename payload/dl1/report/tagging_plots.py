"""The paper's Figure 4 and the ROC curves behind it: puma-hep for the ROC curves (b- and c-tagging, with their
binomial uncertainty bands), matplotlib for the f_c scan (puma has no plot of one rejection against another).

puma names each curve's background flavour by an atlas-ftag-tools Label (``ftag.Flavours["ujets"]``): the ratio
panels take their axis and legend text from it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dl1.report.performance import FC_ALTERNATIVE, SCAN_WORKING_POINT, TaggerPerformance

COLOURS = {"best": "#1f77b4", "median": "#ff7f0e", "worst": "#8c564b", "bdt": "#d62728"}
"""The BDT is red everywhere: the paper's red star."""


def _array(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def _colour(performance: TaggerPerformance) -> str:
    return COLOURS.get(performance.key, "#333333")


def draw_roc(
    performances: Sequence[TaggerPerformance],
    reference: str,
    n_background: dict[str, int],
    path: Path,
    note: str,
) -> Path:
    """roc.png: light- and c-jet rejection against b-jet efficiency, ratio panels to the reference tagger (the BDT)."""
    import matplotlib

    matplotlib.use("Agg")
    from ftag import Flavours
    from puma import Roc, RocPlot

    by_key = {p.key: p for p in performances}
    plot = RocPlot(
        n_ratio_panels=2,
        ylabel="Background rejection (1 / efficiency)",
        xlabel="$b$-jet efficiency",
        atlas_brand=None,
        atlas_first_tag="hpscan report",
        atlas_second_tag=note,
        figsize=(7.5, 7.5),
        y_scale=1.4,
        dpi=150,
    )
    for performance in performances:
        for flavour in ("ujets", "cjets"):
            plot.add_roc(
                Roc(
                    np.array(performance.b_efficiency),
                    _array(performance.rejection[flavour]),
                    n_test=n_background[flavour],
                    rej_class=Flavours[flavour],
                    signal_class="bjets",
                    label=performance.label,
                    colour=_colour(performance),
                ),
                reference=performance.key == reference,
            )
    plot.reference_label = by_key[reference].label.split(" (")[0]  # puma sets it from the reference curve
    plot.set_ratio_class(1, Flavours["ujets"])
    plot.set_ratio_class(2, Flavours["cjets"])
    plot.draw()
    path.parent.mkdir(parents=True, exist_ok=True)
    plot.savefig(str(path))
    import matplotlib.pyplot as plt

    plt.close(plot.fig)
    return path


def draw_c_tagging(
    performances: Sequence[TaggerPerformance], n_background: dict[str, int], path: Path, note: str
) -> Path:
    """c-tagging.png: D_c's light- and b-jet rejection against c-jet efficiency (puma), ratio to the first network."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ftag import Flavours
    from puma import Roc, RocPlot

    plot = RocPlot(
        n_ratio_panels=2,
        ylabel="Background rejection (1 / efficiency)",
        xlabel="$c$-jet efficiency",
        atlas_brand=None,
        atlas_first_tag="hpscan report: $c$-tagging, $D_c$",
        atlas_second_tag=note,
        figsize=(7.5, 7.5),
        y_scale=1.4,
        dpi=150,
    )
    for index, performance in enumerate(performances):
        ctag = performance.c_tagging
        if not ctag:
            continue
        for flavour in ("ujets", "bjets"):
            plot.add_roc(
                Roc(
                    np.array(ctag["cEfficiency"], dtype=float),
                    _array(ctag[flavour]),  # type: ignore[arg-type]
                    n_test=n_background[flavour],
                    rej_class=Flavours[flavour],
                    signal_class="cjets",
                    label=performance.label,
                    colour=_colour(performance),
                ),
                reference=index == 0,
            )
    plot.set_ratio_class(1, Flavours["ujets"])
    plot.set_ratio_class(2, Flavours["bjets"])
    plot.draw()
    path.parent.mkdir(parents=True, exist_ok=True)
    plot.savefig(str(path))
    plt.close(plot.fig)
    return path


def _fc_scan_curves(plane: Any, light: Any, charm: Any, performance: TaggerPerformance, fc: float) -> None:
    """One network: light against c rejection (markers at fc and FC_ALTERNATIVE), and each against f_c."""
    scan = performance.fc_scan
    if not scan:
        return
    fcs = np.array(scan["fc"], dtype=float)
    u_rej, c_rej = _array(scan["ujets"]), _array(scan["cjets"])
    u_err = _array(scan.get("ujetsError", [None] * len(fcs)))
    c_err = _array(scan.get("cjetsError", [None] * len(fcs)))
    colour = _colour(performance)
    plane.plot(c_rej, u_rej, color=colour, linewidth=2, label=performance.label)
    for value, marker in ((fc, "o"), (FC_ALTERNATIVE, "s")):
        index = int(np.argmin(np.abs(fcs - value)))
        plane.errorbar(
            c_rej[index],
            u_rej[index],
            xerr=c_err[index],
            yerr=u_err[index],
            marker=marker,
            color=colour,
            markersize=7,
            linestyle="none",
            capsize=3,
        )
    for axis, rejection, error in ((light, u_rej, u_err), (charm, c_rej, c_err)):
        axis.plot(fcs, rejection, color=colour, linewidth=2, label=performance.label)
        axis.fill_between(fcs, rejection - error, rejection + error, color=colour, alpha=0.25, edgecolor="none")


def _bdt_star(plane: Any, light: Any, charm: Any, bdt: TaggerPerformance, fc: float) -> None:
    """The BDT (one output, no f_c): a red star with error bars, drawn at f_c = fc."""
    star: dict[str, Any] = {
        "marker": "*",
        "color": COLOURS["bdt"],
        "markersize": 20,
        "markeredgecolor": "black",
        "linestyle": "none",
    }
    u_bdt, c_bdt = bdt.at(SCAN_WORKING_POINT, "ujets"), bdt.at(SCAN_WORKING_POINT, "cjets")
    u_bdt_err, c_bdt_err = bdt.at(SCAN_WORKING_POINT, "ujetsError"), bdt.at(SCAN_WORKING_POINT, "cjetsError")
    bars: dict[str, Any] = {"ecolor": "black", "capsize": 4, "elinewidth": 1.2}
    if u_bdt is not None and c_bdt is not None:
        plane.errorbar([c_bdt], [u_bdt], xerr=c_bdt_err, yerr=u_bdt_err, label=bdt.label, zorder=5, **bars, **star)
    if u_bdt is not None:
        light.errorbar([fc], [u_bdt], yerr=u_bdt_err, zorder=5, **bars, **star)
    if c_bdt is not None:
        charm.errorbar([fc], [c_bdt], yerr=c_bdt_err, zorder=5, **bars, **star)


def draw_fc_scan(
    performances: Sequence[TaggerPerformance], bdt: TaggerPerformance | None, fc: float, path: Path, note: str
) -> Path:
    """rejection-vs-fc.png: at 77% b-jet efficiency, light against c rejection as f_c runs from 0 to 1 (the paper's
    Figure 4), and each rejection against f_c; the BDT, which has no f_c, is the red star (drawn at f_c = fc)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wp = f"{round(SCAN_WORKING_POINT * 100)}"
    fig = plt.figure(figsize=(13.0, 5.6), layout="constrained")
    grid = fig.add_gridspec(2, 2, width_ratios=[1.25, 1.0])
    plane = fig.add_subplot(grid[:, 0])
    light = fig.add_subplot(grid[0, 1])
    charm = fig.add_subplot(grid[1, 1], sharex=light)
    for performance in performances:
        _fc_scan_curves(plane, light, charm, performance, fc)
    if bdt is not None:
        _bdt_star(plane, light, charm, bdt, fc)
    # Marker legend entries (no data): which f_c each marker on the curves stands for.
    plane.plot([], [], marker="o", color="black", linestyle="none", label=f"$f_c$ = {fc:g}")
    plane.plot([], [], marker="s", color="black", linestyle="none", label=f"$f_c$ = {FC_ALTERNATIVE:g}")

    plane.set_xlabel(f"$c$-jet rejection at {wp}% $b$-jet efficiency")
    plane.set_ylabel(f"Light-jet rejection at {wp}% $b$-jet efficiency")
    plane.set_title(f"Rejections as $f_c$ runs from 0 to 1 ({note})", fontsize=10.5, loc="left")
    plane.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3, frameon=False)
    light.set_ylabel(f"Light-jet rejection\nat {wp}% $b$-eff.")
    charm.set_ylabel(f"$c$-jet rejection\nat {wp}% $b$-eff.")
    charm.set_xlabel("$f_c$ (c-jet fraction in the $D_b$ denominator)")
    light.set_title(
        f"red star: BDT (one output, no $f_c$), drawn at $f_c$ = {fc:g}; bands, bars: stat. unc.",
        fontsize=10,
        loc="left",
    )
    for axis in (plane, light, charm):
        axis.grid(True, alpha=0.3)
    charm.set_xlim(0, 1)
    plt.setp(light.get_xticklabels(), visible=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path
