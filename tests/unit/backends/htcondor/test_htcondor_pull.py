"""Workers that pull trials through the HTCondor backend: the operator edits HPScanTrials/HPScanStops on the job's ad,
the job reads them with chirp and sets HPScanProgress. Against the schedd STAND-IN (hpscan.testing.condor) and a
chirp client that reads and sets the stand-in's job ad as the starter's chirp proxy would (through the shadow's copy
of the ad, unparsed by the real ClassAd library), so each step can be held still and looked at; the same path runs
against the real daemons with dl1 in tests/integration/htcondor/test_htcondor_adaptive.py."""

from __future__ import annotations

import json
from pathlib import Path

import classad2
import pytest

from hpscan.api.contract import Combination
from hpscan.api.spec import HPScanSpec
from hpscan.api.trials import TRIALS_FILE, Progress, TrialInbox, trial_lines
from hpscan.backends.base import ScanRef, ShardLaunch
from hpscan.backends.htcondor import PROJECTION, HTCondorBackend
from hpscan.core.planning import plan
from hpscan.core.search import Search
from hpscan.job.chirp import (
    CHIRP_LINE_MAX,
    PROGRESS_ATTR,
    STOPS_ATTR,
    TRIALS_ATTR,
    ChirpChannel,
    chirp_line_length,
    classad_string,
    classad_string_value,
    lines_value,
    value_lines,
)
from hpscan.job.runner import PullBridge
from hpscan.testing.condor import JobChirp, ScheddStandIn

SCAN = ScanRef(name="tpe", namespace="atlas", uid="uid-pull")


def make_spec() -> HPScanSpec:
    return HPScanSpec.model_validate(
        {
            "parameters": [{"name": "layer1", "values": [8, 16, 32, 64]}, {"name": "lr", "values": [0.1, 0.01]}],
            "sampling": {"strategy": "tpe", "samples": 8, "seed": 3, "trialsPerWorker": 2},
            "earlyStopping": {"strategy": "asha", "minEpochs": 1, "reductionFactor": 2},
            "sharding": {"shards": 2},
            "gpu": {"count": 0, "required": False},
            "payload": {"image": "img:1"},
            "sites": [{"name": "grid", "htcondor": {}}],
        }
    )


@pytest.fixture
def setup(tmp_path: Path):
    schedd = ScheddStandIn()
    backend = HTCondorBackend(tmp_path / "work", schedd_factory=lambda site: schedd, max_age_seconds=0)
    spec = make_spec()
    planned = plan(SCAN.name, spec)
    backend.submit(SCAN, spec, [ShardLaunch(planned.shard_file(s), spec.sites[0]) for s in range(2)])
    return schedd, backend, spec, planned


def combination(i: int, layer1: int = 8) -> Combination:
    return Combination(id=f"c{i}-abc{i}", parameters={"layer1": layer1, "lr": 0.1})


def test_the_backend_pulls_and_its_channel_attributes_are_polled(setup):
    _, backend, _, _ = setup
    assert backend.pulls
    assert {TRIALS_ATTR, STOPS_ATTR, PROGRESS_ATTR} <= set(PROJECTION)


def test_a_hand_out_reaches_the_job_ad_and_the_payloads_files(setup, tmp_path):
    """assign appends to the worker's text on its job's ad; the job's chirp channel reads it back and the shard
    runner's bridge writes trials.jsonl, where the payload's TrialInbox finds the trials, the withdrawal and the end."""
    schedd, backend, _, _ = setup
    job = schedd.job_of(SCAN.uid, 1)
    schedd.start(job)
    backend.assign(SCAN, 1, trial_lines([combination(0), combination(1)]))
    backend.assign(SCAN, 1, trial_lines([combination(2)], withdrawn=["c1-abc1"], end=True))
    value = schedd.jobs[job].eval(TRIALS_ATTR)
    assert '"' not in value and "\\" not in value  # nothing a schedd's old-syntax parse would change
    assert [json.loads(line) for line in value_lines(value)] == [
        *trial_lines([combination(0), combination(1)]),
        *trial_lines([combination(2)], withdrawn=["c1-abc1"], end=True),
    ]
    assert TRIALS_ATTR not in schedd.jobs[schedd.job_of(SCAN.uid, 0)]  # only shard 1's
    edits = [detail for name, detail in schedd.calls if name == "edit"]
    assert all(attribute == TRIALS_ATTR for _, attribute, _ in edits) and len(edits) == 2

    out = tmp_path / "scratch"
    out.mkdir()
    bridge = PullBridge(ChirpChannel(make_spec().objective, client=lambda: JobChirp(schedd, job)), out)
    bridge.carry()
    inbox = TrialInbox(out)
    inbox.poll()
    assert list(inbox.assignment.trials) == ["c0-abc0", "c2-abc2"]
    assert inbox.withdrawn("c1-abc1") and inbox.ended
    bridge.carry()  # nothing new: nothing written twice
    assert len((out / TRIALS_FILE).read_text().splitlines()) == 5


