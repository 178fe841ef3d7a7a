"""The backend registry is the one place a backend is added: a toy backend, registered here and nowhere else, is
accepted by Site and the CRD, built by the controller, driven by the engine, and published to by shard-run."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import kopf
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from hpscan.api import registry
from hpscan.api.common import CamelModel
from hpscan.api.contract import ResultRecord
from hpscan.api.crd import crd
from hpscan.api.sites import Site
from hpscan.api.spec import HPScan, HPScanSpec
from hpscan.api.status import ShardPhase, ShardStatus
from hpscan.backends.base import Backend, BackendContext, ScanRef
from hpscan.cli import app
from hpscan.controller import handlers
from hpscan.controller.handlers import build_backends
from hpscan.controller.reconcile import reconcile_scan
from hpscan.core.planning import plan
from hpscan.core.shardfiles import write_shard_files
from hpscan.engine import EngineSettings
from hpscan.local_scan import run_scan, site_from_here
from support import CONTRACT_PAYLOAD
from support.run_observers import Quiet

PAYLOAD = CONTRACT_PAYLOAD


class ToySite(CamelModel):
    """A toy batch queue."""

    queue: str


class ToyBackend(Backend):
    """A toy batch system: shards run when the test says so."""

    name = "toy"

    def __init__(self, context: BackendContext) -> None:
        self.context = context
        self.states: dict[int, ShardStatus] = {}
        self.records: list[ResultRecord] = []
        self.queues: dict[int, str] = {}

    def submit(self, scan, spec, launches):
        for launch in launches:
            assert isinstance(launch.site.settings, ToySite)
            self.queues[launch.shard_file.shard] = launch.site.settings.queue
            self.states[launch.shard_file.shard] = ShardStatus(index=launch.shard_file.shard, site=launch.site.name)

    def poll(self, scan):
        return dict(self.states)

    def fetch_records(self, scan):
        return list(self.records)

    def cancel(self, scan, shards=None):
        for i in shards or list(self.states):
            self.states[i] = self.states[i].model_copy(update={"phase": ShardPhase.SUSPENDED})


class ToyChannel:
    published: list[ResultRecord] = []

    def __init__(self, shard_file: Path) -> None:
        self.shard_file = shard_file

    def recorded(self) -> list[ResultRecord]:
        return []

    def publish(self, records: list[ResultRecord]) -> None:
        ToyChannel.published.extend(records)


@pytest.fixture
def toy():
    entry = registry.register(
        registry.BackendEntry(
            name="toy",
            site_model=ToySite,
            description="Run shards on a toy queue.",
            factory=ToyBackend,
            channel=ToyChannel,
        )
    )
    yield entry
    registry.unregister("toy")


def scan_body(site: dict) -> dict:
    return {
        "apiVersion": "hpscan.io/v1alpha1",
        "kind": "HPScan",
        "metadata": {"name": "toy-scan", "namespace": "physics", "uid": "u-toy", "generation": 1},
        "spec": {
            "parameters": [{"name": "x", "values": [1, 2, 3, 4]}],
            "sharding": {"shards": 2},
            "gpu": {"count": 0, "required": False},
            "payload": {"image": "example.org/toy:1", "command": [sys.executable, str(PAYLOAD)]},
            "sites": [site],
        },
    }


def test_site_accepts_a_registered_backend_block_and_checks_it(toy):
    site = Site.model_validate({"name": "t", "toy": {"queue": "short"}})
    assert site.backend == "toy" and site.settings_as(ToySite) == ToySite(queue="short")
    with pytest.raises(ValidationError) as bad:
        Site.model_validate({"name": "t", "toy": {"queue": "short", "walltime": 3}})
    assert [e["loc"] for e in bad.value.errors()] == [("toy", "walltime")]
    with pytest.raises(ValidationError, match="exactly one backend block: kubernetes or htcondor or slurm or toy"):
        Site.model_validate({"name": "t"})


def test_an_unregistered_backend_block_is_refused():
    with pytest.raises(ValidationError) as bad:
        Site.model_validate({"name": "t", "toy": {"queue": "short"}})
    assert bad.value.errors()[0]["loc"] == ("toy",) and bad.value.errors()[0]["type"] == "extra_forbidden"


def test_the_crd_describes_the_registered_backend(toy):
    spec = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    site = spec["properties"]["sites"]["items"]
    assert site["properties"]["toy"]["description"] == "Run shards on a toy queue."
    assert site["properties"]["toy"]["required"] == ["queue"]
    assert "has(self.toy)" in site["x-kubernetes-validations"][0]["rule"]


def test_the_controller_builds_it_and_the_engine_drives_it_to_succeeded(toy):
    context = BackendContext(environ={})
    backends = build_backends(context, names=["toy"])
    assert isinstance(backends["toy"], ToyBackend) and backends["toy"].context is context

    body = scan_body({"name": "toy-site", "toy": {"queue": "gpu-short"}})
    memory: dict = {}
    outcome = reconcile_scan(body, backends, memory)
    toy_backend = backends["toy"]
    assert toy_backend.queues == {0: "gpu-short", 1: "gpu-short"}
    assert {s.site for s in outcome.status.shards} == {"toy-site"}

    planned = plan("toy-scan", HPScanSpec.model_validate(body["spec"]))
    for shard_file in planned.shard_files():
        for combination in shard_file.combinations:
            toy_backend.records.append(
                ResultRecord(
                    id=combination.id,
                    shard=shard_file.shard,
                    parameters=combination.parameters,
                    metrics={"val_loss": float(combination.parameters["x"])},
                    status="succeeded",
                )
            )
        toy_backend.states[shard_file.shard] = ShardStatus(index=shard_file.shard, phase=ShardPhase.SUCCEEDED)
    body["status"] = outcome.status.model_dump(mode="json", by_alias=True, exclude_none=True)
    final = reconcile_scan(body, backends, memory).status
    assert final.phase == "Succeeded" and final.combinations.succeeded == 4 and final.best.value == 1.0


def test_shard_run_publishes_through_the_registered_channel(toy, tmp_path):
    ToyChannel.published = []
    planned = plan(
        "toy-scan", HPScanSpec.model_validate(scan_body({"name": "toy-site", "toy": {"queue": "q"}})["spec"])
    )
    shard_file = write_shard_files(planned, tmp_path / "shards")[0]
    result = CliRunner().invoke(
        app,
        ["shard-run", str(shard_file), "--out", str(tmp_path / "out"), "--channel", "toy", "--",
         sys.executable, str(PAYLOAD)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sorted(r.id for r in ToyChannel.published) == sorted(c.id for c in planned.shard_file(0).combinations)


def test_shard_run_names_the_backends_when_the_channel_is_unknown(tmp_path):
    result = CliRunner().invoke(app, ["shard-run", "x.json", "--out", str(tmp_path), "--channel", "pbs", "--", "true"])
    assert result.exit_code == 2
    assert "no backend 'pbs' (registered: kubernetes, htcondor, slurm)" in result.output


class ToyHereBackend(ToyBackend):
    """The toy queue, submitted to from this machine: a shard runs at once and records every combination."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(BackendContext(environ={}))
        self.run_dir = run_dir
        self.forgotten: list[str] = []

    def submit(self, scan, spec, launches):
        super().submit(scan, spec, launches)
        for launch in launches:
            shard_file = launch.shard_file
            self.records += [
                ResultRecord(
                    id=c.id,
                    shard=shard_file.shard,
                    parameters=c.parameters,
                    metrics={"val_loss": 1.0},
                    status="succeeded",
                )
                for c in shard_file.combinations
            ]
            self.states[shard_file.shard] = ShardStatus(
                index=shard_file.shard, phase=ShardPhase.SUCCEEDED, site=launch.site.name
            )

    def forget(self, scan):
        self.forgotten.append(scan.uid)


