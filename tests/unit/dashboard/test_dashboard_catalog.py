"""`hpscan dashboard-server` (the chart's dashboard) without a cluster: the Host rule, the index of scans, one
Watch per scan below /scans/<namespace>/<name>/, and the per-epoch reports of a scan on the cluster kept for the
curve on click after its worker's inbox dropped them. How the cluster is read is faked at the cli's seams
(test_dashboard_cluster.py's fixture); the installed chart is tested in tests/integration/kubernetes/test_chart_dashboard.py."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from test_dashboard_cluster import on_cluster  # noqa: F401 (the fixture)

from hpscan.api.trials import Progress
from hpscan.cli.dashboard import EPOCHS_ON_THE_CLUSTER, ClusterScan
from hpscan.dashboard.catalog import NotServed, ScanCatalog, index_page, scan_row
from hpscan.dashboard.server import host_allowed, start_catalog, stop
from hpscan.dashboard.source import RunFolder
from support.report_runs import write_fake_run


@pytest.mark.parametrize(
    ("host", "names", "addresses", "answered"),
    [
        ("127.0.0.1:8081", (), False, True),
        ("localhost:8081", (), False, True),
        ("[::1]:8081", (), False, True),
        ("attacker.example:8081", (), False, False),  # a name pointed at 127.0.0.1 by another site (DNS rebinding)
        ("attacker.example", (), True, False),
        ("10.96.12.7:8081", (), False, False),  # the local dashboard answers loopback only
        ("10.96.12.7:8081", (), True, True),  # the chart's: a Service's, a pod's or an API server's address
        ("[fd00::2]:6443", (), True, True),
        ("k8s.example.org:6443", ("k8s.example.org",), True, True),  # dashboard.allowedHosts
        ("", (), True, False),
    ],
)
def test_which_hosts_a_page_answers(host: str, names: tuple[str, ...], addresses: bool, answered: bool):
    assert host_allowed(host, frozenset(names), addresses) is answered


def hpscan_body(namespace: str, name: str, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": namespace, "name": name, "creationTimestamp": "2026-12-06T10:00:00Z"},
        "spec": {"payload": {"image": "x"}, "artifacts": {"store": {"s3": {"secretRef": {"name": "s3-keys"}}}}},
        "status": status,
    }


def test_the_index_shows_what_kubectl_get_shows_and_links_each_scans_page():
    now = 1796551200.0 + 3 * 3600 + 5 * 60  # 2026-12-06T13:05:00Z
    rows = [
        scan_row(hpscan_body("ml", "dl1-seed-scan", phase="Running", progress="312/800", best={"value": 0.61234}), now),
        scan_row(hpscan_body("ftag", "<script>", phase="Failed"), now),
        scan_row({"metadata": {"namespace": "ml", "name": "new"}}, now),
    ]
    assert rows[0] == {
        "namespace": "ml", "name": "dl1-seed-scan", "phase": "Running", "progress": "312/800", "best": "0.6123",
        "age": "3h05m",
    }  # fmt: skip
    assert rows[2]["phase"] == "Pending" and rows[2]["age"] == ""
    page = index_page(rows).decode()
    assert '<a href="scans/ml/dl1-seed-scan/">dl1-seed-scan</a>' in page  # relative: works below any proxy prefix
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert page.index("ftag") < page.index("dl1-seed-scan")  # by namespace, then name
    assert "s3-keys" not in page  # no part of a manifest
    assert "cannot list the scans: 403 Forbidden" in index_page([], "403 Forbidden").decode()


class Sources:
    """Run folders standing in for scans on the cluster, counting how often each is opened."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path, self.opened = tmp_path, []

    def __call__(self, namespace: str, name: str) -> RunFolder:
        self.opened.append((namespace, name))
        return RunFolder(write_fake_run(self.tmp_path / namespace / name, limit=4))


