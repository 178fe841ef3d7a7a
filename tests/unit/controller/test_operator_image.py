"""operator/Dockerfile, read as text (there is no container engine here): a non-root final stage that runs
`hpscan operator`, installs the operator and condor extras that pyproject.toml defines, and agrees with the Helm
chart on the user id and the HTCondor sandbox folder."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]
DOCKERFILE = REPO / "operator" / "Dockerfile"
CHART = REPO / "charts" / "hpscan-operator"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    pairs = []
    for line in lines:
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def test_the_final_stage_runs_hpscan_operator_as_a_numeric_non_root_user():
    stage = final_stage()
    users = [rest for word, rest in stage if word == "USER"]
    assert users, "the final stage sets no USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0 and (not gid or int(gid) != 0)  # numeric: runAsNonRoot can verify it
    (entrypoint,) = [rest for word, rest in stage if word == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["hpscan", "operator"]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == int(uid)
    env = " ".join(rest for word, rest in stage if word == "ENV")
    assert f"HPSCAN_CONDOR_DIR={values['operator']['condorDir']}" in env


def test_it_installs_the_operator_and_condor_extras_that_pyproject_defines():
    installs = [rest for word, rest in instructions() if word == "RUN" and "pip install" in rest]
    (install,) = installs
    target = next(arg for arg in shlex.split(install) if arg.startswith(".["))
    extras = set(target.removeprefix(".[").removesuffix("]").split(","))
    assert extras == {"operator", "condor"}  # no TensorFlow, no report stack
    defined = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras <= set(defined)


def test_the_build_fails_unless_dl1s_settings_checker_loads():
    """Without it the operator refuses every dl1 scan (PayloadCheckUnavailable): better a failed image build."""
    build = instructions()[: max(i for i, (word, _) in enumerate(instructions()) if word == "FROM")]
    assert any(word == "RUN" and "find_checker(['dl1'])" in rest for word, rest in build)


def test_every_copied_source_exists():
    for word, rest in instructions():
        if word == "COPY" and not rest.startswith("--from"):
            *sources, _ = rest.split()
            for source in sources:
                assert (REPO / source).exists(), f"COPY {source}: not in the repository"
