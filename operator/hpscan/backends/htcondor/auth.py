"""IDTOKENs: writing the token a site's Secret holds where a worker process's bindings look for it (worker.py)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from hpscan.errors import BackendError

_JWT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")


def install_token(token: str, directory: Path, name: str) -> Path:
    """Write an IDTOKEN (e.g. read from a site's Secret by the operator) into a tokens folder, readable only by
    this user (HTCondor would try every token there: a credential's worker keeps just its own in its folder)."""
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
