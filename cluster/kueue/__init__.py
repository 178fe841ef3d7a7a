"""Kueue's real controller manager as a process against the local control plane, for the GPU-quota tests.

``Kueue.start(cluster, folder)`` builds it when the cache lacks it (build.sh: sigs.k8s.io/kueue from the Go module
proxy), installs the module's own CRDs (config/components/crd/bases, read from the Go module cache, never copied
here) and its webhooks (config/components/webhook/manifests.yaml, those of batch/v1 Jobs and Kueue's own kinds,
rewritten to ``clientConfig.url: https://127.0.0.1:PORT/...`` with the bundle of a CA made here), writes a
Configuration (integrations: batch/job; manageJobsWithoutQueueName false; health, metrics and webhook servers on
127.0.0.1, free ports; internalCertManagement off; no leader election, no visibility server) and starts
``kueue --config`` with the admin kubeconfig. ``stop()`` deletes the queues it left, ends the process by its pid,
then deletes the webhooks and CRDs it installed: nothing stays behind.

One path cannot be chosen: with internalCertManagement off, Kueue v0.17 reads its metrics server's certificate
from /etc/kueue/metrics/certs (cmd/kueue/main.go, hard-coded). The harness writes the serving certificate there
when the folder is absent (root only) and removes what it created on stop.

    python -m cluster.kueue   # start on the running cluster (.cluster/kubeconfig) until Ctrl-C
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
METRICS_CERTS = Path("/etc/kueue/metrics/certs")
WEBHOOK_KINDS = ("/mutate-batch-v1-job", "/validate-batch-v1-job", "kueue-x-k8s-io")
"""The webhooks installed: those of batch/v1 Jobs and of Kueue's own kinds (the others serve integrations that are
off here; with failurePolicy Fail they would refuse e.g. every pod)."""
KINDS = ("clusterqueues", "localqueues", "resourceflavors", "workloads")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build() -> tuple[Path, Path]:
    """(the kueue binary, the module's source folder): build.sh, a link when cached, a Go build the first time."""
    result = subprocess.run([str(HERE / "build.sh")], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"cluster/kueue/build.sh failed ({result.returncode}):\n{result.stderr[-3000:]}")
    binary, source = result.stdout.strip().splitlines()[-2:]
    return Path(binary), Path(source)


def _certificates(folder: Path) -> bytes:
    """A CA and a serving certificate for 127.0.0.1 signed by it (tls.crt, tls.key in ``folder``); the CA's PEM."""
    folder.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=hpscan-test-kueue-ca",
            "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "tls.key", "-out", "tls.csr")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
            "-extfile", "san.ext", "-out", "tls.crt")  # fmt: skip
    return (folder / "ca.crt").read_bytes()


def webhooks(source: Path, port: int, ca: bytes, prefix: str) -> list[dict[str, Any]]:
    """The module's webhook configurations, reduced to WEBHOOK_KINDS and pointed at 127.0.0.1:``port``."""
    import base64

    bundle = base64.b64encode(ca).decode()
    configurations = []
    for document in yaml.safe_load_all((source / "config/components/webhook/manifests.yaml").read_text()):
        if not document:
            continue
        kept = []
        for hook in document["webhooks"]:
            path = hook["clientConfig"]["service"]["path"]
            if any(kind in path for kind in WEBHOOK_KINDS):
                hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}", "caBundle": bundle}
                kept.append(hook)
        document["metadata"] = {"name": f"{prefix}-{document['kind'].lower()}"}
        document["webhooks"] = kept
        configurations.append(document)
    return configurations


