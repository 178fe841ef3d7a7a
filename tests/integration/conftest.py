"""Fixtures for tests against the local Kubernetes control plane (cluster/README.md).

- ``cluster`` (session): a running control plane. Reused when one is already up (``make cluster``), otherwise
  built (``cluster/build-tools.sh``, cached) and started for the session, and stopped at its end unless
  another pytest session still uses it or ``HPSCAN_KEEP_CLUSTER=1``. Pods run on the test node agent, a
  stand-in for a kubelet (cluster/nodeagent.py).
- ``k8s`` (session): a ``kubernetes.client.ApiClient`` with admin rights.
- ``namespace`` (function): a fresh namespace for one test, deleted afterwards; ``new_namespace`` (function)
  makes more, with labels (e.g. pod-security).
- ``real_node`` (session): a real node beside the agent's (cluster/node/up.sh: containerd + runc + a kubelet
  running the images ``make images`` built). Needs root. Started when it does not run (once the machine's node is
  free: a host lock, ``HPSCAN_REAL_NODE_LOCK``), and stopped (the host restored) by the session that started it
  after its last real-node test, unless another session still uses it; the real-node tests run first (last with
  ``HPSCAN_REAL_NODE_ORDER=last``).
- ``s3`` (session): a real S3 server, versitygw built from the Go module proxy (cluster/s3/build.sh, cached),
  on 127.0.0.1:$HPSCAN_S3_PORT (default 29000) with its objects in a temporary folder; stopped by its pid at the
  end. Pods of the test node agent run on this host, so they reach it too.

Tests that use ``cluster`` are marked ``cluster`` and ``integration`` automatically, those that use
``real_node`` also ``real_node`` (``-m "not real_node"`` deselects them). The ``condor_pool``
fixture (a personal HTCondor pool) lives in tests/support/condor_pool.py, and the ``crd``, ``operator`` and ``ns`` fixtures of modules
that run the operator in tests/support/operator_support.py, both registered here as plugins.
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

# the fixtures of a personal HTCondor pool, of modules that run the operator (crd, operator, ns) and of the Slurm
# test cluster, with their hooks
from support import condor_pool, operator_support, slurm_cluster

REPO = Path(__file__).resolve().parents[2]
sys.path.append(str(REPO))  # the harness (cluster/) is not an installed package

from cluster.s3server import S3Server  # noqa: E402
from cluster.testing import LocalCluster  # noqa: E402

CLUSTER_DIR = Path(os.environ.get("HPSCAN_CLUSTER_DIR", REPO / ".cluster"))
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "node-agent")


def _alive(name: str) -> bool:
    """The component runs (a zombie's or a reused pid's command line does not name the cluster directory)."""
    try:
        pid = int((CLUSTER_DIR / "run" / f"{name}.pid").read_text())
        return str(CLUSTER_DIR).encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return False


def _run_script(script: str, *args: str) -> None:
    """Run a cluster/ script; a failure fails the session with the script's output (never a skip)."""
    env = {**os.environ, "HPSCAN_CLUSTER_USER": "pytest"}
    result = subprocess.run(
        [str(REPO / "cluster" / script), *args], capture_output=True, text=True, check=False, env=env
    )
    if result.returncode != 0:
        pytest.fail(
            f"cluster/{script} failed ({result.returncode}); logs in {CLUSTER_DIR / 'logs'}:\n"
            f"{result.stdout[-3000:]}{result.stderr[-3000:]}",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    CLUSTER_DIR.mkdir(parents=True, exist_ok=True)
    # Every session using the cluster holds a shared lock; only the last one out may stop it.
    users = open(CLUSTER_DIR / ".users", "a")  # noqa: SIM115 (held for the whole session)
    fcntl.flock(users, fcntl.LOCK_SH)
    marker = CLUSTER_DIR / "run" / "started-by-pytest"
    if not all(_alive(name) for name in COMPONENTS):
        _run_script("up.sh")
        marker.write_text(str(os.getpid()))
    else:
        _run_script("up.sh")  # idempotent: waits for /readyz and Ready nodes
    yield LocalCluster(
        kubeconfig=CLUSTER_DIR / "kubeconfig", tools_bin=REPO / ".tools" / "bin", state_dir=CLUSTER_DIR / "pods"
    )
    try:
        fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return  # another session still uses it
    finally:
        users.close()
    if marker.exists() and not os.environ.get("HPSCAN_KEEP_CLUSTER"):
        subprocess.run([str(REPO / "cluster" / "down.sh")], check=False, capture_output=True)


NODE_COMPONENTS = ("containerd", "kubelet", "apiforward", "kube-proxy")


def _node_alive(name: str) -> bool:
    """A component of the real node runs (cluster/node/up.sh's pid files; its command line names node/)."""
    node_dir = CLUSTER_DIR / "node"
    try:
        pid = int((node_dir / "run" / f"{name}.pid").read_text())
        return str(node_dir).encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return False


REAL_NODE_LOCK = Path(os.environ.get("HPSCAN_REAL_NODE_LOCK", "/run/lock/hpscan-real-node.lock"))
"""The machine's one real node (its bridge, the kubelet's port, /var/lib/kubelet): held by the session that starts
one, so that another test group's session (tests/groups.py: its own control plane) waits for it to be stopped."""
_node_releases: list[Callable[[], None]] = []  # the real_node fixture's release, for pytest_runtest_teardown


def _foreign_kubelet(node_dir: Path) -> str | None:
    """The command line of a kubelet on this machine that is not this node's."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if (
            Path(cmdline.split(b"\0")[0].decode(errors="replace")).name == "kubelet"
            and str(node_dir).encode() not in cmdline
        ):
            return cmdline.replace(b"\0", b" ").decode(errors="replace")[:160]
    return None


def _take_the_machines_node(node_dir: Path) -> Any:
    """The host lock, once no other session holds it and no other node's kubelet runs (HPSCAN_REAL_NODE_WAIT
    seconds at most, default 3600: another group's real-node tests)."""
    REAL_NODE_LOCK.parent.mkdir(parents=True, exist_ok=True)
    lock = open(REAL_NODE_LOCK, "a")  # noqa: SIM115 (held until the node is stopped)
    deadline = time.monotonic() + float(os.environ.get("HPSCAN_REAL_NODE_WAIT", "3600"))
    began, said = time.monotonic(), False
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if (foreign := _foreign_kubelet(node_dir)) is None:
                if said:
                    print(f"[real node] {REAL_NODE_LOCK} taken after {time.monotonic() - began:.0f} s", flush=True)
                return lock
            fcntl.flock(lock, fcntl.LOCK_UN)
        except BlockingIOError:
            foreign = f"another session holds {REAL_NODE_LOCK}"
        if time.monotonic() > deadline:
            lock.close()
            pytest.fail(f"the machine's real node is not free: {foreign}", pytrace=False)
        if not said:
            print(f"[real node] waiting: {foreign}", flush=True)
            said = True
        time.sleep(2)


@pytest.fixture(scope="session")
def real_node(cluster: LocalCluster) -> Iterator[str]:
    """The real node's name, once it is Ready with its GPUs advertised and the images in its containerd. Stopped
    after the session's last test that uses it (the collection puts them first, or last with
    HPSCAN_REAL_NODE_ORDER=last), which frees the machine's node for another group's session."""
    node_dir = CLUSTER_DIR / "node"
    node_dir.mkdir(parents=True, exist_ok=True)
    users = open(node_dir / ".users", "a")  # noqa: SIM115 (held for the whole session, like the cluster's)
    fcntl.flock(users, fcntl.LOCK_SH)
    started = not all(_node_alive(name) for name in NODE_COMPONENTS)
    host_lock = _take_the_machines_node(node_dir) if started else None  # joining this tree's running node: no wait
    _run_script("node/up.sh")  # idempotent: what runs is left alone (the first start imports the images)

    def release() -> None:
        _node_releases.remove(release)
        try:
            fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # another session still uses it
        finally:
            users.close()
        if started and not os.environ.get("HPSCAN_KEEP_CLUSTER"):
            subprocess.run([str(REPO / "cluster" / "node" / "down.sh")], check=False, capture_output=True)
        if host_lock is not None:
            host_lock.close()

    _node_releases.append(release)
    yield os.environ.get("HPSCAN_NODE_NAME", "hpscan-real-0")
    if release in _node_releases:
        release()


@pytest.fixture(scope="session")
def k8s(cluster: LocalCluster) -> Iterator[client.ApiClient]:
    with cluster.api_client() as api_client:
        yield api_client


def _wait_for_default_service_account(core: client.CoreV1Api, name: str) -> bool:
    try:
        core.read_namespaced_service_account("default", name)
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


@pytest.fixture
def new_namespace(cluster: LocalCluster, k8s: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A factory: new_namespace(labels=None) -> name of a fresh namespace, deleted after the test."""
    core: Any = client.CoreV1Api(k8s)  # takes manifests as dicts
    created: list[str] = []
    slug = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")

    def make(labels: dict[str, str] | None = None) -> str:
        name = f"{slug}-{secrets.token_hex(3)}"
        metadata = {"name": name, "labels": {"hpscan.io/test": "true", **(labels or {})}}
        core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": metadata})
        created.append(name)
        # Pods are refused until the service-account controller has made the default ServiceAccount.
        cluster.wait(lambda: _wait_for_default_service_account(core, name), 30, f"ServiceAccount {name}/default")
        return name

    yield make
    for name in created:
        try:
            core.delete_namespace(name)
        except ApiException as error:
            if error.status != 404:
                raise


@pytest.fixture
def namespace(new_namespace: Callable[..., str]) -> str:
    """A fresh namespace for this test (deleted afterwards, without waiting for it to finalize)."""
    return new_namespace()


def _uses_cluster(item: pytest.Item) -> bool:
    return "cluster" in getattr(item, "fixturenames", ())


def _uses_real_node(item: pytest.Item) -> bool:
    return "real_node" in getattr(item, "fixturenames", ())


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by these markers
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _uses_cluster(item):
            item.add_marker(pytest.mark.cluster)
            item.add_marker(pytest.mark.integration)
        if _uses_real_node(item):
            item.add_marker(pytest.mark.real_node)
    # The real node's tests together, first (or last: HPSCAN_REAL_NODE_ORDER=last, the grid group, whose one such
    # test then finds the node the kubernetes group freed): stopped after the last, the machine's node is free.
    last = os.environ.get("HPSCAN_REAL_NODE_ORDER", "first") == "last"
    items.sort(key=lambda item: _uses_real_node(item) == last)  # stable: each module's order is kept


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """After the last test on the real node (its module's fixtures torn down), stop it and free the machine's."""
    yield
    if _node_releases and _uses_real_node(item) and (nextitem is None or not _uses_real_node(nextitem)):
        for release in list(_node_releases):
            release()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the tools before the first test when a selected test needs the cluster (or the S3 server): a cold
    build takes minutes, which must not count against any one test's timeout. Cached builds take seconds."""
    if session.config.option.collectonly:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if any(_uses_cluster(item) for item in session.items):
        if reporter is not None:
            reporter.write_line("building the local Kubernetes tools (cluster/build-tools.sh; cached by version)")
        # The kubelet and kube-proxy too when a real-node test is selected (their own cache entry).
        _run_script("build-tools.sh", *(["--node"] if any(_uses_real_node(item) for item in session.items) else []))
    if any("s3" in getattr(item, "fixturenames", ()) for item in session.items):
        if reporter is not None:
            reporter.write_line("building the S3 server (cluster/s3/build.sh; cached by version)")
        _run_script("s3/build.sh")


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server.start(tmp_path_factory.mktemp("s3"))
    yield server
    server.stop()


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(condor_pool, "hpscan-condor-pool")
    config.pluginmanager.register(slurm_cluster, "hpscan-slurm-cluster")
    config.pluginmanager.register(operator_support, "hpscan-operator-support")


@pytest.fixture
def pod_visible_dir() -> Iterator[Path]:
    """A fresh folder under the repository, where pods of the test node agent can write (it binds the repository
    back into each pod; a pod's /tmp is its own emptyDir, as in a real container, so pytest's tmp_path is not
    visible there). Removed afterwards."""
    import shutil

    folder = REPO / ".test-files" / secrets.token_hex(4)
    folder.mkdir(parents=True)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)
