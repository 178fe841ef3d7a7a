"""Bad input gets a clear error naming the field; no traceback reaches the user, whatever the file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from hpscan.cli import app
from hpscan.core.manifest import check_file, load_scan
from hpscan.errors import ManifestError

SEED = Path("examples/dl1-seed-scan.yaml")
runner = CliRunner()


def write(tmp_path: Path, text: str | bytes, name: str = "scan.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def seed_with(**changes) -> str:
    document = yaml.safe_load(SEED.read_text())
    for dotted, value in changes.items():
        node = document
        *parents, last = dotted.split("__")
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        node[int(last) if last.isdigit() else last] = value
    return yaml.safe_dump(document)


@pytest.mark.parametrize(
    ("changes", "path", "message"),
    [
        ({"spec__sharding": {"shards": 10, "combinationsPerShard": 80}}, "spec.sharding", "exactly one of shards or combinationsPerShard"),
        ({"spec__parameters__3__range": {"min": 1e-2, "max": 1e-4, "count": 5}}, "spec.parameters[3].range", "must be less than"),
        ({"spec__parameters__3__range": {"min": 0, "max": 1, "count": 5, "scale": "log"}}, "spec.parameters[3].range", "log range needs min > 0"),
        ({"spec__parameters__0__name": "layer2"}, "spec", "parameter names must be unique; repeated: layer2"),
        ({"spec__objective__goal": "minimise"}, "spec.objective.goal", "'minimize' or 'maximize'"),
        ({"spec__sharding__shardz": 3}, "spec.sharding.shardz", "unknown field"),
        ({"spec__sampling": {"strategy": "random"}}, "spec.sampling", "random sampling needs samples"),
        ({"spec__sites__0__htcondor": {}}, "spec.sites[0]", "exactly one backend block"),
        ({"spec__payload__image": ""}, "spec.payload.image", "at least 1 character"),
        ({"spec__gpu__minComputeCapability": "seven"}, "spec.gpu.minComputeCapability", "should match pattern"),
        ({"metadata__name": "Not_A_DNS_Label"}, "metadata.name", "should match pattern"),
        ({"kind": "Deployment"}, "kind", "expected 'HPScan'"),
    ],
)  # fmt: skip
def test_invalid_manifest_names_the_field(tmp_path, changes, path, message):
    scans, problems = check_file(write(tmp_path, seed_with(**changes)))
    assert not scans
    assert any(p.path == path and message in p.message for p in problems), [str(p) for p in problems]
    result = runner.invoke(app, ["validate", str(tmp_path / "scan.yaml")])
    assert result.exit_code == 2
    assert path in result.output and message in result.output


def test_several_documents_are_checked_one_by_one(tmp_path):
    good = SEED.read_text()
    bad = seed_with(spec__retries=-1)
    scans, problems = check_file(write(tmp_path, good + "\n---\n" + bad))
    assert len(scans) == 1
    assert [(p.document, p.path) for p in problems] == [(2, "spec.retries")]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00garbage", "binary file"),
        (b"\xff\xfe\xfdnot utf8", "not UTF-8"),
        (b"spec: [unclosed", "not valid YAML at line 1"),
        (b"", "holds no YAML document"),
        (b"- just\n- a list\n", "expected a mapping"),
    ],
)
def test_unreadable_files_get_one_clear_line(tmp_path, content, message):
    path = write(tmp_path, content)
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ManifestError, match="no such file"):
        load_scan(tmp_path / "nope.yaml")
    with pytest.raises(ManifestError, match="is a folder"):
        load_scan(tmp_path)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash(tmp_path, content):
    path = write(tmp_path, content, "fuzz.yaml")
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code in (0, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_plan_writes_shard_files(tmp_path):
    result = runner.invoke(app, ["plan", str(SEED), "--out", str(tmp_path / "plan")])
    assert result.exit_code == 0, result.output
    assert "800 combinations" in result.output
    assert len(os.listdir(tmp_path / "plan")) == 10


def test_plan_refuses_an_oversized_grid_quickly(tmp_path):
    document = yaml.safe_load(SEED.read_text())
    document["spec"]["parameters"] = [{"name": f"p{i}", "range": {"min": 1, "max": 2, "count": 1000}} for i in range(4)]
    result = runner.invoke(app, ["plan", str(write(tmp_path, yaml.safe_dump(document)))])
    assert result.exit_code == 2
    assert (
        "1,000,000,000,000 combinations" in str(result.exception or result.output)
        or "1,000,000,000,000" in result.output
    )
