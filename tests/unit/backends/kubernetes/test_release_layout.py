"""A Job started by today's operator for a shard the previous release started (its one ConfigMap, mounted) speaks
the release's layout; every other shard's Job stays in today's (record pages read through the API)."""

from __future__ import annotations

import copy
from pathlib import Path

from hpscan.backends.base import ScanRef
from hpscan.backends.kubernetes import job_manifest
from hpscan.backends.kubernetes.release_layout import (
    LAYOUT_ANNOTATION,
    in_release_layout,
    release_configmap,
    single_configmap_name,
)
from hpscan.core.manifest import load_scan
from hpscan.job.configmap import CONFIGMAP_ENV
from hpscan.job.pages import PAGE_KEY, SHARD_KEY

SCAN = load_scan(Path("examples/dl1-seed-scan.yaml"))
REF = ScanRef(name="dl1-seed-scan", namespace="physics", uid="1234")


def configmap(name: str, **data: str) -> dict:
    return {"metadata": {"name": name}, "data": data}


def test_only_a_shards_one_configmap_with_its_shard_file_is_the_releases_layout():
    release = configmap("dl1-seed-scan-shard-001", **{SHARD_KEY: "{}", "c0001-ab": "{}"})
    page_0 = configmap("dl1-seed-scan-shard-002-p0", **{SHARD_KEY: "{}", PAGE_KEY: "{}"})  # today's: no
    inbox = configmap("dl1-seed-scan-shard-003-in", **{"trials.jsonl": ""})
    found = [release, page_0, inbox]
    assert single_configmap_name("dl1-seed-scan", 1) == "dl1-seed-scan-shard-001"
    assert release_configmap(found, "dl1-seed-scan", 1) == "dl1-seed-scan-shard-001"
    assert release_configmap(found, "dl1-seed-scan", 2) is None
    assert release_configmap(found, "dl1-seed-scan", 3) is None
    assert release_configmap([configmap("dl1-seed-scan-shard-001")], "dl1-seed-scan", 1) is None  # no shard file
    assert release_configmap(found, "other-scan", 1) is None


def test_a_job_in_the_releases_layout_mounts_the_shards_configmap_and_sends_its_records_there():
    today = job_manifest(REF, SCAN.spec, 1, SCAN.spec.sites[0], moves=2)
    kept = copy.deepcopy(today)
    job = in_release_layout(today, "dl1-seed-scan-shard-001")
    assert today == kept  # a new manifest: today's is not changed
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert {"name": "shard", "configMap": {"name": "dl1-seed-scan-shard-001"}} in pod["volumes"]
    assert not any(v.get("emptyDir") is not None for v in pod["volumes"] if v["name"] == "shard")
    (mount,) = (m for m in container["volumeMounts"] if m["name"] == "shard")
    assert mount["readOnly"] is True and mount["mountPath"] == "/hpscan/shard"
    # the release's runner reads the shard file at the same path and patches its records into the one ConfigMap
    assert container["command"][:3] == ["hpscan", "shard-run", "/hpscan/shard/shard.json"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env[CONFIGMAP_ENV] == "dl1-seed-scan-shard-001"
    assert job["metadata"]["annotations"][LAYOUT_ANNOTATION] == "single-configmap"
    # everything else is today's Job: its name (a moved shard's), resources, labels, failure policy
    assert job["metadata"]["name"] == today["metadata"]["name"] == "dl1-seed-scan-shard-001-m2"
    assert job["spec"]["podFailurePolicy"] == today["spec"]["podFailurePolicy"]
    assert container["resources"] == today["spec"]["template"]["spec"]["containers"][0]["resources"]
