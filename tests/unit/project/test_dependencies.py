"""pyproject.toml's requirements: no upper bound without its reason, the HTCondor bindings' range holds the test
pool's daemons, and tests/floors.py (the lowest lane's check) finds floors that lowest-direct could not install."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import floors

REPO = Path(__file__).resolve().parents[3]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
UPPER = ("<", "<=", "==", "~=", "===")

ALLOWED_UPPER = {"htcondor"}
"""Upper bounds with their reason written beside them in pyproject.toml; a new one needs its reason there too."""


def all_requirements() -> list[Requirement]:
    lines = PROJECT["dependencies"] + [r for extra in PROJECT["optional-dependencies"].values() for r in extra]
    return [Requirement(line) for line in lines]


def test_no_requirement_has_an_upper_bound_without_its_reason():
    capped = {r.name for r in all_requirements() if any(s.operator in UPPER for s in r.specifier)}
    assert capped == ALLOWED_UPPER


def test_the_htcondor_bindings_range_holds_the_daemons_the_test_pool_builds():
    versions = (REPO / "cluster" / "versions.env").read_text()
    daemons = re.search(r"^HTCONDOR_VERSION=(\S+)$", versions, re.M)
    assert daemons, "cluster/versions.env names no HTCONDOR_VERSION"
    (bindings,) = [r for r in all_requirements() if r.name == "htcondor" and r.specifier]
    assert Version(daemons[1]) in bindings.specifier
    # the upper bound is the next major: the same series as the daemons, as the comment beside it says
    (upper,) = [Version(s.version) for s in bindings.specifier if s.operator == "<"]
    assert upper.major == Version(daemons[1]).major + 1


def test_every_library_requirement_has_a_floor():
    # the lowest lane checks floors; a requirement without one would go untested at its oldest
    no_floor = [r.name for r in all_requirements() if r.name != "hpscan" and floors.floor(r) is None]
    assert no_floor == ["types-PyYAML"]  # stubs, lint only


def test_extras_expand_through_the_projects_references_to_itself():
    project = {
        "name": "hpscan",
        "dependencies": ["pydantic>=2.8"],
        "optional-dependencies": {"search": ["optuna>=5.0"], "operator": ["kopf>=1.37", "hpscan[search]"]},
    }
    names = [r.name for r in floors.requirements(project, ["operator"])]
    assert names == ["pydantic", "kopf", "optuna"]


def test_a_requirement_above_or_missing_from_its_floor_is_named_once():
    found = [Requirement(line) for line in ["numpy>=2.2.6", "boto3>=1.34", "boto3>=1.34", "rich>=13", "lint"]]
    installed = {"numpy": "2.3.0", "boto3": "1.34.0", "rich": "13.0"}
    problems = floors.above_floor(found, installed.get)
    assert problems == ["numpy: floor 2.2.6 declared, 2.3.0 installed by lowest-direct: raise the floor to 2.3.0"]
    assert floors.above_floor([Requirement("typer>=0.12")], {}.get) == ["typer: not installed (declared >=0.12)"]


def test_a_requirement_whose_marker_does_not_apply_here_is_skipped():
    found = [Requirement('tomli>=2; python_version < "3.0"')]
    assert floors.above_floor(found, {}.get) == []


def test_an_unknown_extra_is_an_error_not_an_empty_check():
    with pytest.raises(KeyError, match="no-such-extra"):
        floors.requirements(PROJECT, ["no-such-extra"])
