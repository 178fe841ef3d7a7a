"""Which credential a call to an HTCondor access point uses (pure): the connection a site's calls go through.

The bindings read the IDTOKEN directory once per process and cache authenticated sessions per schedd, so two
credentials cannot share a process. A site whose settings name a ``tokenSecret`` is therefore talked to by a worker
process of its own (``worker``), one per connection: the schedd (pool, name) and the credential (namespace, Secret,
key). Scans with the same connection share the worker and its poll query; a site without a ``tokenSecret`` uses the
operator's own identity, in the operator's process, as one connection per schedd.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from hpscan.api.sites import HTCondorSite


@dataclass(frozen=True)
class Credential:
    """An IDTOKEN held in a Kubernetes Secret of the scan's own namespace."""

    namespace: str
    secret: str
    key: str

    def describe(self) -> str:
        """How messages name it."""
        return f"the IDTOKEN in key {self.key!r} of Secret {self.namespace}/{self.secret}"


@dataclass(frozen=True)
class Connection:
    """One schedd as one identity: the key of the backend's schedd handles, poll views and worker processes."""

    pool: str | None
    schedd: str | None
    credential: Credential | None = None
    """None: the operator's own identity (its environment's credentials), in the operator's process."""

    @property
    def slug(self) -> str:
        """A file name for this connection's private token folder (the same connection, the same name)."""
        return hashlib.sha256(repr(self).encode()).hexdigest()[:20]


def connection_for(site: HTCondorSite, namespace: str, reads_secrets: bool) -> Connection:
    """The connection a call for ``site`` of a scan in ``namespace`` goes through. The Secret is always the scan's own
    namespace's (a scan cannot name another's); without a Secret reader (``hpscan run`` on a laptop) a site's
    ``tokenSecret`` cannot be read and the environment's credentials are used, as the field's description says."""
    ref = site.token_secret
    credential = Credential(namespace, ref.name, ref.key) if ref is not None and reads_secrets else None
    return Connection(site.pool, site.schedd, credential)


_REFUSALS = re.compile(r"DENIED|AUTHENTICATE:\d+|PERMISSION DENIED|not authorized|authentication failed", re.I)


def refused(message: str) -> bool:
    """Whether the bindings' error says the schedd refused the caller (it could not authenticate it, or the identity
    may not do this), as opposed to not answering at all. Such errors carry HTCondor's own codes:
    ``SECMAN:2010:Received "DENIED" from server`` (authenticated, not authorised) or
    ``AUTHENTICATE:1003:Failed to authenticate with any method`` (e.g. a token the pool did not sign)."""
    return bool(_REFUSALS.search(message))
