"""IDTOKENs: installing the tokens a site's Secret holds where the bindings look for them."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, MutableMapping
from pathlib import Path

from hpscan.api.sites import HTCondorSite
from hpscan.api.spec import HPScanSpec
from hpscan.errors import BackendError

_JWT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")


def install_token(token: str, directory: Path, name: str) -> Path:
    """Write an IDTOKEN (e.g. read from a site's Secret by the operator) into a tokens folder, readable only by
    this user; HTCondor tries every token there and uses the one whose issuer the schedd trusts."""
    token = token.strip()
    if not _JWT.match(token):
        raise BackendError(f"IDTOKEN {name!r} is not a token (expected the JWT that condor_token_create prints)")
    if not re.match(r"^[A-Za-z0-9._-]+$", name):
        raise BackendError(f"token name {name!r} must be a plain file name")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / name
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(token + "\n")
    path.chmod(0o600)
    return path


def install_site_tokens(
    spec: HPScanSpec, namespace: str, read_secret: Callable[[str, str, str], str], directory: Path
) -> list[Path]:
    """Install the IDTOKEN of every htcondor site of a scan that names a ``tokenSecret``. ``read_secret(namespace,
    name, key)`` returns the Secret's value (the operator reads it from the API server); files are named
    ``<namespace>.<secret>.<key>`` so scans sharing a Secret share the file."""
    paths = []
    for site in spec.sites:
        ref = condor.token_secret if (condor := site.settings_as(HTCondorSite)) is not None else None
        if ref is None:
            continue
        try:
            token = read_secret(namespace, ref.name, ref.key)
        except Exception as error:
            raise BackendError(
                f"site {site.name!r}: cannot read key {ref.key!r} of Secret {namespace}/{ref.name}: {error}"
            ) from None
        paths.append(install_token(token, directory, f"{namespace}.{ref.name}.{ref.key}"))
    return paths


def use_token_directory(directory: Path, config: MutableMapping[str, str] | None = None) -> None:
    """Point the bindings' IDTOKEN lookup at ``directory`` (``htcondor2.param`` unless ``config`` is given;
    setting ``_CONDOR_SEC_TOKEN_DIRECTORY`` before the process starts does the same)."""
    if config is None:
        import htcondor2

        config = htcondor2.param
    config["SEC_TOKEN_DIRECTORY"] = str(directory)
