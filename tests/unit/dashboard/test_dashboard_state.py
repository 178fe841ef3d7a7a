"""`hpscan dashboard`'s state and server without a browser: what the page is sent, that it is the report's own
figure, that a record appended to the run folder reaches an open page, and that the server changes nothing."""

from __future__ import annotations

import json
import math
import threading
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hpscan.api.status import HPScanStatus
from hpscan.api.trials import Progress
from hpscan.dashboard.server import Watch, start, stop
from hpscan.dashboard.source import RunFolder
from hpscan.dashboard.view import NO_EPOCHS, curve, eta_seconds
from hpscan.report import parallel
from hpscan.report.parallel import PRUNED_VALUE, figure
from hpscan.report.rundir import load_run
from support.dashboard_runs import FAILING_SITE, append_record, write_status
from support.report_runs import write_fake_run


def test_the_page_gets_the_reports_figure_with_pruned_trials_faded_beneath(tmp_path: Path):
    run_dir = write_fake_run(tmp_path / "run", failed_every=5, pruned_every=7)
    write_status(run_dir)
    state = RunFolder(run_dir).view()
    run = load_run(run_dir)
    report = figure(run)["data"][0]
    trace = state["figure"]["data"][0]
    pruned = len(run.pruned)
    assert pruned > 0
    # the succeeded lines are the report's, value for value; the pruned ones come first, under them, faded
    for ours, theirs in zip(trace["dimensions"], report["dimensions"], strict=True):
        assert ours["values"][pruned:] == theirs["values"]
        assert ours["label"] == theirs["label"]
    assert trace["line"]["color"][:pruned] == [PRUNED_VALUE] * pruned
    assert trace["line"]["color"][-1] == 1.0  # the best, red
    # the trials line up with the lines: the page lists the brushed ones by these columns
    trials = state["trials"]
    assert trials["ids"][-1] == run.best.id
    assert trials["status"][:pruned] == ["pruned"] * pruned
    assert len(trials["ids"]) == len(trace["dimensions"][0]["values"])
    assert state["recorded"] == run.recorded and state["failed"] == len(run.failed)
    assert {t["id"] for t in state["failed_trials"]} == {r.id for r in run.failed}
    assert state["sites"][1]["state"] == "Excluded" and state["sites"][1]["message"] == FAILING_SITE
    assert state["shards"][0]["moves"] == 1


def test_a_run_folder_without_records_yet_shows_progress_and_no_plot(tmp_path: Path):
    run_dir = write_fake_run(tmp_path / "run", limit=0)
    state = RunFolder(run_dir).view()
    assert state["figure"] is None and state["recorded"] == 0 and state["total"] == 24


def test_eta_follows_the_records_as_hpscan_run_does():
    status = HPScanStatus.model_validate(
        {"shards": [{"index": 0, "phase": "Running", "done": 3, "total": 10, "since": "2026-01-01T00:00:00Z"}]}
    )
    start_at = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    arrived = {0: [start_at + 10, start_at + 20, start_at + 30]}  # a record every 10 s, 7 left
    assert eta_seconds(status, arrived, now=start_at + 30) == pytest.approx(70)
    assert eta_seconds(status, {}, now=start_at + 30) is None  # no pace yet


def test_a_trials_curve_is_its_epochs_in_order():
    progress = [
        Progress(id="a", epoch=2, metrics={"val_loss": 0.5}),
        Progress(id="b", epoch=1, metrics={"val_loss": 0.9}),
        Progress(id="a", epoch=1, metrics={"val_loss": 0.7, "loss": 0.6}),
    ]
    assert curve(progress, "a") == {
        "id": "a",
        "epochs": [1, 2],
        "metrics": {"loss": [0.6, None], "val_loss": [0.7, 0.5]},
        "note": NO_EPOCHS,
    }


def test_the_source_is_read_again_only_when_its_files_change(tmp_path: Path):
    run_dir = write_fake_run(tmp_path / "run", limit=5)
    watch = Watch(RunFolder(run_dir))
    assert watch.refresh() and not watch.refresh()
    append_record(run_dir, 5, 0.6)
    assert watch.refresh() and watch.version == 2


def test_each_view_reads_only_what_was_appended_and_the_state_equals_the_reports(tmp_path: Path):
    """The page's state as results.jsonl grows (a half-written line waits; a file replaced by a shorter one is read
    again from its start) equals what `hpscan report` reads from the folder at that moment."""
    run_dir = write_fake_run(tmp_path / "run", limit=5)
    source = RunFolder(run_dir)
    assert source.view()["recorded"] == 5
    append_record(run_dir, 5, 0.6)
    with (run_dir / "results.jsonl").open("a", encoding="utf-8") as results:
        results.write('{"id": "c7-')  # the payload is still writing this line
    state = source.view()
    assert state["recorded"] == 6 and state["trials"] == view_of_whole_folder(run_dir)["trials"]
    lines = (run_dir / "results.jsonl").read_text().splitlines(keepends=True)
    (run_dir / "results.jsonl").write_text("".join(lines[:2]))  # replaced, shorter
    state = source.view()
    assert state["recorded"] == 2 and state["trials"] == view_of_whole_folder(run_dir)["trials"]


def view_of_whole_folder(run_dir: Path) -> dict:
    return RunFolder(run_dir).view()