def test_stops_reach_the_job_and_progress_comes_back(setup, tmp_path):
    schedd, backend, spec, _ = setup
    job = schedd.job_of(SCAN.uid, 0)
    schedd.start(job)
    backend.assign(SCAN, 0, trial_lines([combination(0), combination(1)]))
    backend.stop_trials(SCAN, 0, ["c1-abc1"])
    channel = ChirpChannel(spec.objective, client=lambda: JobChirp(schedd, job))
    trials, stops = channel.inbox()
    assert len(trials) == 2 and stops == [{"id": "c1-abc1"}]

    channel.publish_progress([Progress(id="c0-abc0", epoch=1, metrics={"val_loss": 0.7})])
    first = backend.fetch_progress(SCAN)
    channel.publish_progress([Progress(id="c0-abc0", epoch=2, metrics={"val_loss": 0.6})])
    second = backend.fetch_progress(SCAN)
    assert [(p.id, p.epoch, p.metrics["val_loss"]) for p in first] == [("c0-abc0", 1, 0.7)]
    assert [(p.id, p.epoch) for p in second] == [("c0-abc0", 2)]  # the first is not handed over again
    assert backend.fetch_progress(SCAN) == []


def test_a_restarted_operator_rebuilds_from_the_ads_and_hands_out_nothing_twice(setup, tmp_path):
    """The Search of a fresh operator, rebuilt from assignments() (the ads' HPScanTrials), knows every trial the first
    one handed out; its next hand-out appends to what the job holds instead of replacing it."""
    schedd, backend, spec, planned = setup
    for shard in (0, 1):
        schedd.start(schedd.job_of(SCAN.uid, shard))
    search = Search(planned)
    for shard in (0, 1):
        backend.assign(SCAN, shard, trial_lines(search.hand_out(shard, 2)))
    backend.assign(SCAN, 1, trial_lines([], withdrawn=search.take_back(1)))

    again = HTCondorBackend(tmp_path / "work", schedd_factory=lambda site: schedd, max_age_seconds=0)
    again.track(SCAN, spec)
    held = again.assignments(SCAN)
    assert {s: list(a.trials) for s, a in held.items()} == {
        s: list(a.trials) for s, a in backend.assignments(SCAN).items()
    }
    assert len(held[0].trials) == 2 and not held[1].trials and len(held[1].withdrawn) == 2
    rebuilt = Search(planned)
    rebuilt.rebuild(held, [], [])
    assert set(rebuilt.entries) == set(search.entries) and list(rebuilt.queue) == list(search.queue)
    assert rebuilt.next_position == search.next_position == 4

    more = rebuilt.hand_out(0, 3)  # the two taken back first, then a new one
    again.assign(SCAN, 0, trial_lines(more))
    final = again.assignments(SCAN)[0]
    assert len(final.trials) == 5 and len(set(final.trials)) == 5
    assert {t.id for t in more[:2]} == set(held[1].withdrawn)


def test_a_retried_job_keeps_its_trials_and_a_moved_shards_new_job_gets_the_whole_text(setup):
    schedd, backend, spec, planned = setup
    job = schedd.job_of(SCAN.uid, 0)
    schedd.start(job)
    backend.assign(SCAN, 0, trial_lines([combination(0)]))
    schedd.set(job, JobStatus=1)  # the attempt failed; the schedd retries the same job: same ad
    schedd.start(job)
    assert backend.assignments(SCAN)[0].trials.keys() == {"c0-abc0"}

    backend.cancel(SCAN, [0])  # the shard moves: its job goes, a new generation comes
    backend.submit(SCAN, spec, [ShardLaunch(planned.shard_file(0), spec.sites[0], moves=1)])
    backend.assign(SCAN, 0, trial_lines([combination(5)]))
    new = schedd.job_of(SCAN.uid, 0)
    assert new != job
    assert [json.loads(line)["trial"]["id"] for line in value_lines(schedd.jobs[new].eval(TRIALS_ATTR))] == [
        "c0-abc0",
        "c5-abc5",
    ]


