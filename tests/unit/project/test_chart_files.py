"""The Helm chart's files that must agree with the rest of the repository: its CRD copy, the site schema in
values.schema.json, and the README that lists every value. Pure file checks (helm itself runs in
tests/integration/kubernetes/test_helm.py).

`python tests/unit/project/test_chart_files.py --write` brings the copies up to date (`make crds` runs it).
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "hpscan-operator"
CRD = REPO / "crds" / "hpscan.io_hpscans.yaml"
CHART_CRD = CHART / "crds" / CRD.name
SCHEMA = CHART / "values.schema.json"


def _strict(node: Any) -> Any:
    """A CRD schema node as plain JSON schema: no x-kubernetes keys, and unknown keys refused (the API server
    prunes them silently; a values file should fail instead)."""
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _strict(value) for key, value in node.items() if not key.startswith("x-kubernetes")}
    if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def site_schema_from_crd() -> dict[str, Any]:
    """The JSON schema of one entry of `defaults.sites`: the CRD's spec.sites item, with its CEL rules as JSON
    schema (exactly one backend block; vanilla universe needs an executable)."""
    crd = yaml.safe_load(CRD.read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    site = _strict(copy.deepcopy(spec["properties"]["sites"]["items"]))
    site["oneOf"] = [{"required": ["kubernetes"]}, {"required": ["htcondor"]}]
    site["properties"]["htcondor"]["if"] = {
        "properties": {"universe": {"const": "vanilla"}},
        "required": ["universe"],
    }
    site["properties"]["htcondor"]["then"] = {"required": ["executable"]}
    return site


def artifact_store_schema_from_crd() -> dict[str, Any]:
    """The JSON schema of `defaults.artifactStore`: the CRD's spec.artifacts.store."""
    crd = yaml.safe_load(CRD.read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return _strict(copy.deepcopy(spec["properties"]["artifacts"]["properties"]["store"]))


def _value_paths(values: Any, schema: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of the values a user sets, down to where the schema stops naming keys (scalars, lists,
    free-form mappings such as podSecurityContext). A key the schema does not name is reported as such."""
    if not (isinstance(values, dict) and "properties" in schema):
        return [prefix]
    paths = []
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else key
        assert key in schema["properties"], f"values.schema.json does not describe {path}"
        paths.extend(_value_paths(value, schema["properties"][key], path))
    return paths


def test_the_chart_crd_is_the_repository_crd():
    assert CHART_CRD.read_bytes() == CRD.read_bytes(), (
        f"{CHART_CRD.relative_to(REPO)} differs from {CRD.relative_to(REPO)}: run `make crds`"
    )


def test_the_site_schema_of_values_is_the_crd_site_schema():
    schema = json.loads(SCHEMA.read_text())
    assert schema["$defs"]["site"] == site_schema_from_crd(), "values.schema.json is stale: run `make crds`"
    tolerations = schema["$defs"]["site"]["properties"]["kubernetes"]["properties"]["tolerations"]["items"]
    assert schema["$defs"]["toleration"] == tolerations
    assert schema["$defs"]["artifactStore"] == artifact_store_schema_from_crd(), "values.schema.json is stale"


def test_every_value_is_in_the_schema_and_in_the_readme():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads(SCHEMA.read_text())
    readme = (CHART / "README.md").read_text()
    for path in _value_paths(values, schema):
        assert f"`{path}`" in readme, f"charts/hpscan-operator/README.md does not list `{path}`"


def test_the_schema_refuses_unknown_top_level_and_nested_keys():
    schema = json.loads(SCHEMA.read_text())
    assert schema["additionalProperties"] is False

    def check(node: dict[str, Any], where: str) -> None:
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, f"{where} accepts unknown keys"
            for key, child in node["properties"].items():
                check(child, f"{where}.{key}")

    check(schema, "values")


def test_the_site_blocks_of_the_example_value_files_are_valid_sites():
    """What the schema lets through, the API models accept too (the blocks are meant for spec.sites)."""
    from hpscan.api.sites import Site

    for values_file in sorted((CHART / "ci").glob("*.yaml")):
        for site in (yaml.safe_load(values_file.read_text()).get("defaults") or {}).get("sites", []):
            Site.model_validate(site)


def test_the_chart_stays_installable_with_helm_3():
    """The tools build Helm 4, but sites still run Helm 3: Chart.yaml apiVersion v3 (Helm 4's new chart format)
    would make `helm install` of Helm 3 refuse the chart."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"


def write() -> None:
    CHART_CRD.write_bytes(CRD.read_bytes())
    schema = json.loads(SCHEMA.read_text())
    schema["$defs"]["site"] = site_schema_from_crd()
    schema["$defs"]["artifactStore"] = artifact_store_schema_from_crd()
    schema["$defs"]["toleration"] = schema["$defs"]["site"]["properties"]["kubernetes"]["properties"]["tolerations"][
        "items"
    ]
    SCHEMA.write_text(json.dumps(schema, indent=2) + "\n")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/unit/project/test_chart_files.py --write")
    write()
