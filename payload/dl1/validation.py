"""What hpscan asks the dl1 payload before a scan is submitted: are these settings and parameter values ones
dl1 understands? Registered as the ``dl1`` entry point of the group ``hpscan.payloads``; cheap to import (no
TensorFlow) and pure: it reads no data file (those live where the jobs run)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from dl1.errors import DL1Error
from dl1.model import parse_combination
from dl1.train import parse_settings


def check(settings: Mapping[str, Any], combinations: Iterable[Mapping[str, Any]]) -> list[str]:
    """Problems with ``spec.payload.settings`` and with the parameters of these combinations, one line each."""
    try:
        defaults = parse_settings(dict(settings)).model_defaults()
    except DL1Error as error:
        return [str(error)]
    problems: list[str] = []
    for parameters in combinations:
        try:
            parse_combination(dict(parameters), defaults)
        except DL1Error as error:
            if str(error) not in problems:
                problems.append(str(error))
    return problems
