"""Base model for the API: camelCase on the wire (as Kubernetes expects), snake_case in Python."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class CamelModel(BaseModel):
    """Fields are snake_case in Python and camelCase in YAML/JSON; unknown fields are an error."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
    )

    def to_wire(self) -> dict:
        """JSON-ready dict with camelCase keys, without unset optional fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def cel_rules(*rules: tuple[str, str]) -> dict[str, Any]:
    """json_schema_extra carrying (rule, message) CEL rules that the API server enforces itself."""
    return {"x-kubernetes-validations": [{"rule": rule, "message": message} for rule, message in rules]}


class EnvVar(CamelModel):
    """An environment variable of the payload (or of a site's jobs)."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Variable name.")
    value: str = Field("", description="Variable value.")
