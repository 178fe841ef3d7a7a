"""`hpscan dashboard` in a real browser: Debian's Chromium, headless, driven by selenium through Debian's
chromedriver (`make chromium` installs both; nothing is downloaded). The page loads, the plot appears, a record
appended to the run folder is on the page within 2 s, brushing an axis filters the lines, a failing site says why,
and a trial's per-epoch curve appears on click. Screenshots are left in the test's tmp folder."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hpscan.dashboard.server import DashboardServer, start, stop
from hpscan.dashboard.source import RunFolder
from hpscan.report.parallel import draw_html
from hpscan.report.rundir import load_run
from support.dashboard_runs import FAILING_SITE, append_record, chromium, write_status
from support.report_runs import write_fake_run

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

LIVE_SECONDS = 2.0
"""A record appended to the run folder must be on the page within this (issue 29)."""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        driver = chromium()
    except RuntimeError as missing:
        pytest.fail(str(missing), pytrace=False)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(condition: Callable[[], Any], seconds: float, what: str) -> float:
    """Seconds until ``condition()`` is true; fails naming ``what`` after ``seconds``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > seconds:
            pytest.fail(f"{what}: not within {seconds:g} s")
        time.sleep(0.02)
    return time.monotonic() - started


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[tuple[DashboardServer, Path]]:
    """A run folder half recorded (12 of 24, some failed and pruned) with a failing site, served."""
    run_dir = write_fake_run(tmp_path / "run", limit=12, failed_every=5, pruned_every=7)
    write_status(run_dir)
    server = start(RunFolder(run_dir))
    try:
        best = server.watch.source.view()["best"]["id"]
        epochs = [{"id": best, "epoch": e, "metrics": {"loss": 1.0 / e, "val_loss": 1.1 / e}} for e in (1, 2, 3)]
        progress = run_dir / "work" / "shard-000" / "progress.jsonl"
        progress.parent.mkdir(parents=True)
        progress.write_text("".join(json.dumps(e) + "\n" for e in epochs))
        yield server, run_dir
    finally:
        stop(server)


def page(driver: Any, script: str) -> Any:
    return driver.execute_script(script)


LINES = "return hpscanDashboard.plot ? hpscanDashboard.plot.drawn.lines : 0"
"""The lines the plot's canvas shows now (set when a frame is drawn, not when a state arrives)."""


