"""The schedd handles of the connections in use (a schedd as one identity), and the one way to call them.

A call goes through ``Schedds.calling``: a schedd call that fails drops the connection's handle (the next call
locates the schedd again, or restarts the credential's worker with the token its Secret holds then) and raises
``call_failed``'s error (SchedulerUnavailable, or CredentialRefused naming the credential).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

from hpscan.api.sites import HTCondorSite, Site
from hpscan.backends.base import ScanRef, batch_call
from hpscan.backends.htcondor.credentials import Connection, connection_for
from hpscan.backends.htcondor.schedd import REMOVE_REASON_PREFIX, ScheddFactory, ScheddLike, call_failed, condor_of
from hpscan.backends.htcondor.state import ScanState
from hpscan.backends.htcondor.worker import CredentialWorkers
from hpscan.errors import BackendError, HPScanError


class Schedds:
    """Schedd handles by connection: the operator's own (``schedd_factory``) for a connection without a credential,
    else the proxy of the credential's worker process (one process per credential, see credentials.py)."""

    def __init__(
        self,
        token_dir: Path,
        schedd_factory: ScheddFactory,
        read_secret: Callable[[str, str, str], str] | None,
    ) -> None:
        self.schedd_factory = schedd_factory
        self.read_secret = read_secret
        self._handles: dict[Connection, ScheddLike] = {}
        self._workers = CredentialWorkers(token_dir)

    def connection(self, scan: ScanRef, site: Site) -> Connection:
        """The connection a call for this scan's site goes through (credentials.connection_for)."""
        return connection_for(condor_of(site), scan.namespace, reads_secrets=self.read_secret is not None)

    def distinct(self, state: ScanState) -> list[tuple[Connection, Site]]:
        """One site per connection (schedd and credential) the scan uses."""
        first: dict[Connection, Site] = {}
        for site in state.sites.values():
            first.setdefault(self.connection(state.scan, site), site)
        return list(first.items())

    def handle(self, connection: Connection, site: HTCondorSite, name: str | None = None) -> ScheddLike:
        """The schedd handle of a connection, made anew after any failed call (so a token rotated in its Secret is
        used from then on). ``name``: the site's, for messages."""
        if connection not in self._handles:
            if connection.credential is None:
                with self.calling(connection, site, "locating it", name):
                    self._handles[connection] = self.schedd_factory(site)
            else:
                self.renew(connection, name)
        return self._handles[connection]

    def renew(self, connection: Connection, name: str | None) -> None:
        """Hand the credential's worker the token its Secret holds now (a changed token restarts the worker)."""
        credential = connection.credential
        assert credential is not None and self.read_secret is not None
        try:
            token = self.read_secret(credential.namespace, credential.secret, credential.key)
            self._handles[connection] = self._workers.proxy(connection, token)
        except Exception as error:
            where = f"site {name!r}: " if name else ""
            cause = error if isinstance(error, HPScanError) else f"cannot read {credential.describe()}: {error}"
            raise BackendError(f"{where}{cause}") from None

    @contextlib.contextmanager
    def calling(
        self, connection: Connection, site: HTCondorSite, doing: str, name: str | None = None, keep_handle: bool = False
    ) -> Iterator[None]:
        """Around the calls of one step on a connection's schedd: their failure raises call_failed's error, saying
        what the step was ``doing`` (``name``, the site's, leads the message when given), and drops the handle
        unless ``keep_handle`` (a step that is tried again next cycle on the same handle)."""

        def failed(error: Exception) -> HPScanError:
            return call_failed(site, doing, error, connection.credential, name)

        with batch_call(failed, after=None if keep_handle else lambda: self.drop(connection)):
            yield

    def remove(self, connection: Connection, site: HTCondorSite, job_spec: Any, why: str) -> None:
        """Remove jobs (ids or a constraint), with a RemoveReason that says hpscan removed them and why."""
        import htcondor2

        schedd = self.handle(connection, site)
        with self.calling(connection, site, "removing jobs"):
            schedd.act(htcondor2.JobAction.Remove, job_spec, reason=f"{REMOVE_REASON_PREFIX} {why}")

    def drop(self, connection: Connection) -> None:
        """Forget a connection's handle: the next call locates the schedd (or asks the worker) again."""
        self._handles.pop(connection, None)

    def retain(self, in_use: Collection[Connection]) -> None:
        """Forget the handles of connections no tracked scan uses, and stop their worker processes."""
        self._handles = {c: schedd for c, schedd in self._handles.items() if c in in_use}
        self._workers.retain(in_use)

    def close(self) -> None:
        """Stop every credential's worker process (they are daemons: they also end with the operator)."""
        self._workers.close()
        self._handles.clear()
