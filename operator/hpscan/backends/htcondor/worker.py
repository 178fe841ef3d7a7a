"""One worker process per HTCondor credential, and the proxy that makes it look like a schedd (the shell of
``credentials``; see there why a credential needs a process of its own).

A worker owns a private token folder (mode 0700, that one token) and sets ``_CONDOR_SEC_TOKEN_DIRECTORY`` before the
bindings load, so every session it opens authenticates with that token and nothing else. The proxy satisfies
``ScheddLike`` and forwards each call over a multiprocessing pipe (spawn context: no state of the operator's own
bindings is inherited); a worker that died is started again on the next call.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
from collections.abc import Collection
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

from hpscan.backends.htcondor.auth import install_token
from hpscan.backends.htcondor.credentials import Connection
from hpscan.errors import BackendError

CALL_TIMEOUT_SECONDS = 300.0
"""How long a call may take in the worker (the bindings' own timeouts are shorter; spooling a sandbox is slow)."""
TOKEN_FILE = "token"


class WorkerCallError(RuntimeError):
    """A schedd call failed in the worker (the message is the bindings' own) or the worker itself ended."""


@dataclass(frozen=True)
class Submitted:
    """What ``submit`` returns across the process boundary: the worker keeps the real SubmitResult for ``spool``."""

    handle: int
    cluster_id: int
    procs: int

    def cluster(self) -> int:
        return self.cluster_id

    def num_procs(self) -> int:
        return self.procs


def serve(pipe: Pipe, token_dir: str, pool: str | None, schedd: str | None) -> None:
    """The worker's main: answer ``(method, args, kwargs)`` requests with ``("ok", value)`` or ``("error", words)``
    until the pipe closes or ``None`` arrives."""
    os.environ["_CONDOR_SEC_TOKEN_DIRECTORY"] = token_dir
    os.environ["_CONDOR_SEC_TOKEN_SYSTEM_DIRECTORY"] = token_dir  # root's system tokens are not this credential
    os.environ["_CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS"] = "IDTOKENS"  # no fallback to ambient credentials
    import htcondor2

    htcondor2.reload_config()  # in case the bindings were loaded before the variables were set

    from hpscan.api.sites import HTCondorSite
    from hpscan.backends.htcondor.schedd import locate_schedd

    site = HTCondorSite(pool=pool, schedd=schedd)
    target: Any = None
    submitted: dict[int, Any] = {}
    while True:
        try:
            request = pipe.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        method, args, kwargs = request
        try:
            if target is None:
                target = locate_schedd(site)
            if method == "submit":
                description, *rest = args
                if "itemdata" in kwargs and kwargs["itemdata"] is not None:
                    kwargs["itemdata"] = iter(kwargs["itemdata"])
                result = target.submit(htcondor2.Submit(description), *rest, **kwargs)
                handle = len(submitted) + 1
                submitted[handle] = result
                value: Any = Submitted(handle, result.cluster(), result.num_procs())
            elif method == "spool":
                value = target.spool(submitted.pop(args[0].handle))
            elif method == "query":
                value = list(target.query(*args, **kwargs))  # ClassAds pickle
            else:
                getattr(target, method)(*args, **kwargs)
                value = None  # act/edit/retrieve: the backend reads nothing back (their results need not pickle)
        except Exception as error:
            target = None  # located again next call: the schedd may have moved or restarted
            pipe.send(("error", str(error).strip() or type(error).__name__))
            continue
        try:
            pipe.send(("ok", value))
        except Exception as error:  # an answer that cannot cross the pipe
            pipe.send(("error", f"the answer to {method} cannot be sent back: {error}"))


class ScheddProxy:
    """A ``ScheddLike`` whose calls run in the worker process of one connection (started on the first call, and
    again after it died). Not thread-safe: the backend serialises its calls."""

    def __init__(self, connection: Connection, token_dir: Path, timeout_s: float = CALL_TIMEOUT_SECONDS) -> None:
        self.connection = connection
        self.token_dir = token_dir
        self.timeout_s = timeout_s
        self._process: Any = None
        self._pipe: Pipe | None = None

    def _start(self) -> Pipe:
        self.stop()
        context = multiprocessing.get_context("spawn")
        mine, theirs = context.Pipe()
        pool, schedd = self.connection.pool, self.connection.schedd
        process = context.Process(
            target=serve, args=(theirs, str(self.token_dir), pool, schedd), daemon=True, name="hpscan-condor-worker"
        )
        try:
            process.start()
        finally:
            theirs.close()
        self._process, self._pipe = process, mine
        return mine

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        alive = self._process is not None and self._process.is_alive() and self._pipe is not None
        pipe = self._pipe if alive and self._pipe is not None else self._start()
        try:
            pipe.send((method, args, kwargs))
            if not pipe.poll(self.timeout_s):
                self.stop()
                raise WorkerCallError(f"no answer within {self.timeout_s:g} s (the worker process was stopped)")
            outcome, value = pipe.recv()
        except (EOFError, OSError):
            code = self._process.exitcode if self._process is not None else None
            self.stop()
            raise WorkerCallError(f"the worker process of this credential ended (exit code {code})") from None
        if outcome == "error":
            raise WorkerCallError(value)
        return value

    def stop(self) -> None:
        """End the worker (it is started again by the next call)."""
        pipe, process, self._pipe, self._process = self._pipe, self._process, None, None
        if pipe is not None:
            with contextlib.suppress(OSError, ValueError):
                pipe.send(None)
            pipe.close()
        if process is not None:
            process.join(2)
            if process.is_alive():
                process.kill()
                process.join(2)

    # ScheddLike ---------------------------------------------------------------------------------------------

    def query(self, constraint: Any = "true", projection: list[str] | None = None, *args: Any, **kwargs: Any) -> Any:
        return self._call("query", constraint, projection or [], *args, **kwargs)

    def submit(self, description: Any, count: int = 0, spool: bool = False, itemdata: Any = None) -> Any:
        commands = dict(description.items()) if hasattr(description, "items") else description
        rows = list(itemdata) if itemdata is not None else None
        return self._call("submit", commands, count=count, spool=spool, itemdata=rows)

    def act(self, action: Any, job_spec: Any, reason: str | None = None) -> Any:
        self._call("act", action, job_spec, reason=reason)

    def spool(self, result: Any) -> None:
        self._call("spool", result)

    def retrieve(self, job_spec: Any) -> None:
        self._call("retrieve", job_spec)

    def edit(self, job_spec: Any, attr: str, value: Any, *args: Any, **kwargs: Any) -> Any:
        self._call("edit", job_spec, attr, value, *args, **kwargs)


class CredentialWorkers:
    """The proxies of the connections that hold a credential, each with its token in ``folder/<slug>/token``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._held: dict[Connection, tuple[str, ScheddProxy]] = {}

    def proxy(self, connection: Connection, token: str) -> ScheddProxy:
        """The proxy of ``connection`` holding ``token``: the running one when the token is the same, else a new one
        (the old worker stopped: its cached sessions authenticated with the old token)."""
        assert connection.credential is not None
        token = token.strip()
        held = self._held.get(connection)
        if held is not None and held[0] == token:
            return held[1]
        if held is not None:
            held[1].stop()
        directory = self.folder / connection.slug
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        for other in directory.iterdir():  # only this token: HTCondor would try every file here
            other.unlink()
        try:
            install_token(token, directory, TOKEN_FILE)
        except BackendError as error:
            raise BackendError(f"{connection.credential.describe()}: {error}") from None
        proxy = ScheddProxy(connection, directory)
        self._held[connection] = (token, proxy)
        return proxy

    def retain(self, in_use: Collection[Connection]) -> list[Connection]:
        """Stop the workers of connections not in ``in_use`` and delete their tokens; returns those stopped."""
        gone = [connection for connection in self._held if connection not in in_use]
        for connection in gone:
            self._held.pop(connection)[1].stop()
            shutil.rmtree(self.folder / connection.slug, ignore_errors=True)
        return gone

    def close(self) -> None:
        self.retain(())