@dataclass
class Kueue:
    """A running Kueue controller manager on the local control plane, as tests see it."""

    cluster: Any
    folder: Path
    source: Path
    health_port: int
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    installed: list[str] = field(default_factory=list)  # kubectl resource/name, deleted on stop
    made_metrics_certs: Path | None = None

    @property
    def log(self) -> Path:
        return self.folder / "kueue.log"

    @classmethod
    def start(cls, cluster: Any, folder: Path, timeout: float = 120.0) -> Kueue:
        binary, source = build()
        folder.mkdir(parents=True, exist_ok=True)
        ports = {name: _free_port() for name in ("health", "metrics", "webhook")}
        kueue = cls(cluster=cluster, folder=folder, source=source, health_port=ports["health"])
        try:
            kueue._install(binary, ports)
            kueue._wait_ready(timeout)
        except BaseException:
            kueue.stop()
            raise
        return kueue

    def _install(self, binary: Path, ports: dict[str, int]) -> None:
        ca = _certificates(self.folder / "certs")
        if not METRICS_CERTS.exists():
            top = next(p for p in [METRICS_CERTS, *METRICS_CERTS.parents] if p.parent.exists())
            METRICS_CERTS.mkdir(parents=True)
            self.made_metrics_certs = top
            for name in ("tls.crt", "tls.key"):
                shutil.copy(self.folder / "certs" / name, METRICS_CERTS / name)
        for crd in sorted((self.source / "config/components/crd/bases").glob("*.yaml")):
            # server-side: the Workload CRD is too large for kubectl's last-applied annotation
            self.cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
            self.installed.append(f"crd/{yaml.safe_load(crd.read_text())['metadata']['name']}")
        self.cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", *self.installed)
        for hooks in webhooks(self.source, ports["webhook"], ca, "hpscan-test-kueue"):
            self.cluster.kubectl("apply", "-f", "-", input=json.dumps(hooks))
            self.installed.append(f"{hooks['kind'].lower()}/{hooks['metadata']['name']}")
        configuration = {
            "apiVersion": "config.kueue.x-k8s.io/v1beta2",
            "kind": "Configuration",
            "namespace": "kueue-system",
            "health": {"healthProbeBindAddress": f"127.0.0.1:{ports['health']}"},
            "metrics": {"bindAddress": f"127.0.0.1:{ports['metrics']}"},
            "webhook": {"port": ports["webhook"], "host": "127.0.0.1", "certDir": str(self.folder / "certs")},
            "leaderElection": {"leaderElect": False},
            "internalCertManagement": {"enable": False},
            "manageJobsWithoutQueueName": False,
            "integrations": {"frameworks": ["batch/job"]},
            "featureGates": {"VisibilityOnDemand": False},  # an aggregated API server: not needed here
        }
        (self.folder / "config.yaml").write_text(yaml.safe_dump(configuration))
        env = {**self.cluster.env(), "KUBECONFIG": str(self.cluster.kubeconfig)}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(binary), f"--config={self.folder / 'config.yaml'}", "--zap-log-level=2"],
                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.health_port}/readyz"
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"kueue exited with {self.process.returncode}: {self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (OSError, ssl.SSLError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"kueue not ready at {url} in {timeout:g}s: {self.log.read_text()[-3000:]}")
            time.sleep(0.5)

    def stop(self) -> None:
        """Delete the Kueue objects left (while the controller still removes their finalizers), end the process by
        its pid, delete the webhooks and CRDs it installed, and the metrics certificates it wrote."""
        if self.process is not None and self.process.poll() is None:
            for kind in KINDS:
                self.cluster.kubectl("delete", f"{kind}.kueue.x-k8s.io", "--all", "--all-namespaces",
                                     "--wait=false", "--ignore-not-found", check=False)  # fmt: skip
            self._unstick(wait=30)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._unstick(wait=0)
        for name in reversed(self.installed):
            self.cluster.kubectl("delete", name, "--ignore-not-found", "--timeout=60s", check=False)
        self.installed.clear()
        if self.made_metrics_certs is not None:
            shutil.rmtree(self.made_metrics_certs, ignore_errors=True)
            self.made_metrics_certs = None

    def _unstick(self, wait: float) -> None:
        """Wait up to ``wait`` s for Kueue's objects to go; then drop the finalizers of those still there."""
        deadline = time.monotonic() + wait
        while True:
            left = []
            for kind in KINDS:
                got = self.cluster.kubectl("get", f"{kind}.kueue.x-k8s.io", "-A", "-o", "json", check=False)
                if got.returncode == 0:
                    left += json.loads(got.stdout).get("items") or []
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        for item in left:
            meta = item["metadata"]
            where = ["-n", meta["namespace"]] if meta.get("namespace") else []
            resource = f"{item['kind'].lower()}s.kueue.x-k8s.io/{meta['name']}"
            self.cluster.kubectl("patch", resource, *where, "--type=merge", "-p", '{"metadata":{"finalizers":null}}',
                                 check=False)  # fmt: skip


if __name__ == "__main__":  # pragma: no cover (a developer's convenience)
    import tempfile

    sys.path.insert(0, str(HERE.parents[1]))
    from cluster.testing import LocalCluster

    repo = HERE.parents[1]
    state = Path(os.environ.get("HPSCAN_CLUSTER_DIR", repo / ".cluster"))
    local = LocalCluster(kubeconfig=state / "kubeconfig", tools_bin=repo / ".tools" / "bin", state_dir=state / "pods")
    running = Kueue.start(local, Path(tempfile.mkdtemp(prefix="kueue-")))
    print(f"kueue ready (log {running.log}); Ctrl-C stops it")
    try:
        signal.pause()
    finally:
        running.stop()