def test_a_job_that_appears_after_its_hand_out_gets_the_text_at_the_next_poll(setup):
    schedd, backend, _, _ = setup
    job = schedd.job_of(SCAN.uid, 0)
    schedd.set(job, JobStatus=2)
    backend.assign(SCAN, 0, trial_lines([combination(0)]))
    schedd.jobs[job][TRIALS_ATTR] = classad2.ExprTree('""')  # e.g. an edit the schedd lost
    for state in backend.scans:  # what was last written on each job
        state.written.clear()
    backend.fetch_progress(SCAN)
    assert json.loads(value_lines(schedd.jobs[job].eval(TRIALS_ATTR))[0])["trial"]["id"] == "c0-abc0"


def test_lines_survive_the_schedds_old_classad_syntax():
    """A schedd parses edited and chirped values in the old ClassAd syntax, where only \\" is an escape (on the test
    pool: "a\\nb" stayed four characters); lines_value leaves it nothing to parse but the quotes."""
    lines = ['{"error":"a \\"quoted\\" word\\nand a newline","path":"C:\\\\x"}', "50% done", "ünï"]
    value = lines_value(lines)
    assert value.count('"') == 2 and "\\" not in value
    assert value_lines(classad2.ExprTree(value).eval()) == lines
    assert value_lines(classad_string_value(str(classad2.ExprTree(value)))) == lines  # what chirp hands the job


def test_classad_strings_as_the_shadow_unparses_them():
    for text in ['{"a":"b \\" c"}\n{"x":1}', "tab\there", "back\\slash", "", "ünïcode '"]:
        unparsed = str(classad2.ExprTree(classad_string(text)))
        assert classad_string_value(unparsed) == text
    assert classad_string_value('"caf\\303\\251"') == "café"  # octal escapes are bytes
    assert classad_string_value("UNDEFINED") is None


def test_chirp_failures_never_stop_the_worker(capsys, setup):
    schedd, backend, spec, _ = setup
    job = schedd.job_of(SCAN.uid, 0)
    schedd.start(job)
    backend.assign(SCAN, 0, trial_lines([combination(0)]))
    client = JobChirp(schedd, job)
    channel = ChirpChannel(spec.objective, client=lambda: client)
    assert len(channel.inbox()[0]) == 1
    client.down = True
    assert len(channel.inbox()[0]) == 1  # what it read last
    channel.publish_progress([Progress(id="c0-abc0", epoch=1, metrics={"val_loss": 0.5})])
    err = capsys.readouterr().err
    assert "no new trials or stop requests for now" in err and "per-epoch progress waits" in err


def test_progress_keeps_the_newest_epoch_of_every_trial_within_a_chirp_line():
    sent: dict[str, str] = {}

    class Recording:
        def __enter__(self) -> Recording:
            return self

        def __exit__(self, *args: object) -> None:
            return None

        def set_job_attr(self, job_attribute: str, attribute_value: str) -> None:
            sent[job_attribute] = attribute_value

    channel = ChirpChannel(make_spec().objective, client=Recording)
    for epoch in range(1, 200):  # one long trial fills the line with its epochs...
        channel.publish_progress([Progress(id="long", epoch=epoch, metrics={"val_loss": 1.0 / epoch})])
    before = [json.loads(line) for line in value_lines(classad2.ExprTree(sent[PROGRESS_ATTR]).eval())]
    assert before[-1] == {"id": "long", "epoch": 199, "metrics": {"val_loss": 1.0 / 199}} and len(before) > 30
    # ... then a burst of many epochs of many trials at once (a chirp outage): each trial's newest still goes out
    burst = [Progress(id=f"t{i}", epoch=e, metrics={"val_loss": 0.5}) for i in range(20) for e in range(1, 6)]
    channel.publish_progress(burst)
    value = sent[PROGRESS_ATTR]
    assert chirp_line_length(PROGRESS_ATTR, value) <= CHIRP_LINE_MAX
    reports = [json.loads(line) for line in value_lines(classad2.ExprTree(value).eval())]
    newest = {(r["id"], r["epoch"]) for r in reports}
    assert {(f"t{i}", 5) for i in range(20)} <= newest
    assert len(reports) > 20  # the rest filled with the newest of the others
