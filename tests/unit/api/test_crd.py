"""The CRD is generated from the models, committed, structural, and documents every field."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from hpscan.api.crd import crd, crd_yaml
from hpscan.cli import app

COMMITTED = Path("crds/hpscan.io_hpscans.yaml")


def test_committed_crd_matches_the_models():
    assert COMMITTED.read_text() == crd_yaml(), "crds/ drifted from the models: run `make crds`"


def test_hpscan_crd_command_prints_it():
    result = CliRunner().invoke(app, ["crd"])
    assert result.exit_code == 0
    assert yaml.safe_load(result.output) == crd()


def walk(node, path="spec"):
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def schema():
    return crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_every_field_has_a_description():
    # Array items and map values are not fields: `kubectl explain` shows the description of their field.
    fields = [(path, node) for path, node in walk(schema()) if not path.endswith(("[]", "{}"))]
    missing = [path for path, node in fields if path != "spec.metadata" and not node.get("description")]
    assert missing == []


def test_schema_is_structural():
    for path, node in walk(schema()):
        if path == "spec.metadata":
            continue  # the API server's own ObjectMeta
        assert "$ref" not in node and "anyOf" not in node, path
        # oneOf is allowed only as a value validation: lists of required fields, no types inside.
        assert all(set(branch) == {"required"} for branch in node.get("oneOf", [])), path
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path
        if node.get("type") == "object":
            assert ("properties" in node) != ("additionalProperties" in node) or node.get(
                "x-kubernetes-preserve-unknown-fields"
            ), path


def test_names_printer_columns_and_subresource():
    spec = crd()["spec"]
    assert (spec["group"], spec["names"]["plural"], spec["names"]["shortNames"]) == ("hpscan.io", "hpscans", ["hps"])
    version = spec["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"] if "priority" not in c] == [
        "Phase",
        "Done",
        "Best",
        "Pareto",
        "Sites",
        "Age",
    ]


def test_defaults_and_cel_rules_are_present():
    spec = schema()["properties"]["spec"]
    assert spec["properties"]["retries"]["default"] == 2
    assert spec["properties"]["objective"]["default"] == {"metric": "val_loss", "goal": "minimize"}
    rules = [r["rule"] for r in spec["properties"]["sharding"]["x-kubernetes-validations"]]
    assert "has(self.shards) != has(self.combinationsPerShard)" in rules
    transitions = [r["rule"] for r in spec["x-kubernetes-validations"] if "oldSelf" in r["rule"]]
    assert "self.parameters == oldSelf.parameters" in transitions
    assert any("self.objectives == oldSelf.objectives" in rule for rule in transitions)
    messages = [r["message"] for r in spec["x-kubernetes-validations"]]
    assert "give objective or objectives, not both" in messages
    assert any("several objectives needs earlyStopping.strategy: none" in m for m in messages)
    objectives = spec["properties"]["objectives"]
    assert (objectives["minItems"], objectives["maxItems"]) == (2, 3)
