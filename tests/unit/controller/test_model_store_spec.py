"""spec.artifacts.store: validated early with messages naming the field, the site default, the layout in the
bucket, what a shard pod gets (the store and the Secret's key pair as env), and the prune decision. Pure; the
real S3 server's tests are tests/integration/store/test_model_store.py and test_operator.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from hpscan.api.contract import ResultRecord
from hpscan.api.spec import Artifacts, HPScanSpec
from hpscan.api.store import STORE_ENV, ArtifactStore, ModelStoreLocation, S3Store
from hpscan.backends.base import ScanRef
from hpscan.backends.htcondor import submit_description
from hpscan.backends.kubernetes import job_manifest
from hpscan.controller.defaults import OperatorDefaults
from hpscan.controller.reconcile import prune_models
from hpscan.core.artifacts import job_store, models_to_prune
from hpscan.core.planning import plan

STORE = {"endpoint": "https://s3.cern.ch", "bucket": "atlas-ftag", "prefix": "hpscan/dl1", "secretRef": {"name": "s3"}}


def spec(artifacts: dict | None = None, **extra) -> HPScanSpec:
    return HPScanSpec.model_validate(
        {
            "parameters": [{"name": "x", "values": [1, 2, 3]}],
            "sharding": {"shards": 1},
            "payload": {"image": "img:1"},
            "artifacts": artifacts or {},
            **extra,
        }
    )


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"endpoint": "s3.cern.ch"}, "endpoint", "must be an http:// or https:// URL with a host"),
        ({"endpoint": "https://s3.cern.ch/atlas-ftag"}, "endpoint", "put the bucket in `bucket`"),
        ({"bucket": "Atlas_FTag"}, "bucket", "is not a bucket name: 3-63 lowercase letters"),
        ({"bucket": "a..b"}, "bucket", "no '..'"),
        ({"prefix": "/hpscan/"}, "prefix", "no leading, trailing or double slash"),
        ({"prefix": "a//b"}, "prefix", "no leading, trailing or double slash"),
        ({"secretRef": {}}, "secretRef.name", "Field required"),
    ],
)
def test_a_bad_store_is_refused_naming_the_field(change, field, message):
    with pytest.raises(ValidationError) as raised:
        spec({"store": {"s3": {**STORE, **change}}})
    text = str(raised.value)
    assert f"artifacts.store.s3.{field}" in text and message in text


def test_the_crd_carries_the_same_rules_for_the_api_server():
    import yaml

    from hpscan.api.crd import crd_yaml

    crd = yaml.safe_load(crd_yaml())
    store = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["artifacts"]
    s3 = store["properties"]["store"]["properties"]["s3"]
    assert s3["required"] == ["endpoint", "bucket", "secretRef"]
    assert s3["properties"]["bucket"]["pattern"] == "^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
    assert s3["properties"]["endpoint"]["pattern"] and s3["properties"]["prefix"]["pattern"]
    assert "secretAccessKey" in json.dumps(s3["properties"]["secretRef"])


def test_the_layout_is_prefix_namespace_scan_combination():
    where = ModelStoreLocation.of(S3Store.model_validate(STORE), "atlas", "dl1-seed-scan")
    assert where.model_key("c7-ab12", "model.json") == "hpscan/dl1/atlas/dl1-seed-scan/c7-ab12/model.json"
    bare = ModelStoreLocation.of(S3Store.model_validate({**STORE, "prefix": ""}), "atlas", "s")
    assert bare.key_prefix == "atlas/s/"


def test_the_site_default_store_applies_to_scans_that_name_none():
    defaults = OperatorDefaults.model_validate({"artifactStore": {"s3": STORE}})
    assert defaults.with_store(spec()).artifacts.store == defaults.artifact_store
    own = {**STORE, "bucket": "mine"}
    assert defaults.with_store(spec({"store": {"s3": own}})).artifacts.store.s3.bucket == "mine"
    # keeps no models, but its pods keep their trials' checkpoints there
    assert defaults.with_store(spec({"keep": "none"})).artifacts.store == defaults.artifact_store
    assert OperatorDefaults().with_store(spec()).artifacts.store is None
    assert OperatorDefaults().with_store(spec({"keep": "none"})).artifacts.store is None


def test_a_scan_s_jobs_use_its_store_whatever_it_keeps():
    default = S3Store.model_validate(STORE)
    own = Artifacts.model_validate({"keep": "none", "store": {"s3": {**STORE, "bucket": "mine"}}})
    for keep in ("top", "all", "none"):
        assert job_store(Artifacts(keep=keep), ArtifactStore(s3=default)) == ArtifactStore(s3=default)
        assert job_store(Artifacts(keep=keep)) is None
    assert job_store(own, ArtifactStore(s3=default)) == own.store


def test_a_shard_pod_gets_the_store_and_the_secrets_key_pair_as_env():
    scan = ScanRef(name="dl1", namespace="atlas", uid="u")
    env = job_manifest(scan, spec({"store": {"s3": STORE}}), 0, None)["spec"]["template"]["spec"]["containers"][0][
        "env"
    ]
    by_name = {e["name"]: e for e in env}
    assert json.loads(by_name[STORE_ENV]["value"])["keyPrefix"] == "hpscan/dl1/atlas/dl1/"
    assert by_name["AWS_ACCESS_KEY_ID"]["valueFrom"] == {"secretKeyRef": {"name": "s3", "key": "accessKeyId"}}
    assert by_name["AWS_SECRET_ACCESS_KEY"]["valueFrom"] == {"secretKeyRef": {"name": "s3", "key": "secretAccessKey"}}
    env = job_manifest(scan, spec(), 0, None)["spec"]["template"]["spec"]["containers"][0]["env"]
    assert not {STORE_ENV, "AWS_ACCESS_KEY_ID"} & {e["name"] for e in env}  # no store: nothing to reach


def test_a_scan_that_keeps_no_models_still_gives_its_pods_the_store_for_checkpoints():
    """keep: none once left the pod without the store, so an evicted pod's trials began again at epoch 0."""
    scan = ScanRef(name="dl1", namespace="atlas", uid="u")
    quiet = spec({"keep": "none", "store": {"s3": STORE}})
    pod = job_manifest(scan, quiet, 0, None)["spec"]["template"]["spec"]
    by_name = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert json.loads(by_name[STORE_ENV]["value"])["keyPrefix"] == "hpscan/dl1/atlas/dl1/"
    assert by_name["AWS_SECRET_ACCESS_KEY"]["valueFrom"] == {"secretKeyRef": {"name": "s3", "key": "secretAccessKey"}}
    planned = plan("dl1", quiet).shard_file(0)
    assert planned.checkpoints and not planned.artifacts.save_models  # checkpoints asked for, models not


