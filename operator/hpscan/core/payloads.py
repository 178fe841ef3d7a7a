"""Asking a payload, before anything is submitted, whether it understands a scan's settings and parameters.

A payload publishes a checker under the entry point group ``hpscan.payloads``, named by its command's first word
(dl1: ``dl1.validation:check``): ``check(settings, combinations) -> list of problems``. hpscan never imports a
payload; a payload without a checker is not checked. A checker that is registered but cannot be loaded (its
packages are missing here) refuses the scan (``PayloadCheckUnavailable``): fail closed, never admitted unchecked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from pathlib import PurePath
from typing import Any

from hpscan.api.contract import ParameterValue
from hpscan.core.planning import Plan, axis_size, axis_values
from hpscan.errors import ManifestError, PayloadCheckUnavailable

ENTRY_POINT_GROUP = "hpscan.payloads"

Checker = Callable[[Mapping[str, Any], list[dict[str, ParameterValue]]], list[str]]


def find_checker(command: list[str]) -> Checker | None:
    """The checker the payload of ``spec.payload.command`` registered, or None when it registered none;
    PayloadCheckUnavailable when it registered one that cannot be loaded here."""
    name = PurePath(command[0]).name if command else ""
    for entry in entry_points(group=ENTRY_POINT_GROUP, name=name):
        try:
            return entry.load()  # type: ignore[no-any-return, unused-ignore]
        except Exception as error:  # ImportError mostly: a package the checker needs is not installed here
            raise PayloadCheckUnavailable(
                f"the {name} payload's settings checker ({entry.value}) cannot be loaded here: "
                f"{type(error).__name__}: {error}; the scan's settings cannot be checked, so it is refused "
                "(install what the checker needs where hpscan runs)"
            ) from None
    return None


def representative_combinations(planned: Plan) -> list[dict[str, ParameterValue]]:
    """A few combinations that together hold every value each parameter takes: the first combination, then one
    per (parameter, value) with that value swapped in. Pure; at most the sum of the axis sizes, never the grid."""
    axes: dict[str, list[ParameterValue]] = {}
    for parameter in planned.spec.parameters:
        if axis_size(parameter) is not None:
            axes[parameter.name] = axis_values(parameter)
        else:  # a continuous range (random or adaptive sampling): its ends
            assert parameter.range is not None
            axes[parameter.name] = [parameter.range.min, parameter.range.max]
    if planned.adaptive:  # trials are suggested later: the axes' first points stand for the first one
        base = {name: values[0] for name, values in axes.items()}
    else:
        first = next(iter(planned.combinations()), None)
        if first is None:
            return []
        base = dict(first.parameters)
    out = [base]
    for name, values in axes.items():
        out += [{**base, name: value} for value in values if value != base.get(name)]
    return out


def check_payload(planned: Plan) -> list[str]:
    """The payload's problems with this plan's settings and parameter values ([] when it has no checker)."""
    spec = planned.spec
    checker = find_checker(list(spec.payload.command))
    if checker is None:
        return []
    return [
        f"spec.payload: {problem}" for problem in checker(spec.payload.settings, representative_combinations(planned))
    ]


def require_payload_accepts(planned: Plan) -> None:
    """ManifestError naming every problem the payload has with the plan (run, plan and the operator call this)."""
    if problems := check_payload(planned):
        raise ManifestError(f"HPScan {planned.scan}: " + "; ".join(problems))
