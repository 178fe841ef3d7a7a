"""The CustomResourceDefinition, generated from the pydantic models (the single source of truth).

Pydantic writes JSON Schema 2020-12; Kubernetes wants a *structural* OpenAPI v3.0 schema. ``structural`` turns one
into the other: refs inlined, optionals unwrapped, unions of scalars left open, exclusive bounds rewritten, titles
dropped. A test checks that every field keeps a description.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from hpscan.api.spec import GROUP, KIND, PLURAL, SHORT_NAMES, SINGULAR, VERSION, HPScanSpec
from hpscan.api.status import HPScanStatus

_DROP = {"title", "additionalProperties", "$defs", "discriminator"}
_KEEP_AS_IS = {"default", "enum", "required", "description", "pattern", "format", "type"} | {
    "minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems",
}  # fmt: skip


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _resolve(merged, defs)
    return node


def _is_null(node: dict[str, Any]) -> bool:
    return node.get("type") == "null"


def structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """One JSON Schema node as a structural OpenAPI v3.0 node."""
    node = _resolve(node, defs)
    variants = node.get("anyOf") or node.get("oneOf")
    if variants:
        real = [v for v in variants if not _is_null(v)]
        outer = {k: v for k, v in node.items() if k not in {"anyOf", "oneOf"}}
        if outer.get("default", 0) is None:
            del outer["default"]
        if len(real) == 1:
            return structural({**_resolve(real[0], defs), **outer}, defs)
        # A union of scalars (a parameter value): the API server keeps it as given, pydantic checks it.
        scalar: dict[str, Any] = {k: v for k, v in outer.items() if k in {"description"}}
        scalar["x-kubernetes-preserve-unknown-fields"] = True
        return scalar

    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP or key in {"properties", "items"}:
            continue
        if key == "const":
            out["enum"] = [value]
        elif key == "exclusiveMinimum":
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum":
            out["maximum"], out["exclusiveMaximum"] = value, True
        elif key == "x-hpscan-exactly-one-of":
            out["oneOf"] = [{"required": [name]} for name in value]
        elif key in _KEEP_AS_IS or key.startswith("x-kubernetes-"):
            out[key] = value
    if "const" in node and "type" not in out:
        out["type"] = "string"

    kind = node.get("type")
    if kind == "object":
        properties = node.get("properties")
        extra = node.get("additionalProperties")
        if properties:
            out["properties"] = {name: structural(sub, defs) for name, sub in properties.items()}
        elif isinstance(extra, dict) and extra:
            values = structural(extra, defs)
            if values.get("x-kubernetes-preserve-unknown-fields") and "type" not in values:
                out["x-kubernetes-preserve-unknown-fields"] = True
            else:
                out["additionalProperties"] = values
        else:
            out["x-kubernetes-preserve-unknown-fields"] = True  # opaque to the API server (e.g. payload settings)
    elif kind == "array":
        out["items"] = structural(node.get("items", {}), defs)
    return out


def _defaults_of_factories(model: type[BaseModel], schema: dict[str, Any], defs: dict[str, Any]) -> None:
    """Give object fields built by a default_factory a `default`, so the API server fills them in too."""
    props = schema.get("properties", {})
    for name, info in model.model_fields.items():
        key = info.alias or name
        if key not in props or info.default_factory is None:
            continue
        value = info.default_factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            props[key]["default"] = value.model_dump(mode="json", by_alias=True, exclude_none=True)
            nested = props[key]
            if "$ref" in nested:
                _defaults_of_factories(type(value), _resolve(nested, defs), defs)


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural schema of one model."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    _defaults_of_factories(model, raw, defs)
    return structural(raw, defs)


PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Phase of the scan."},
    {"name": "Done", "type": "string", "jsonPath": ".status.progress", "description": "Recorded / total combinations."},
    {"name": "Best", "type": "number", "jsonPath": ".status.best.value", "description": "Best objective value so far."},
    {
        "name": "Pareto",
        "type": "integer",
        "jsonPath": ".status.paretoSize",
        "description": "Size of the Pareto set (multi-objective scans).",
    },
    {"name": "Sites", "type": "string", "jsonPath": ".status.usableSites", "description": "Usable / all sites."},
    {
        "name": "Metric",
        "type": "string",
        "jsonPath": ".spec.objective.metric",
        "priority": 1,
        "description": "Objective.",
    },
    {
        "name": "Best-ID",
        "type": "string",
        "jsonPath": ".status.best.id",
        "priority": 1,
        "description": "Best combination.",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def crd() -> dict[str, Any]:
    """The HPScan CustomResourceDefinition (apiextensions.k8s.io/v1)."""
    spec_schema = model_schema(HPScanSpec)
    # Until the operator first writes a status, kstatus (Helm 4's --wait, Flux, cli-utils) would call a new scan
    # Current, as it calls any object without status.observedGeneration: `helm install --wait` would return before
    # the scan ran. The API server fills this default in on every read until that first write replaces it, so a
    # new scan reads InProgress ("generation is 1, but latest observed generation is 0").
    status_schema = {**model_schema(HPScanStatus), "default": {"observedGeneration": 0}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}", "labels": {"app.kubernetes.io/part-of": "hpscan"}},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": SHORT_NAMES,
                "categories": ["hpscan"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A hyperparameter scan: a space of combinations, an objective and a payload "
                            "image, fanned out into per-shard GPU jobs on Kubernetes or HTCondor sites.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string", "description": "hpscan.io/v1alpha1"},
                                "kind": {"type": "string", "description": "HPScan"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def crd_yaml() -> str:
    """The CRD as the YAML committed under crds/."""
    import yaml

    class NoAliases(yaml.SafeDumper):
        """Writes a schema used twice (e.g. EnvVar) out twice: readers of a CRD expect no YAML anchors."""

        def ignore_aliases(self, data: object) -> bool:
            return True

    header = "# Generated by `hpscan crd` from the pydantic models in operator/hpscan/api; do not edit by hand.\n"
    return header + yaml.dump(crd(), Dumper=NoAliases, sort_keys=False, width=120)