def test_htcondor_jobs_bring_models_back_only_when_the_scan_keeps_them_in_a_store():
    scan = ScanRef(name="dl1", namespace="atlas", uid="u")
    site = {"sites": [{"name": "grid", "htcondor": {}}]}
    for artifacts, outputs in (
        ({"store": {"s3": STORE}}, "results.jsonl, checkpoints, models"),
        ({}, "results.jsonl, checkpoints"),
    ):
        with_site = spec(artifacts, **site)
        planned = plan("dl1", with_site)
        submitted = submit_description(scan, with_site, with_site.sites[0], planned.shard_files(), Path("/work"))
        assert submitted.description["transfer_output_files"] == outputs


def stored(losses: dict[str, float | None]) -> dict[str, ResultRecord | None]:
    return {
        i: None
        if loss is None
        else ResultRecord(id=i, shard=0, parameters={}, metrics={"val_loss": loss}, status="succeeded")
        for i, loss in losses.items()
    }


def test_pruning_keeps_the_top_k_the_median_and_the_worst_and_never_what_it_cannot_rank():
    objective = spec().objective
    models = stored({f"c{i}": float(i) for i in range(9)} | {"unranked": None})
    assert models_to_prune(models, objective, Artifacts(top=2)) == {"c2", "c3", "c5", "c6", "c7"}
    assert models_to_prune(models, objective, Artifacts(keep="all")) == set()
    assert models_to_prune(stored({"c0": 1.0}), objective, Artifacts(top=1)) == set()


def test_a_scan_without_a_store_prunes_nothing_and_asks_for_no_secret():
    def no_secret(*_args):
        raise AssertionError("no Secret is read for a scan without a store")

    assert prune_models(ScanRef(name="s"), spec(), no_secret) is None


def test_a_secret_that_cannot_be_read_is_a_warning_naming_it():
    def missing(namespace, name, key):
        raise KeyError(key)

    event = prune_models(ScanRef(name="s", namespace="atlas"), spec({"store": {"s3": STORE}}), missing)
    assert event is not None and event.type == "Warning" and event.reason == "ArtifactStoreFailed"
    assert "Secret atlas/s3" in event.message and "accessKeyId" in event.message
