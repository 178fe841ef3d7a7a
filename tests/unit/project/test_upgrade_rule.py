"""The compatibility rule of operator upgrades (docs/upgrades.md), checked against the release an upgrade starts
from (charts/upgrade-from.yaml): the CRD changed only by additions within each version the release served, the
chart's version moved on, and the record ConfigMaps of the release's layout (one per shard) still read."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from hpscan.api.contract import ResultRecord, ShardFile
from hpscan.job.configmap import record_patch
from hpscan.job.pages import SHARD_KEY, records_of, unrecorded

REPO = Path(__file__).resolve().parents[3]
RELEASE = yaml.safe_load((REPO / "charts" / "upgrade-from.yaml").read_text())
CRD = "crds/hpscan.io_hpscans.yaml"


def _at_release(path: str) -> str:
    shown = subprocess.run(["git", "-C", str(REPO), "show", f"{RELEASE['commit']}:{path}"],
                           capture_output=True, text=True, check=False)  # fmt: skip
    if shown.returncode != 0:
        pytest.fail(f"{path} at the release {RELEASE['commit']} cannot be read (a shallow clone?): {shown.stderr}")
    return shown.stdout


def _fields(schema: dict[str, Any], path: str = "") -> dict[str, tuple[Any, frozenset[str]]]:
    """Every field path of an OpenAPI schema: its type and the properties it requires."""
    found = {path: (schema.get("type"), frozenset(schema.get("required", [])))}
    for name, child in (schema.get("properties") or {}).items():
        found |= _fields(child, f"{path}.{name}")
    if "items" in schema:
        found |= _fields(schema["items"], f"{path}[]")
    return found


def crd_breaks(release: dict[str, Any], today: dict[str, Any]) -> list[str]:
    """What today's CRD takes away from objects the release's operator and users wrote: a version no longer
    served, a field removed or retyped, a property newly required where the release had the field."""
    versions = {v["name"]: v for v in today["spec"]["versions"]}
    breaks = []
    for version in release["spec"]["versions"]:
        if not version["served"]:
            continue
        name = version["name"]
        if name not in versions or not versions[name]["served"]:
            breaks.append(f"version {name} is no longer served")
            continue
        before = _fields(version["schema"]["openAPIV3Schema"])
        after = _fields(versions[name]["schema"]["openAPIV3Schema"])
        for path, (kind, required) in before.items():
            if path not in after:
                breaks.append(f"{name}: {path or '(root)'} removed")
            elif after[path][0] != kind:
                breaks.append(f"{name}: {path} is {after[path][0]}, was {kind}")
            elif added := after[path][1] - required:
                breaks.append(f"{name}: {path or '(root)'} newly requires {sorted(added)}")
    return breaks


def test_the_crd_changed_since_the_release_only_by_additions_within_its_served_versions():
    release, today = yaml.safe_load(_at_release(CRD)), yaml.safe_load((REPO / CRD).read_text())
    breaks = crd_breaks(release, today)
    assert not breaks, (
        "the CRD takes away what the release wrote; serve a new version beside the old one, with conversion "
        f"(docs/upgrades.md): {breaks}"
    )


def test_crd_breaks_names_a_removed_a_retyped_and_a_newly_required_field():
    def crd(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
        schema = {"type": "object", "properties": {"spec": {"type": "object", "properties": properties,
                                                             "required": required}}}  # fmt: skip
        return {"spec": {"versions": [{"name": "v1", "served": True, "storage": True,
                                       "schema": {"openAPIV3Schema": schema}}]}}  # fmt: skip

    release = crd({"a": {"type": "string"}, "b": {"type": "integer"}, "c": {"type": "string"}}, [])
    today = crd({"a": {"type": "string"}, "b": {"type": "string"}, "d": {"type": "string"}}, ["a"])
    assert crd_breaks(release, today) == [
        "v1: .spec newly requires ['a']",
        "v1: .spec.b is string, was integer",
        "v1: .spec.c removed",
    ]
    assert crd_breaks(release, crd({**release["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
        "spec"]["properties"], "e": {"type": "object"}}, [])) == []  # fmt: skip
    gone = {"spec": {"versions": [{"name": "v2", "served": True, "storage": True, "schema": {}}]}}
    assert crd_breaks(release, gone) == ["version v1 is no longer served"]


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("-")[0].split("."))


def test_the_chart_version_moved_on_from_the_release_and_the_release_commit_is_in_mains_history():
    chart = yaml.safe_load((REPO / "charts" / "hpscan-operator" / "Chart.yaml").read_text())
    released = yaml.safe_load(_at_release("charts/hpscan-operator/Chart.yaml"))
    assert released["version"] == RELEASE["chartVersion"]
    assert _version(chart["version"]) > _version(released["version"])
    assert _version(str(chart["appVersion"])) > _version(str(released["appVersion"]))
    ancestor = subprocess.run(["git", "-C", str(REPO), "merge-base", "--is-ancestor", RELEASE["commit"], "HEAD"],
                              check=False)  # fmt: skip
    assert ancestor.returncode == 0, f"{RELEASE['commit']} is not in this branch's history"


def test_a_shard_configmap_of_the_layout_before_pages_gives_its_records_and_what_it_still_hands_out():
    """The release's shard ConfigMap (one per shard): the whole shard file under shard.json, one key per record,
    as its pods patched them. Today's operator reads its records and knows which combinations are unrecorded."""
    shard_file = ShardFile.model_validate(
        {
            "scan": "upgrade",
            "shard": 0,
            "shards": 1,
            "objective": {"metric": "val_loss", "goal": "minimize"},
            "gpu": {"count": 0, "required": False},
            "combinations": [
                {"id": "c0-aa", "parameters": {"layer1": 8}},
                {"id": "c1-bb", "parameters": {"layer1": 16}},
            ],
        }
    )
    record = ResultRecord.model_validate(
        {"id": "c0-aa", "shard": 0, "status": "succeeded", "parameters": {"layer1": 8}, "metrics": {"val_loss": 0.6}}
    )
    legacy = {SHARD_KEY: shard_file.model_dump_json(by_alias=True, exclude_none=True)} | record_patch([record])["data"]
    (read,), unreadable = records_of(legacy)
    assert (read.id, read.metrics["val_loss"], unreadable) == ("c0-aa", 0.6, 0)
    assert unrecorded([legacy]) == {"c1-bb"}
    assert json.loads(legacy[SHARD_KEY])["combinations"]  # the layout the test stands for: the file, whole