@pytest.fixture
def toy_from_here(toy):
    built: list[ToyHereBackend] = []

    def here_factory(scan, run_dir, poll_seconds):
        built.append(ToyHereBackend(run_dir))
        return built[-1], ScanRef(name=scan.metadata.name, namespace="local", uid="u-here")

    registry.register(replace(toy, here_factory=here_factory))
    yield built


def test_hpscan_run_site_submits_from_here_through_the_registered_here_factory(toy_from_here, tmp_path):
    """`hpscan run --site` works for any backend whose entry can submit from this machine, not only HTCondor."""
    scan = HPScan.model_validate(scan_body({"name": "toy-site", "toy": {"queue": "q"}}))
    site = site_from_here(scan, "toy-site")
    status = run_scan(scan, tmp_path / "run", Quiet(), EngineSettings(poll_seconds=0.01), site=site)
    assert status.phase == "Succeeded" and status.combinations.succeeded == 4
    [backend] = toy_from_here
    assert backend.run_dir == tmp_path / "run" and backend.queues == {0: "q", 1: "q"}
    assert len((tmp_path / "run" / "results.jsonl").read_text().splitlines()) == 4
    assert backend.forgotten == ["u-here"], "an ended run lets the batch system forget its jobs"


def test_hpscan_run_site_names_the_sites_that_can_run_from_here(toy_from_here, tmp_path):
    body = scan_body({"name": "toy-site", "toy": {"queue": "q"}})
    body["spec"]["sites"].append({"name": "cluster", "kubernetes": {}})
    manifest = tmp_path / "scan.yaml"
    manifest.write_text(json.dumps(body))
    result = CliRunner().invoke(app, ["run", str(manifest), "--out", str(tmp_path / "run"), "--site", "cluster"])
    assert result.exit_code == 2, result.output
    assert "'cluster' is a kubernetes site" in result.output and "toy-site" in result.output
    assert not (tmp_path / "run").exists()
    registry.register(replace(registry.entry("toy"), here_factory=None))
    result = CliRunner().invoke(app, ["run", str(manifest), "--out", str(tmp_path / "run"), "--site", "toy-site"])
    assert result.exit_code == 2 and "'toy-site' is a toy site, which cannot run from this machine" in result.output


