"""The ``slurm_cluster`` fixture: a small Slurm cluster with real daemons from Debian's packages (cluster/slurm/,
docs/slurm.md).

- ``slurm_cluster`` (session): a running cluster (``cluster/slurm/up.sh``: munged, slurmctld, slurmd for node
  gpu1 in partition ``gpu`` with two stand-in GPUs as ``gres/gpu`` and node cpu1 in partition ``cpu``, and
  slurmrestd with JWT auth). A cluster that is already up (``make slurm``) is reused and left running; one this
  session started is stopped at its end (``HPSCAN_KEEP_SLURM=1`` keeps it). It starts in about a second once the
  packages are installed (``make slurm-packages``).

Tests that use ``slurm_cluster`` are marked ``slurm`` and ``integration`` automatically. Registered from
tests/integration/conftest.py.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

REPO = Path(__file__).resolve().parents[2]
SLURM_DIR = Path(os.environ.get("HPSCAN_SLURM_DIR", REPO / ".slurm")).resolve()
SCRIPTS = REPO / "cluster" / "slurm"

T = TypeVar("T")


@dataclass(frozen=True)
class SlurmCluster:
    """The running test cluster, as tests see it."""

    state_dir: Path
    """``.slurm/``: logs in ``log/``, the shared file system of jobs in ``jobs/``."""
    conf: Path
    """slurm.conf (``SLURM_CONF`` of the commands)."""
    rest_url: str
    """slurmrestd's base URL, ``http://127.0.0.1:port``."""
    user: str
    """The unprivileged user whose jobs these are (``hpscan-slurm`` when the cluster runs as root)."""
    token: str
    """A JWT of ``user`` (a day long), as a centre hands one to a service."""

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for Slurm's commands against this cluster, as root (an admin): without SLURM_JWT, which
        would make them the token's user (the AuthAltTypes=auth/jwt commands prefer it)."""
        env = {name: value for name, value in os.environ.items() if name != "SLURM_JWT"}
        return {**env, "SLURM_CONF": str(self.conf), **extra}

    def tool(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a Slurm command (scontrol, squeue, sinfo...) against the cluster and capture its output."""
        return subprocess.run(list(args), env=self.env(), capture_output=True, text=True, check=check)

    def spool(self, name: str) -> Path:
        """A fresh folder on the cluster's shared file system, owned by the job user (a site's ``spool``)."""
        folder = self.state_dir / "jobs" / f"{name}-{secrets.token_hex(3)}"
        folder.mkdir(parents=True)
        if os.geteuid() == 0:
            user = pwd.getpwnam(self.user)
            os.chown(folder, user.pw_uid, user.pw_gid)
        return folder

    def job_bin(self) -> Path:
        """A folder with python, hpscan and dl1 that the cluster's jobs (the job user) can run, with this
        repository's packages (``cluster/slurm/job-python.sh``): a site's ``runner`` and the jobs' PATH."""
        result = subprocess.run([str(SCRIPTS / "job-python.sh")], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            pytest.fail(f"cluster/slurm/job-python.sh failed: {result.stderr[-2000:]}", pytrace=False)
        return Path(result.stdout.strip())

    def site(self, spool: Path, partition: str = "cpu", **extra: object) -> dict[str, object]:
        """An hpscan site ``slurm`` block for this cluster: jobs run the job Python's hpscan, with it on PATH."""
        bin_dir = self.job_bin()
        return {
            "restUrl": self.rest_url,
            "user": self.user,
            "partition": partition,
            "spool": str(spool),
            "runner": str(bin_dir / "hpscan"),
            "path": f"{bin_dir}:/usr/bin:/bin",
            "memory": "512M",
            **extra,
        }

    def log(self, daemon: str) -> str:
        """A daemon's log (``slurmctld``, ``slurmd-gpu1``, ``slurmd-cpu1``, ``slurmrestd.stdout``...)."""
        for name in (f"{daemon}.log", daemon):
            path = self.state_dir / "log" / name
            if path.exists():
                return path.read_text(errors="replace")
        return ""

    def pid(self, daemon: str) -> int:
        return int((self.state_dir / "run" / f"{daemon}.pid").read_text())

    @staticmethod
    def wait(check: Callable[[], T | None], timeout: float = 60.0, what: str = "condition", interval: float = 0.5) -> T:
        """Poll until check() returns something truthy and return it; TimeoutError after timeout seconds."""
        deadline = time.monotonic() + timeout
        while True:
            result = check()
            if result:
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
            time.sleep(interval)


def _controller_alive() -> bool:
    try:
        pid = int((SLURM_DIR / "run" / "slurmctld.pid").read_text())
        return str(SLURM_DIR).encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return False


def run_script(script: str, *args: str) -> str:
    """Run a cluster/slurm/ script; a failure fails the session with its output (never a skip)."""
    result = subprocess.run([str(SCRIPTS / script), *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.fail(
            f"cluster/slurm/{script} failed ({result.returncode}); logs in {SLURM_DIR / 'log'}:\n"
            f"{result.stdout[-3000:]}{result.stderr[-3000:]}",
            pytrace=False,
        )
    return result.stdout


def _settings() -> dict[str, str]:
    values = {}
    for line in (SLURM_DIR / "slurm.env").read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        values[key.strip()] = value.strip()
    return values


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    SLURM_DIR.mkdir(parents=True, exist_ok=True)
    # Every session using the cluster holds a shared lock; only the last one out may stop it.
    users = open(SLURM_DIR / ".users", "a")  # noqa: SIM115 (held for the whole session)
    fcntl.flock(users, fcntl.LOCK_SH)
    marker = SLURM_DIR / "run" / "started-by-pytest"
    started = not _controller_alive()
    run_script("up.sh")  # idempotent: waits for both nodes and slurmrestd
    if started:
        marker.write_text(str(os.getpid()))
    settings = _settings()
    yield SlurmCluster(
        state_dir=SLURM_DIR,
        conf=Path(settings["SLURM_CONF"]),
        rest_url=settings["HPSCAN_SLURM_REST_URL"],
        user=settings["HPSCAN_SLURM_USER"],
        token=settings["SLURM_JWT"],
    )
    try:
        fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return  # another session still uses it
    finally:
        users.close()
    if marker.exists() and not os.environ.get("HPSCAN_KEEP_SLURM"):
        subprocess.run([str(SCRIPTS / "down.sh")], check=False, capture_output=True)


def uses_slurm_cluster(item: pytest.Item) -> bool:
    return "slurm_cluster" in getattr(item, "fixturenames", ())


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by these markers
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if uses_slurm_cluster(item):
            item.add_marker(pytest.mark.slurm)
            item.add_marker(pytest.mark.integration)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slurm: needs the Slurm test cluster (make slurm)")