def get(url: str, host: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # a loaded machine is slow, not broken
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_the_server_lists_the_watched_scans_and_serves_each_page_below_its_name(tmp_path: Path):
    listed = [hpscan_body("ml", "quickstart", phase="Running"), hpscan_body("other", "quickstart")]
    sources = Sources(tmp_path)
    catalog = ScanCatalog(lambda: listed, sources, namespaces=["ml"], poll_seconds=0.05)
    server = start_catalog(catalog, "127.0.0.1", 0)
    try:
        status, index = get(server.url)
        assert status == 200 and b"scans/ml/quickstart/" in index and b"other" not in index
        status, page = get(server.url + "scans/ml/quickstart/")
        assert status == 200 and b'src="dashboard.js"' in page
        for _ in range(3):  # one Watch per scan, however often it is asked for
            status, state = get(server.url + "scans/ml/quickstart/state.json")
            assert status == 200 and json.loads(state)["recorded"] == 4
        assert sources.opened == [("ml", "quickstart")]
        assert get(server.url + "scans/other/quickstart/state.json")[0] == 404  # not a watched namespace
        assert get(server.url + "scans/ml/Bad_Name/state.json")[0] == 404
        assert get(server.url + "dashboard.css")[0] == 200
        assert get(server.url + "scans/ml/quickstart/state.json", host="10.96.0.20:8081")[0] == 200
        assert get(server.url, host="attacker.example:8081")[0] == 421
    finally:
        stop(server)
    with pytest.raises(NotServed, match="namespace other: not watched"):
        catalog.watch("other", "quickstart")


def test_a_cluster_scans_epochs_are_kept_after_its_workers_inbox_drops_them(on_cluster: dict, tmp_path: Path):  # noqa: F811
    """An inbox keeps only the newest reports of its worker: the curve of a trial whose epochs rolled out of it
    still shows what the page saw, and a click reads the inbox again (a report moves no resourceVersion)."""
    (tmp_path / "mirror").mkdir()
    source = ClusterScan("quickstart", "ml", None, tmp_path / "mirror")
    inbox = on_cluster["epochs"]
    inbox += [Progress(id="a", epoch=e, metrics={"val_loss": 1.0 / e}) for e in (1, 2)]
    source.view()
    inbox[:] = [Progress(id="b", epoch=1, metrics={"val_loss": 0.9})]  # a's reports rolled out
    assert source.curve("b")["epochs"] == [1]  # read at the click, without a new view
    inbox[:] = [Progress(id="a", epoch=3, metrics={"val_loss": 1 / 3})]
    curve = source.curve("a")
    assert curve["epochs"] == [1, 2, 3] and curve["metrics"]["val_loss"] == [1.0, 0.5, 1 / 3]
    assert source.curve("c") == {"id": "c", "epochs": [], "metrics": {}, "note": EPOCHS_ON_THE_CLUSTER}
    kept = (tmp_path / "mirror" / "work" / "shard-cluster" / "progress.jsonl").read_text().splitlines()
    assert len(kept) == 4  # each report once, however often the inbox repeats it


def test_a_scan_no_page_uses_stops_being_polled_and_starts_again_when_visited(tmp_path: Path):
    """Each scan's Watch asks the API server once a second: one no page followed or asked for in idle_seconds
    stops; a page whose event stream is open keeps its scan polled however long it stays."""
    sources = Sources(tmp_path)
    catalog = ScanCatalog(lambda: [], sources, poll_seconds=0.05, idle_seconds=0.3)
    first = catalog.watch("ml", "quickstart")
    with first.followed():  # a page follows it
        time.sleep(0.5)
        assert catalog.watch("ml", "other") is not first and catalog.watch("ml", "quickstart") is first
    time.sleep(0.5)
    catalog.index()  # nobody used either since
    assert first._stop.is_set()
    again = catalog.watch("ml", "quickstart")
    assert again is not first and not again._stop.is_set()
    assert sources.opened == [("ml", "quickstart"), ("ml", "other"), ("ml", "quickstart")]
    catalog.stop()