def _get(url: str, **headers: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, b""


def test_an_open_page_is_sent_each_new_record_and_nothing_can_change_the_scan(tmp_path: Path):
    run_dir = write_fake_run(tmp_path / "run", limit=5)
    server = start(RunFolder(run_dir), poll_seconds=0.05)
    try:
        assert server.url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(server.url + "events", timeout=10) as events:
            first = json.loads(events.readline().removeprefix(b"data: "))
            assert first["recorded"] == 5
            events.readline()
            new = append_record(run_dir, 23, 0.5)
            second = json.loads(events.readline().removeprefix(b"data: "))
        assert second["recorded"] == 6 and second["trials"]["ids"][-1] == new
        status, page = _get(server.url)
        assert status == 200 and b'src="parcoords.js"' in page
        status, script = _get(server.url + "parcoords.js")  # the report's own drawing code: one for both
        assert status == 200 and script == (Path(parallel.__file__).parent / "static" / "parcoords.js").read_bytes()
        status, script = _get(server.url + "plotly.min.js")  # for a trial's curve
        assert status == 200 and len(script) > 1_000_000  # the installed plotly's own bundle, served from here
        assert _get(server.url, Host="attacker.example:80")[0] == 421  # a page elsewhere cannot read it
        request = urllib.request.Request(server.url + "state.json", data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 501  # GET only
    finally:
        stop(server)
    assert (run_dir / "results.jsonl").read_text().count("\n") == 6


def test_records_there_before_the_dashboard_started_set_no_pace(tmp_path: Path):
    """Records without finished_at are timed by when the dashboard first saw them; those already there when it
    started came at times nobody knows, and would otherwise look like a burst (an ETA of zero)."""
    run_dir = write_fake_run(tmp_path / "run", limit=8)
    # quickstart: 4 shards of 6, position p in shard p mod 4; shard 0 holds 0 and 4 now, 8 and 12 below
    status = {"phase": "Running", "shards": [{"index": 0, "phase": "Running", "done": 4, "total": 6}]}
    (run_dir / "status.json").write_text(json.dumps(status))
    now = [1000.0]
    source = RunFolder(run_dir, clock=lambda: now[0])
    assert source.view()["eta_seconds"] is None
    for position, at in ((8, 1010.0), (12, 1020.0)):
        now[0] = at
        append_record(run_dir, position, 0.7)
        state = source.view()
    assert state["eta_seconds"] == pytest.approx(2 * 10)  # 2 left in shard 0, one every 10 s


def test_a_diverged_trial_never_breaks_the_page(tmp_path: Path):
    """NaN has no place in JSON: a pruned trial whose last loss is NaN is not a line, a NaN epoch is a gap."""
    run_dir = write_fake_run(tmp_path / "run", limit=10, pruned_every=3)
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    record = json.loads(lines[0])
    assert record["status"] == "pruned"
    record["metrics"]["val_loss"] = float("nan")
    (run_dir / "results.jsonl").write_text("\n".join([json.dumps(record), *lines[1:]]) + "\n")
    watch = Watch(RunFolder(run_dir))
    assert watch.refresh()  # the state is strict JSON
    state = json.loads(watch.payload)
    assert record["id"] not in state["trials"]["ids"]
    assert len(state["trials"]["ids"]) == len(state["figure"]["data"][0]["dimensions"][0]["values"])
    epochs = [Progress(id="a", epoch=1, metrics={"loss": 0.5}), Progress(id="a", epoch=2, metrics={"loss": math.nan})]
    assert (
        json.dumps(curve(epochs, "a"), allow_nan=False)
        == f'{{"id": "a", "epochs": [1, 2], "metrics": {{"loss": [0.5, null]}}, "note": "{NO_EPOCHS}"}}'
    )


class Flaky:
    """A source that stops answering, then answers again."""

    def __init__(self, source: RunFolder) -> None:
        self.source, self.down = source, False

    def signature(self) -> object:
        if self.down:
            raise ConnectionError("the API server cannot be reached")
        return self.source.signature()

    def view(self) -> dict:
        return self.source.view()

    def curve(self, trial_id: str) -> dict:
        return self.source.curve(trial_id)


def test_a_page_keeps_the_last_state_and_is_told_why_the_source_does_not_answer(tmp_path: Path):
    source = Flaky(RunFolder(write_fake_run(tmp_path / "run", limit=5)))
    watch = Watch(source, poll_seconds=0.02)
    watch.refresh()
    poll = threading.Thread(target=watch.run)
    poll.start()
    try:
        frames = watch.updates(after=0)
        assert next(frames).startswith(b'data: {"scan":"quickstart"')
        source.down = True
        problem = next(frames)
        assert problem.startswith(b"data: {") and b"event: problem\ndata: " in problem
        assert b"ConnectionError: the API server cannot be reached" in problem
        source.down = False
        assert b"event: problem" not in next(frames)  # answering again clears it
    finally:
        watch.stop()
        poll.join()


def test_a_multi_objective_scan_shows_its_pareto_set_and_an_axis_that_selects_it(tmp_path: Path):
    """The page names the Pareto set the report names, and its plot (the report's figure) has the axis that
    selects it; leaders whose values overlap within their errors are shown as tied, not ranked."""
    from support.report_runs import physics_run

    run_dir = physics_run(tmp_path / "run", error_fraction=0.2)
    state = RunFolder(run_dir).view()
    run = load_run(run_dir)
    assert state["pareto"] == list(run.pareto) and len(state["pareto"]) >= 2
    labels = [d["label"] for d in state["figure"]["data"][0]["dimensions"]]
    assert "in the Pareto set" in labels
    assert state["tied"] == list(run.tied) and len(state["tied"]) >= 2  # 20% errors: the leaders overlap