class WatchingToyBackend(ToyBackend):
    """The toy queue, reading the operator's watch-fed indexes (as the Kubernetes backend does)."""

    def __init__(self) -> None:
        super().__init__(BackendContext(environ={}))
        self.caches: list = []

    def use_watch_cache(self, cache) -> None:
        self.caches.append(cache)


def test_the_operator_hands_its_watch_indexes_to_any_backend_that_takes_them(toy, monkeypatch):
    """The reconcile handler asks no backend for its name or class: a backend with use_watch_cache gets the
    indexes of shard Jobs and ConfigMaps, one without is left alone."""
    monkeypatch.setattr(handlers.kopf, "event", lambda *args, **kwargs: None)
    watching, plain = WatchingToyBackend(), ToyBackend(BackendContext(environ={}))
    memo = kopf.Memo()
    memo.hpscan = handlers.OperatorState(backends={"toy": watching, "kubernetes": plain})
    job = {"metadata": {"name": "toy-scan-0"}}
    indexes = {"shard_jobs": {("physics", "toy-scan"): [job]}, "shard_configmaps": {}}
    body = scan_body({"name": "toy-site", "toy": {"queue": "q"}})
    handlers.reconcile(body=body, patch=kopf.Patch(), memo=memo, **indexes)
    [cache] = watching.caches
    assert cache.jobs("physics", "toy-scan") == [job] and cache.configmaps("physics", "toy-scan") == []
    assert watching.queues == {0: "q", 1: "q"}, "the scan was reconciled with it"
