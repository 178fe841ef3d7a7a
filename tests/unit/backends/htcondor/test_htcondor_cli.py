"""`hpscan condor-submit`, the chirp channel of `hpscan shard-run`, and IDTOKEN installation."""

from __future__ import annotations

import json
import re
import socket
import stat
import sys
import threading
from pathlib import Path

import classad2
import htcondor2
import pytest
import yaml
from typer.testing import CliRunner

from hpscan.api.contract import Objective, ResultRecord
from hpscan.backends.htcondor import install_token
from hpscan.cli import app
from hpscan.errors import BackendError
from hpscan.job.chirp import CHIRP_LINE_MAX, ChirpChannel, chirp_line_length, record_page_attr, value_lines

EXAMPLE = Path("examples/dl1-seed-scan.yaml")
TOKEN = "eyJhbGciOiJIUzI1NiIsImtpZCI6IlBPT0wifQ.eyJpYXQiOjE3MDAwMDAwMDAsImlzcyI6InBvb2wiLCJzdWIiOiJocHNjYW4ifQ.c2ln"


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def test_dry_run_prints_a_submit_file_with_one_job_per_shard(tmp_path):
    result = run("condor-submit", str(EXAMPLE), "--site", "uk-manchester", "--dry-run", "--work-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    submit = htcondor2.Submit(result.output)
    items = list(submit.itemdata())
    assert [item["Shard"] for item in items] == [str(i) for i in range(10)]
    assert {item["Combinations"] for item in items} == {"80"}
    assert submit.expand("request_gpus") == "1"
    assert submit.expand("gpus_minimum_capability") == "7.0"
    assert submit.expand("container_image") == "docker://registry.example.org/hpscan/dl1-payload:0.1.0"
    assert submit.expand("MY.HPScanUid").startswith('"manifest-')
    assert str(tmp_path.absolute()) in submit["initialdir"]
    assert not any(tmp_path.iterdir())  # a dry run writes nothing


def test_dry_run_is_stable_so_resubmission_is_idempotent(tmp_path):
    args = ("condor-submit", str(EXAMPLE), "--dry-run", "--work-dir", str(tmp_path))
    assert run(*args).output == run(*args).output


def test_the_site_must_be_an_htcondor_site(tmp_path):
    result = run("condor-submit", str(EXAMPLE), "--site", "gpu-cluster", "--dry-run")
    assert result.exit_code == BackendError.exit_code
    assert "not an htcondor site" in result.output and "uk-manchester" in result.output
    result = run("condor-submit", str(EXAMPLE), "--site", "nowhere", "--dry-run")
    assert "no site 'nowhere'" in result.output


def test_an_unreachable_schedd_is_one_line_naming_it(tmp_path):
    manifest = yaml.safe_load(EXAMPLE.read_text())
    manifest["spec"]["sites"] = [
        {"name": "gone", "htcondor": {"schedd": "ce01.example.invalid", "pool": "cm.example.invalid:9618"}}
    ]
    path = tmp_path / "scan.yaml"
    path.write_text(yaml.safe_dump(manifest))
    # The real bindings, asked to find a collector that does not exist.
    result = run("condor-submit", str(path), "--work-dir", str(tmp_path / "work"))
    assert result.exit_code == 3
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "ce01.example.invalid" in lines[0] and "cm.example.invalid:9618" in lines[0]
    assert "did not answer" in lines[0]


def record(i: int, value: float, status: str = "succeeded") -> ResultRecord:
    return ResultRecord(
        id=f"c{i:04d}-0000000{i % 10}",
        shard=0,
        parameters={"layer1": 32 * (i + 1), "activation": "relu"},
        metrics={"val_loss": value} if status == "succeeded" else {},
        status=status,  # type: ignore[arg-type]
    )


class RecordingChirp:
    def __init__(self) -> None:
        self.attributes: dict[str, str] = {}
        self.order: list[str] = []  # every attribute set, in order
        self.connected = False

    def __enter__(self) -> RecordingChirp:
        self.connected = True
        return self

    def __exit__(self, *args: object) -> None:
        self.connected = False

    def set_job_attr(self, job_attribute: str, attribute_value: str) -> None:
        assert self.connected, "htchirp needs a connection (use it as a context manager)"
        self.attributes[job_attribute] = attribute_value
        self.order.append(job_attribute)

    def get_job_attr(self, job_attribute: str) -> str:
        assert self.connected, "htchirp needs a connection (use it as a context manager)"
        return self.attributes.get(job_attribute, "UNDEFINED")  # as the shadow answers for an unset attribute


def paged_ids(attributes: dict[str, str]) -> list[str]:
    """The ids of the records on a job's record pages, in order."""
    ad = classad2.ClassAd({name: classad2.ExprTree(value) for name, value in attributes.items()})
    pages = range(ad.eval("HPScanRecordPages"))
    return [json.loads(line)["id"] for page in pages for line in value_lines(ad.eval(record_page_attr(page)))]


def test_chirp_channel_sets_progress_attributes_as_classad_values():
    client = RecordingChirp()
    channel = ChirpChannel(Objective(metric="val_loss", goal="minimize"), client=lambda: client)
    channel.publish([record(0, 0.7), record(1, 0.4)])
    channel.publish([record(2, 0.0, status="failed"), record(3, 0.5)])
    ad = classad2.ClassAd({name: classad2.ExprTree(value) for name, value in client.attributes.items()})
    assert ad.eval("HPScanDone") == 4
    assert ad.eval("HPScanFailed") == 1
    assert ad.eval("HPScanBest") == 0.4
    assert ad.eval("HPScanRecordPages") == 1
    assert paged_ids(client.attributes) == [record(i, 0).id for i in range(4)]


def test_chirp_channel_keeps_every_record_in_pages_of_one_chirp_line_each():
    client = RecordingChirp()
    channel = ChirpChannel(Objective(goal="maximize"), client=lambda: client)
    for i in range(200):
        client.order.clear()
        channel.publish([record(i, float(i))])
    pages = int(client.attributes["HPScanRecordPages"])
    assert pages > 5
    assert all(chirp_line_length(record_page_attr(p), client.attributes[record_page_attr(p)]) <= CHIRP_LINE_MAX
               for p in range(pages))  # fmt: skip
    assert paged_ids(client.attributes) == [record(i, 0).id for i in range(200)]
    # A publish sets the newest page only, then the count, then HPScanDone (a reader that sees it finds the pages).
    assert client.order == [
        record_page_attr(pages - 1),
        "HPScanRecordPages",
        "HPScanDone",
        "HPScanFailed",
        "HPScanBest",
    ]
    assert classad2.ExprTree(client.attributes["HPScanBest"]).eval() == 199.0


def test_a_page_chirp_could_not_set_goes_with_the_next_publish(capsys):
    client = RecordingChirp()
    down = [False]

    def connect() -> RecordingChirp:
        if down[0]:
            raise OSError("no chirp proxy")
        return client

    channel = ChirpChannel(Objective(), client=connect)
    for i in range(40):
        down[0] = 10 <= i < 25  # an outage while a page fills and the next one starts
        channel.publish([record(i, float(i))])
    assert "chirp unavailable" in capsys.readouterr().err
    assert paged_ids(client.attributes) == [record(i, 0).id for i in range(40)]


def test_a_retried_job_writes_its_records_after_those_of_its_earlier_attempts():
    """A retried job keeps its ad: the new attempt's channel reads the pages back (recorded) and appends."""

    class AdChirp(RecordingChirp):
        def get_job_attr(self, job_attribute: str) -> str:
            return self.attributes.get(job_attribute, "UNDEFINED")

    client = AdChirp()
    first = ChirpChannel(Objective(), client=lambda: client)
    for i in range(25):
        first.publish([record(i, 1.0 / (i + 1))])
    second = ChirpChannel(Objective(), client=lambda: client)
    assert [r.id for r in second.recorded()] == [record(i, 0).id for i in range(25)]
    second.publish([record(25, 0.01)])
    assert paged_ids(client.attributes) == [record(i, 0).id for i in range(26)]
    assert classad2.ExprTree(client.attributes["HPScanDone"]).eval() == 26
    assert classad2.ExprTree(client.attributes["HPScanBest"]).eval() == 0.01


def test_chirp_channel_never_stops_the_payload(capsys):
    def no_chirp():
        raise OSError("no .chirp.config")

    ChirpChannel(Objective(), client=no_chirp).publish([record(0, 0.1)])
    assert "chirp unavailable" in capsys.readouterr().err


def test_shard_run_with_the_chirp_channel(tmp_path):
    shard_file = tmp_path / "shard-000.json"
    shard_file.write_text(
        json.dumps({"scan": "s", "shard": 0, "shards": 1, "objective": {}, "gpu": {"count": 0}, "combinations": []})
    )
    payload = "import sys, pathlib; pathlib.Path(sys.argv[-1], 'results.jsonl').write_text('')"
    result = run(
        "shard-run", str(shard_file), "--out", str(tmp_path / "out"), "--channel", "htcondor", "--",
        sys.executable, "-c", payload,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "results.jsonl").exists()


def test_install_token_writes_a_private_token_file(tmp_path):
    path = install_token(TOKEN + "\n", tmp_path / "tokens.d", "atlas-manchester")
    assert path.read_text() == TOKEN + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(BackendError, match="not a token"):
        install_token("password123", tmp_path / "tokens.d", "bad")
    with pytest.raises(BackendError, match="plain file name"):
        install_token(TOKEN, tmp_path / "tokens.d", "../escape")


class ChirpServerStandIn:
    """A STAND-IN for the starter's chirp server (no HTCondor daemons here): speaks enough of the chirp protocol
    (cookie authentication, set_job_attr, get_job_attr) for the real htchirp client, and records what it was told."""

    def __init__(self) -> None:
        self.cookie = "s3cret"
        self.attributes: dict[str, str] = {}
        self.longest = 0
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            with connection, connection.makefile("rb") as lines:
                for raw in lines:
                    self.longest = max(self.longest, len(raw))
                    words = re.findall(rb"(?:\\.|[^ \n])+", raw)  # chirp escapes with a backslash
                    command = [re.sub(r"\\(.)", r"\1", w.decode()) for w in words]
                    if command[0] == "cookie":
                        connection.sendall(b"0\n" if command[1] == self.cookie else b"-1\n")
                    elif command[0] == "set_job_attr":
                        self.attributes[command[1]] = command[2]
                        connection.sendall(b"0\n")
                    elif command[0] == "get_job_attr":  # the value's length, then the value ("UNDEFINED": unset)
                        value = self.attributes.get(command[1], "UNDEFINED").encode()
                        connection.sendall(b"%d\n" % len(value) + value)
                    else:
                        connection.sendall(b"-5\n")

    def close(self) -> None:
        self.listener.close()


def test_the_real_htchirp_client_carries_the_records(tmp_path, monkeypatch):
    server = ChirpServerStandIn()
    config = tmp_path / ".chirp.config"
    config.write_text(f"127.0.0.1 {server.port} {server.cookie}\n")
    monkeypatch.setenv("_CONDOR_CHIRP_CONFIG", str(config))
    try:
        channel = ChirpChannel(Objective())  # the default client: htchirp.HTChirp from the job's .chirp.config
        for i in range(60):  # parameters with spaces and quotes, as payload settings may have
            wide = record(i, 1.0 / (i + 1)).model_copy(update={"parameters": {"note": f'run "{i}" with spaces'}})
            channel.publish([wide])
    finally:
        server.close()
    assert server.longest <= CHIRP_LINE_MAX
    ad = classad2.ClassAd({name: classad2.ExprTree(value) for name, value in server.attributes.items()})
    assert ad.eval("HPScanDone") == 60
    assert ad.eval("HPScanBest") == pytest.approx(1.0 / 60)
    assert ad.eval("HPScanRecordPages") > 1
    assert paged_ids(server.attributes) == [record(i, 0).id for i in range(60)]
    last = value_lines(ad.eval(record_page_attr(ad.eval("HPScanRecordPages") - 1)))
    assert json.loads(last[-1])["parameters"] == {"note": 'run "59" with spaces'}


def test_shard_run_refuses_to_start_without_htchirp(tmp_path, monkeypatch):
    """The channel reports chirp failures and goes on; a missing client library must not be one of them."""
    import sys as system

    monkeypatch.setitem(system.modules, "htchirp", None)  # import htchirp raises ImportError
    result = CliRunner().invoke(
        app, ["shard-run", str(tmp_path / "s.json"), "--out", str(tmp_path), "--channel", "htcondor", "--", "true"]
    )
    assert result.exit_code == 2 and "needs the htchirp package" in result.output


def test_hpscan_run_site_must_be_an_htcondor_site_of_the_scan(tmp_path):
    """`hpscan run --site`: a Kubernetes site or an unknown name is refused before anything runs (exit 2)."""
    for site, words in (("gpu-cluster", "is a kubernetes site"), ("nowhere", "no site 'nowhere'")):
        result = run("run", str(EXAMPLE), "--out", str(tmp_path / site), "--site", site, "--plain")
        assert result.exit_code == 2, result.output
        assert words in result.output and "uk-manchester" in result.output
        assert not (tmp_path / site).exists()


def test_a_retried_attempt_that_cannot_read_the_earlier_pages_holds_its_records_instead_of_writing_over_them():
    """Found by the simulation (seed 155): an attempt whose first chirp read failed started its pages at 0 over
    the earlier attempt's, with HPScanDone at the value it had, so a restarted operator never read the pages again
    and the worker waited for trials for ever."""
    client = RecordingChirp()
    first = ChirpChannel(Objective(), client=lambda: client)
    first.recorded()
    first.publish([record(0, 0.5), record(1, 0.4)])
    down = {"now": True}

    def flaky() -> RecordingChirp:
        if down["now"]:
            raise OSError("no chirp proxy")
        return client

    second = ChirpChannel(Objective(), client=flaky)
    assert second.recorded() == []  # chirp is away at the start of the retried attempt
    second.publish([record(2, 0.3), record(3, 0.2)])
    assert paged_ids(client.attributes) == [record(0, 0).id, record(1, 0).id]  # nothing written over them
    down["now"] = False
    second.publish([])  # the next poll: the earlier pages first, then the held records after them
    assert paged_ids(client.attributes) == [record(i, 0).id for i in range(4)]
    ad = classad2.ClassAd({name: classad2.ExprTree(value) for name, value in client.attributes.items()})
    assert ad.eval("HPScanDone") == 4
