"""A fault-injecting HTTPS proxy on loopback, between Kubernetes clients (the operator, shard pods) and the API server.

It terminates TLS with its own serving certificate for 127.0.0.1, signed by the local cluster's CA (the CA that the
admin kubeconfig and every pod's ``kube-root-ca.crt`` already trust), reads each HTTP/1.1 request and forwards it to
the real API server over TLS: with the admin client certificate when the request carries no ``Authorization``
header (the admin kubeconfig's user), without one when it carries a bearer token (a pod's service account keeps its
own identity, and its RBAC). On the way it injects, from one seeded random source and up to bounded counts:

- ``500``/``503`` answers (a Kubernetes ``Status`` body), without forwarding the request; and a 503 for the first
  request of each request line a pattern matches (``fail_first``: every pod's first read of its page, say);
- timeouts: a request held for ``hold_seconds`` and then cut with no answer, either before it is forwarded (it never
  took effect) or after (it did: the client cannot tell);
- dropped watches: a watch stream cut a random moment after it started, mid-way through its events;
- lag: each chunk of a watch stream of the given resources (``lag={"configmaps": 5.0}``) delivered that many seconds
  late, in order, while other watches pass at once (one informer cache behind another);
- slow requests: each request that is not a watch and whose request line matches ``slow`` is held ``slow_seconds``
  before it is forwarded, then answered (a list an API server under load answers late).

Test code only (tests/integration/kubernetes/test_operator_faults.py); ``FaultProxy.start()`` runs it in a thread of its own.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import ssl
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ERRORS, TIMEOUT_BEFORE, TIMEOUT_AFTER, WATCH_CUT = (
    "error",
    "timeout-before-forwarding",
    "timeout-after-forwarding",
    "watch-cut",
)


@dataclass
class FaultPlan:
    """What the proxy injects: a chance per request (or per watch) and the most of each kind."""

    seed: int = 0
    error_rate: float = 0.0
    """Chance that a request is answered 500 or 503 (never forwarded)."""
    timeout_rate: float = 0.0
    """Chance that a request that is not a watch is held and cut; half of them after it was forwarded."""
    watch_cut_rate: float = 0.0
    """Chance that a watch stream is cut, 0.5 to ``watch_cut_after`` seconds after it started."""
    max_errors: int = 0
    max_timeouts: int = 0
    max_watch_cuts: int = 0
    hold_seconds: float = 3.0
    watch_cut_after: float = 6.0
    lag: dict[str, float] = field(default_factory=dict)
    """Watch streams of these resources (the URL's plural: "configmaps") are delivered this many seconds late."""
    start_after: float = 0.0
    """No random fault in the first seconds (the clients' start-up is not what a test looks at)."""
    fail_first: str = ""
    """A regular expression: the first request of each request line ("GET /api/v1/...") it matches is answered 503
    (beyond ``max_errors``), whenever it comes."""
    slow: str = ""
    """A regular expression: every request that is not a watch and whose request line it matches is forwarded only
    after ``slow_seconds`` (and then answered as usual)."""
    slow_seconds: float = 0.0


def serving_certificate(ca_cert: Path, ca_key: Path, folder: Path) -> tuple[Path, Path]:
    """A serving certificate and key for 127.0.0.1 (and localhost), signed by the given CA, written to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    key, csr, cert, ext = (folder / n for n in ("proxy.key", "proxy.csr", "proxy.crt", "proxy.ext"))
    ext.write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
    )
    openssl = ["openssl"]
    subprocess.run([*openssl, "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=hpscan-fault-proxy",
                    "-keyout", str(key), "-out", str(csr)], check=True, capture_output=True)  # fmt: skip
    subprocess.run([*openssl, "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
                    "-CAcreateserial", "-CAserial", str(folder / "ca.srl"), "-days", "2",
                    "-extfile", str(ext), "-out", str(cert)], check=True, capture_output=True)  # fmt: skip
    return cert, key


class _Closed(Exception):
    """The peer closed the connection."""


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as error:
        if error.partial:
            raise _Closed from None
        return None


def _headers(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    fields = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            fields[name.strip().lower()] = value.strip()
    return lines[0], fields


async def _read_chunk(reader: asyncio.StreamReader) -> bytes:
    """One chunk of a chunked body as it was on the wire (size line, data, CRLF); b"0\\r\\n\\r\\n" ends the body."""
    size_line = await reader.readuntil(b"\r\n")
    size = int(size_line.split(b";")[0].strip(), 16)
    if size == 0:
        trailer = b""
        while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
            trailer += line
        return size_line + trailer + b"\r\n"
    return size_line + await reader.readexactly(size + 2)


async def _read_body(reader: asyncio.StreamReader, fields: dict[str, str], until_close: bool) -> bytes:
    if "chunked" in fields.get("transfer-encoding", "").lower():
        body = b""
        while True:
            chunk = await _read_chunk(reader)
            body += chunk
            if chunk.startswith(b"0\r\n") or chunk.startswith(b"0;"):
                return body
    if "content-length" in fields:
        return await reader.readexactly(int(fields["content-length"]))
    return await reader.read() if until_close else b""


def _status_answer(code: int) -> bytes:
    reason = {500: "Internal Server Error", 503: "Service Unavailable"}[code]
    body = json.dumps({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "code": code,
        "reason": "InternalError" if code == 500 else "ServiceUnavailable",
        "message": f"injected by the fault proxy ({code})",
    }).encode()  # fmt: skip
    return (
        f"HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


class FaultProxy:
    """The proxy, served from a thread: ``start()``, then point clients at ``url``; ``stop()`` at the end.
    ``injected`` counts what it did (ERRORS, TIMEOUT_BEFORE, TIMEOUT_AFTER, WATCH_CUT, and "lagged" chunks)."""

    def __init__(
        self,
        upstream_port: int,
        pki: Path,
        workdir: Path,
        plan: FaultPlan | None = None,
        port: int = 0,
    ) -> None:
        self.upstream_port, self.pki, self.workdir = upstream_port, pki.resolve(), workdir
        self.plan = plan or FaultPlan()
        self.port = port
        self.injected: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()  # "watch" or "request"
        self.log: list[str] = []
        self._random = random.Random(self.plan.seed)
        self._seen: set[str] = set()  # request lines fail_first matched
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._ready = threading.Event()
        self._started_at = 0.0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    # --- TLS contexts -------------------------------------------------------------------------------------------
    def _contexts(self) -> tuple[ssl.SSLContext, ssl.SSLContext, ssl.SSLContext]:
        cert, key = serving_certificate(self.pki / "ca.crt", self.pki / "ca.key", self.workdir)
        serving = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        serving.load_cert_chain(cert, key)
        serving.set_alpn_protocols(["http/1.1"])
        anonymous = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        anonymous.set_alpn_protocols(["http/1.1"])
        admin = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        admin.load_cert_chain(self.pki / "admin.crt", self.pki / "admin.key")
        admin.set_alpn_protocols(["http/1.1"])
        return serving, anonymous, admin

    def kubeconfig(self, path: Path) -> Path:
        """An admin kubeconfig whose server is this proxy. The proxy asks for no client certificate (so the one named
        here, kept for clients that want some credential, is never sent): its requests without a token go upstream
        with the admin certificate."""
        cluster = {"server": self.url, "certificate-authority": str(self.pki / "ca.crt")}
        user = {"client-certificate": str(self.pki / "admin.crt"), "client-key": str(self.pki / "admin.key")}
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "proxied",
            "clusters": [{"name": "proxied", "cluster": cluster}],
            "users": [{"name": "admin", "user": user}],
            "contexts": [{"name": "proxied", "context": {"cluster": "proxied", "user": "admin"}}],
        }
        path.write_text(json.dumps(config))
        return path

    # --- lifecycle ----------------------------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        serving, anonymous, admin = self._contexts()
        self._upstream_tls = {False: anonymous, True: admin}
        self._thread = threading.Thread(target=self._serve, args=(serving,), name="fault-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the fault proxy did not start")
        return self

    def _serve(self, serving: ssl.SSLContext) -> None:
        loop = self._loop = asyncio.new_event_loop()
        self._server = loop.run_until_complete(
            asyncio.start_server(self._connection, "127.0.0.1", self.port, ssl=serving, limit=2**24)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._started_at = time.monotonic()
        self._ready.set()
        loop.run_forever()
        loop.close()

    def stop(self) -> None:
        if self._loop is None or self._server is None:
            return
        loop, server = self._loop, self._server

        async def close() -> None:
            server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    # --- faults -------------------------------------------------------------------------------------------------
    def _choose(self, watch: bool) -> str | None:
        plan = self.plan
        # While the clients start (start_after) no request fails; a watch opened then may still be cut once it has
        # run a while: a client opens its watches as it starts and keeps them for many minutes, so they are the
        # streams worth cutting (whether one opened just before start_after or just after was the machine's timing).
        starting = time.monotonic() - self._started_at < plan.start_after
        draw = self._random.random()  # one draw per request
        if not starting and draw < plan.error_rate and self.injected[ERRORS] < plan.max_errors:
            return ERRORS
        draw -= plan.error_rate
        timeouts = self.injected[TIMEOUT_BEFORE] + self.injected[TIMEOUT_AFTER]
        if not starting and not watch and draw < plan.timeout_rate and timeouts < plan.max_timeouts:
            return TIMEOUT_AFTER if self._random.random() < 0.5 else TIMEOUT_BEFORE
        draw -= plan.timeout_rate
        if watch and draw < plan.watch_cut_rate and self.injected[WATCH_CUT] < plan.max_watch_cuts:
            return WATCH_CUT
        return None

    def _note(self, kind: str, request_line: str) -> None:
        self.injected[kind] += 1
        self.log.append(f"{time.monotonic() - self._started_at:7.2f}s {kind}: {request_line}")

    # --- one client connection ----------------------------------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter, bool] | None = None
        try:
            while True:
                head = await _read_head(reader)
                if head is None:
                    return
                request_line, fields = _headers(head)
                body = await _read_body(reader, fields, until_close=False)
                method, target = request_line.split(" ")[:2]
                watch = bool(re.search(r"[?&]watch=(true|1)\b", target))
                self.requests["watch" if watch else "request"] += 1
                fault = self._choose(watch)
                first = self.plan.fail_first and re.search(self.plan.fail_first, request_line)
                if first and request_line not in self._seen:
                    self._seen.add(request_line)
                    fault = ERRORS
                if fault == ERRORS:
                    code = 503 if first else self._random.choice((500, 503))
                    self._note(ERRORS, f"{code} {request_line}")
                    self.injected[str(code)] += 1
                    writer.write(_status_answer(code))
                    await writer.drain()
                    continue
                if fault == TIMEOUT_BEFORE:
                    self._note(TIMEOUT_BEFORE, request_line)
                    await asyncio.sleep(self.plan.hold_seconds)
                    return
                if not watch and self.plan.slow and re.search(self.plan.slow, request_line):
                    self._note("slow", request_line)
                    await asyncio.sleep(self.plan.slow_seconds)
                authorized = "authorization" not in fields
                answer = None
                for _ in range(2):  # a kept-alive upstream connection the API server closed meanwhile: a new one
                    if upstream is None or upstream[2] != authorized or upstream[0].at_eof():
                        if upstream is not None:
                            upstream[1].close()
                        up_reader, up_writer = await asyncio.open_connection(
                            "127.0.0.1", self.upstream_port, ssl=self._upstream_tls[authorized], limit=2**24
                        )
                        upstream = (up_reader, up_writer, authorized)
                    up_reader, up_writer, _ = upstream
                    try:
                        up_writer.write(head + body)
                        await up_writer.drain()
                        answer = await _read_head(up_reader)
                    except (_Closed, ConnectionError):
                        answer = None
                    if answer is not None:
                        break
                    upstream[1].close()
                    upstream = None
                if answer is None or upstream is None:
                    return  # the API server closed: so does the client's connection
                up_reader = upstream[0]
                status_line, answer_fields = _headers(answer)
                code = int(status_line.split(" ")[1])
                no_body = method == "HEAD" or code in (204, 304) or code < 200
                streamed = watch and code == 200 and "chunked" in answer_fields.get("transfer-encoding", "").lower()
                if fault == TIMEOUT_AFTER:
                    if not no_body and not streamed:
                        await _read_body(up_reader, answer_fields, until_close=True)
                    self._note(TIMEOUT_AFTER, request_line)
                    await asyncio.sleep(self.plan.hold_seconds)
                    return
                if streamed:
                    writer.write(answer)
                    await self._stream(up_reader, writer, target, request_line, cut=fault == WATCH_CUT)
                    return  # a watch's connection is not reused (the stream ended or was cut)
                payload = b"" if no_body else await _read_body(up_reader, answer_fields, until_close=True)
                writer.write(answer + payload)
                await writer.drain()
                if "close" in answer_fields.get("connection", "").lower() or "close" in fields.get("connection", ""):
                    return
        except (_Closed, ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError, asyncio.CancelledError):
            return
        finally:
            if upstream is not None:
                upstream[1].close()
            writer.close()

    async def _stream(
        self, up_reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: str, line: str, cut: bool
    ) -> None:
        """Relay a watch's chunks, each ``lag`` seconds late for a lagged resource, until the stream ends or is cut."""
        resource = re.split(r"[/?]", target.split("?")[0].rstrip("/"))[-1]
        lag = self.plan.lag.get(resource, 0.0)
        cut_at = time.monotonic() + 0.5 + self._random.random() * max(0.0, self.plan.watch_cut_after - 0.5)
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, chunk = await queue.get()
                if (wait := due - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                writer.write(chunk)
                await writer.drain()
                if chunk.startswith(b"0\r\n"):
                    return

        delivering = asyncio.create_task(deliver())
        try:
            while True:
                timeout = cut_at - time.monotonic() if cut else None
                if timeout is not None and timeout <= 0:
                    self._note(WATCH_CUT, line)
                    return
                reading = asyncio.ensure_future(_read_chunk(up_reader))
                done, _ = await asyncio.wait(
                    {reading, delivering}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if delivering in done:  # the client went away
                    reading.cancel()
                    return
                if reading not in done:
                    reading.cancel()
                    continue  # the cut is due: the loop notes it
                chunk = reading.result()
                if lag:
                    self.injected["lagged"] += 1
                await queue.put((time.monotonic() + lag, chunk))
                if chunk.startswith(b"0\r\n"):
                    await delivering
                    return
        finally:
            delivering.cancel()


def describe(proxy: FaultProxy) -> dict[str, Any]:
    """What the proxy saw and did, for a test's output."""
    return {"requests": dict(proxy.requests), "injected": dict(proxy.injected)}
