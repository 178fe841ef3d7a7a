"""What tests see of the local control plane (the `cluster` fixture in tests/integration/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from kubernetes import client, config

T = TypeVar("T")


@dataclass(frozen=True)
class LocalCluster:
    """The running local control plane, as tests see it."""

    kubeconfig: Path
    tools_bin: Path
    state_dir: Path

    def api_client(self) -> client.ApiClient:
        """A new admin ApiClient (close it, or use it as a context manager)."""
        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def env(self) -> dict[str, str]:
        """Environment for subprocesses (kubectl, helm, the operator): KUBECONFIG and .tools/bin on PATH."""
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{self.tools_bin}:{os.environ.get('PATH', '')}",
        }

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run kubectl against the cluster and capture its output (``input``: its standard input, e.g. for -f -)."""
        return subprocess.run(
            [str(self.tools_bin / "kubectl"), *args],
            env=self.env(), input=input, capture_output=True, text=True, check=check,
        )  # fmt: skip

    def pod_log(self, namespace: str, pod: str, container: str) -> str:
        """A container's output (the node agent writes logs to files; there is no `kubectl logs`)."""
        logs = sorted(self.state_dir.glob(f"{namespace}_{pod}_*/{container}.log"))
        return logs[-1].read_text() if logs else ""

    @staticmethod
    def wait(check: Callable[[], T], timeout: float = 60.0, what: str = "condition", interval: float = 0.5) -> T:
        """Poll until check() returns something truthy and return it; TimeoutError after timeout seconds."""
        deadline = time.monotonic() + timeout
        while True:
            result = check()
            if result:
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
            time.sleep(interval)
