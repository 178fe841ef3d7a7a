"""A real S3 server for tests: versitygw (built by cluster/s3/build.sh from the Go module proxy) with its POSIX
backend, objects as files under a folder of the test's, listening on 127.0.0.1 only (no admin port, no web UI).

``S3Server.start(root)`` builds it when the cache lacks it (seconds when cached), starts it with a fresh root key
pair, waits until it answers, and ``stop()`` ends it by its pid. The port is ``HPSCAN_S3_PORT`` (default 29000;
``0`` picks a free one), so several sessions on one machine can keep apart.

    python -m cluster.s3server DIR   # serve DIR until Ctrl-C, printing the endpoint and the keys
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PORT = 29000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build() -> Path:
    """The versitygw binary (cluster/s3/build.sh: a link when cached, a Go build the first time)."""
    result = subprocess.run([str(REPO / "cluster" / "s3" / "build.sh")], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"cluster/s3/build.sh failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


@dataclass
class S3Server:
    """A running versitygw on 127.0.0.1, as tests see it."""

    root: Path
    port: int
    access_key: str
    secret_key: str
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    log: Path | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, root: Path, port: int | None = None, timeout: float = 30.0) -> S3Server:
        binary = build()
        if port is None:
            port = int(os.environ.get("HPSCAN_S3_PORT", DEFAULT_PORT)) or _free_port()
        data = root / "data"
        data.mkdir(parents=True, exist_ok=True)
        server = cls(root=root, port=port, access_key=f"hpscan{secrets.token_hex(6)}", secret_key=secrets.token_hex(20))
        server.log = root / "versitygw.log"
        # The root key pair through the environment, not the command line (which every local user can read).
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "ROOT_ACCESS_KEY_ID": server.access_key,
            "ROOT_SECRET_ACCESS_KEY": server.secret_key,
        }
        with server.log.open("ab") as log:
            server.process = subprocess.Popen(
                [str(binary), "--port", f"127.0.0.1:{port}", "--quiet", "posix", str(data)],
                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            if server.process.poll() is not None:
                raise RuntimeError(
                    f"versitygw exited with {server.process.returncode} on port {port}: {server.log.read_text()[-2000:]}"
                )
            try:
                server.client().list_buckets()
                return server
            except Exception as error:  # not listening yet
                if time.monotonic() > deadline:
                    server.stop()
                    raise RuntimeError(
                        f"versitygw did not answer on {server.endpoint} in {timeout:g}s: {error}"
                    ) from None
                time.sleep(0.1)

    def client(self, access_key: str | None = None, secret_key: str | None = None) -> Any:
        """A boto3 S3 client of this server (the root keys unless others are given)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=2),
        )

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every key under ``prefix`` in ``bucket``, sorted."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def stop(self) -> None:
        """End the server by its pid (SIGTERM, then SIGKILL after 10 s)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else REPO / ".s3").resolve()
    server = S3Server.start(root)
    print(f"versitygw on {server.endpoint}, objects in {root / 'data'}")
    print(f"AWS_ACCESS_KEY_ID={server.access_key} AWS_SECRET_ACCESS_KEY={server.secret_key}")
    try:
        assert server.process is not None
        server.process.wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