def drag_along_axis(driver: Any, axis: int, start: float, end: float, plot: str = "hpscanDashboard.plot") -> None:
    """Drag the mouse along an axis of the plot (``plot``: where the page keeps it) from one of its values to
    another, as a user brushes it (a real drag in Chromium: the page's own mouse handlers select the range)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    canvas = driver.find_element(By.CSS_SELECTOR, "#plot canvas")
    x, y0, y1, width, height = driver.execute_script(
        f"const p = {plot}, c = p.canvas;"
        "return [p.axisX(arguments[0]), p.yOf(arguments[0], arguments[1]), p.yOf(arguments[0], arguments[2]),"
        " c.clientWidth, c.clientHeight]",
        axis, start, end,
    )  # fmt: skip
    # selenium's offsets are from the element's centre
    actions = ActionChains(driver).move_to_element_with_offset(canvas, int(x - width / 2), int(y0 - height / 2))
    actions.click_and_hold().move_by_offset(0, int((y1 - y0) / 2)).move_by_offset(0, int(y1 - y0) - int((y1 - y0) / 2))
    actions.release().perform()


def test_the_page_shows_a_running_scan_live(browser: Any, dashboard: tuple[DashboardServer, Path], tmp_path: Path):
    from selenium.webdriver.common.by import By

    server, run_dir = dashboard
    browser.get(server.url)
    wait_for(lambda: page(browser, "return window.hpscanDashboard && window.hpscanDashboard.updates > 0"), 60, "state")
    wait_for(lambda: page(browser, "return document.querySelectorAll('#plot canvas').length > 0"), 30, "the plot")
    state = server.watch.source.view()
    wait_for(lambda: page(browser, LINES) == len(state["trials"]["ids"]), 10, "every line drawn")
    assert browser.find_element(By.ID, "progress").text == "12/24"
    # every resource came from this server (the page's policy forbids anything else anyway)
    origins = page(browser, "return performance.getEntriesByType('resource').map((r) => new URL(r.name).origin)")
    assert set(origins) == {server.url.rstrip("/")}
    browser.save_screenshot(str(tmp_path / "loaded.png"))

    # live: a record appended by the payload is a line of the plot within 2 s, without a reload
    before = page(browser, LINES)
    new = append_record(run_dir, 23, 0.60)
    seen = "return window.hpscanDashboard.view.trials.ids.includes(arguments[0])"
    took = wait_for(lambda: browser.execute_script(seen, new) and page(browser, LINES) == before + 1, LIVE_SECONDS, new)
    assert browser.find_element(By.ID, "progress").text == "13/24"
    assert browser.find_element(By.CSS_SELECTOR, "#trials tbody tr td:nth-child(2)").text == new  # the new best
    print(f"record on the page after {took * 1000:.0f} ms")

    # brushing the activation axis (categorical: relu at 0, elu at 1) with the mouse keeps only the relu lines, on
    # the canvas too, and stays brushed when the next record arrives
    drag_along_axis(browser, 3, -0.01, 0.2)
    relu = sum(1 for p in server.watch.source.view()["trials"]["parameters"] if p[3] == "relu")
    total = page(browser, LINES)
    selected = lambda: int(browser.find_element(By.ID, "selected").text)  # noqa: E731
    wait_for(lambda: selected() == relu, 5, f"{relu} relu lines selected")
    wait_for(lambda: page(browser, "return hpscanDashboard.plot.drawn.selected") == relu, 5, "the selection drawn")
    assert 0 < relu < total
    rows = browser.find_elements(By.CSS_SELECTOR, "#trials tbody tr td:nth-child(8)")
    assert rows and {row.text for row in rows} == {"relu"}
    append_record(run_dir, 22, 0.70)  # relu (activation is the fastest axis: even positions)
    wait_for(lambda: page(browser, LINES) == total + 1, LIVE_SECONDS, "the next record")
    wait_for(lambda: selected() == relu + 1, 5, "the brush kept across an update")
    browser.save_screenshot(str(tmp_path / "brushed.png"))

    # a failing site says why, in its probe's words
    sites = browser.find_element(By.ID, "sites").text
    assert "Excluded" in sites and "GPUUnavailable" in sites and FAILING_SITE in sites

    # a click on the axis clears its range; a trial's per-epoch curve on click (the fixture wrote the epochs of
    # the best trial before the new ones came)
    drag_along_axis(browser, 3, 0.5, 0.5)
    wait_for(lambda: selected() == total + 1, 5, "every line selected again")
    trained = json.loads((run_dir / "work" / "shard-000" / "progress.jsonl").read_text().splitlines()[0])["id"]
    row = browser.find_element(By.CSS_SELECTOR, f"#trials tbody tr[data-trial='{trained}']")
    browser.execute_script("arguments[0].scrollIntoView()", row)
    # plotly.js is loaded on this click: nothing it does may break the page's policy (no 'unsafe-eval')
    page(browser, "window.violations = []; document.addEventListener('securitypolicyviolation', (e) => "
                  "violations.push(`${e.violatedDirective} ${e.blockedURI}`))")  # fmt: skip
    row.click()
    wait_for(lambda: page(browser, "return document.querySelectorAll('#curve .main-svg').length > 0"), 10, "curve")
    assert page(browser, "return violations") == []
    assert browser.find_element(By.ID, "curve-id").text == trained
    curve = page(browser, "return document.getElementById('curve').data.map((t) => [t.name, t.y])")
    assert sorted(curve) == [["loss", [1.0, 0.5, 1 / 3]], ["val_loss", [1.1, 0.55, 1.1 / 3]]]
    browser.save_screenshot(str(tmp_path / "curve.png"))


def test_the_reports_interactive_plot_is_the_dashboards_own_drawing(browser: Any, tmp_path: Path):
    """`hpscan report`'s parallel-coordinates.html, opened from the disk, draws with the dashboard's script: every
    succeeded line on its canvas, and a drag along an axis selects its range."""
    from selenium.webdriver.common.by import By

    run = load_run(write_fake_run(tmp_path / "run", failed_every=5))
    browser.get(draw_html(run, tmp_path / "parallel-coordinates.html").as_uri())
    wait_for(
        lambda: page(browser, "return window.hpscanPlot && hpscanPlot.drawn.lines") == len(run.ranked), 10, "lines"
    )
    assert browser.find_element(By.ID, "selected").text == str(len(run.ranked))
    drag_along_axis(browser, 3, -0.01, 0.2, plot="hpscanPlot")  # activation: relu
    relu = sum(1 for r in run.ranked if r.record.parameters["activation"] == "relu")
    wait_for(lambda: browser.find_element(By.ID, "selected").text == str(relu), 5, f"{relu} relu lines selected")
    assert 0 < relu < len(run.ranked)
    browser.save_screenshot(str(tmp_path / "report.png"))


def test_the_page_says_when_its_server_is_gone(browser: Any, dashboard: tuple[DashboardServer, Path]):
    from selenium.webdriver.common.by import By

    server, _run_dir = dashboard
    browser.get(server.url)
    live = lambda: "on" in browser.find_element(By.ID, "live").get_attribute("class").split()  # noqa: E731
    wait_for(live, 30, "the live mark")
    stop(server)
    wait_for(lambda: not live(), 10, "the live mark going out")
    shutil.rmtree(_run_dir)


def test_a_multi_objective_scan_names_its_pareto_set_and_its_axis_selects_it(browser: Any, tmp_path: Path):
    """The Pareto set is named on the page, and brushing the plot's "in the Pareto set" axis at "yes" leaves
    exactly its lines selected."""
    from selenium.webdriver.common.by import By

    from support.report_runs import physics_run

    run_dir = physics_run(tmp_path / "run", error_fraction=0.001)
    server = start(RunFolder(run_dir), poll_seconds=0.1)
    try:
        browser.get(server.url)
        wait_for(
            lambda: page(browser, "return hpscanDashboard.plot && hpscanDashboard.plot.drawn.lines > 0"), 60, "plot"
        )
        # a finished scan sends one state: its best trials are listed from it, with no second state to wait for
        best = server.watch.source.view()["best"]["id"]
        assert browser.find_element(By.CSS_SELECTOR, "#trials tbody tr td:nth-child(2)").text == best
        pareto = page(browser, "return hpscanDashboard.view.pareto")
        assert pareto and all(i in browser.find_element(By.ID, "pareto").text for i in pareto)
        axis = page(browser, "return hpscanDashboard.plot.dimensions.findIndex((d) => d.label === 'in the Pareto set')")
        drag_along_axis(browser, axis, 1.01, 0.5)  # "yes" is at the top
        selected = "return hpscanDashboard.selected.map((i) => hpscanDashboard.drawn.trials.ids[i])"
        wait_for(lambda: sorted(page(browser, selected)) == sorted(pareto), 30, "the Pareto lines selected")
        browser.save_screenshot(str(tmp_path / "dashboard-pareto.png"))
    finally:
        stop(server)


def test_a_scan_on_the_control_plane_is_shown_live(
    browser: Any, cluster: Any, k8s: Any, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """`hpscan dashboard NAME`: the HPScan read through the user's kubeconfig; a status the operator patches is
    on the page without a reload."""
    import yaml
    from kubernetes import client
    from selenium.webdriver.common.by import By

    from hpscan.cli.dashboard import CLUSTER_POLL_SECONDS, ClusterScan
    from support.operator_support import apply_crd

    apply_crd(cluster)
    scan = yaml.safe_load((Path(__file__).resolve().parents[3] / "examples" / "quickstart.yaml").read_text())
    objects = client.CustomObjectsApi(k8s)
    objects.create_namespaced_custom_object("hpscan.io", "v1alpha1", namespace, "hpscans", scan)
    name = scan["metadata"]["name"]

    def patch_status(message: str) -> None:
        sites = [{"name": "gpu-cluster", "backend": "kubernetes", "state": "Excluded", "reason": "GPUUnavailable",
                  "message": message}]  # fmt: skip
        status = {"status": {"phase": "Running", "message": message, "sites": sites}}
        objects.patch_namespaced_custom_object_status("hpscan.io", "v1alpha1", namespace, "hpscans", name, status)

    patch_status(FAILING_SITE)
    # the user's kubeconfig (the client read $KUBECONFIG when it was imported: its default is set instead)
    monkeypatch.setattr("kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION", str(cluster.kubeconfig))
    (tmp_path / "mirror").mkdir()
    server = start(ClusterScan(name, namespace, None, tmp_path / "mirror"), poll_seconds=CLUSTER_POLL_SECONDS)
    try:
        browser.get(server.url)
        sites = lambda: browser.find_element(By.ID, "sites").text  # noqa: E731
        wait_for(lambda: FAILING_SITE in sites(), 30, "the site's reason from the cluster")
        assert browser.find_element(By.ID, "progress").text == "0/24"
        patch_status("probe: CUDA driver 470 too old")
        wait_for(lambda: "CUDA driver 470" in sites(), 2 * CLUSTER_POLL_SECONDS + LIVE_SECONDS, "the patched status")
        browser.save_screenshot(str(tmp_path / "cluster.png"))
    finally:
        stop(server)
