"""The axes of a scan's space: a parameter with explicit values or a numeric range (part of HPScanSpec)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from hpscan.api.common import CamelModel, cel_rules
from hpscan.api.contract import ParameterValue

MAX_PARAMETERS = 32
MAX_VALUES_PER_AXIS = 10_000


class ValueRange(CamelModel):
    """A numeric axis: `count` points between min and max (linear or log), or every `step` from min to max."""

    min: float = Field(description="Lowest value (included).")
    max: float = Field(description="Highest value (included when the points reach it).")
    count: int | None = Field(None, ge=1, le=MAX_VALUES_PER_AXIS, description="Number of points, min and max included.")
    step: float | None = Field(
        None,
        gt=0,
        description="Distance between points (linear only); integers give an integer axis, e.g. 32..256 step 32.",
    )
    scale: Literal["linear", "log"] = Field("linear", description="Spacing of the `count` points: linear or log.")

    model_config = CamelModel.model_config | {
        "json_schema_extra": cel_rules(
            ("self.min < self.max", "range.min must be less than range.max"),
            ("!(has(self.count) && has(self.step))", "give range.count or range.step, not both"),
            ("self.scale != 'log' || self.min > 0.0", "a log range needs min > 0"),
            ("self.scale != 'log' || !has(self.step)", "range.step works on a linear scale only; use count with log"),
        )
    }

    @model_validator(mode="after")
    def _check(self) -> ValueRange:
        if not self.min < self.max:
            raise ValueError(f"range.min ({self.min:g}) must be less than range.max ({self.max:g})")
        if self.count is not None and self.step is not None:
            raise ValueError("give range.count or range.step, not both")
        if self.scale == "log" and self.min <= 0:
            raise ValueError(f"a log range needs min > 0 (got {self.min:g})")
        if self.scale == "log" and self.step is not None:
            raise ValueError("range.step works on a linear scale only; use count with log")
        if self.step is not None and (self.max - self.min) / self.step >= MAX_VALUES_PER_AXIS:
            raise ValueError(f"range.step gives more than {MAX_VALUES_PER_AXIS} points on one axis")
        return self

    @property
    def is_discrete(self) -> bool:
        """Whether the range is a finite list of points (count or step) rather than continuous."""
        return self.count is not None or self.step is not None


class Parameter(CamelModel):
    """One axis of the scan: explicit `values`, or a numeric `range`."""

    name: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$",
        max_length=63,
        description="Parameter name, as the payload knows it (dl1: layer1..layerN, learning_rate, batch_size, activation).",
    )
    values: list[ParameterValue] | None = Field(
        None, min_length=1, max_length=MAX_VALUES_PER_AXIS, description="Explicit values: numbers, strings or booleans."
    )
    range: ValueRange | None = Field(None, description="A numeric range instead of explicit values.")

    # CEL cannot see `values` (its items are untyped: numbers or strings), so the API server checks
    # "exactly one of values or range" with a structural oneOf of required lists instead.
    model_config = CamelModel.model_config | {"json_schema_extra": {"x-hpscan-exactly-one-of": ["values", "range"]}}

    @model_validator(mode="after")
    def _check(self) -> Parameter:
        if (self.values is None) == (self.range is None):
            raise ValueError("a parameter needs exactly one of values or range")
        if self.values is not None and len({(type(v).__name__, v) for v in self.values}) != len(self.values):
            raise ValueError(f"parameter {self.name!r} lists a value twice")
        return self
