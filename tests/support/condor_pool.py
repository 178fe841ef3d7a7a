"""The ``condor_pool`` fixture: a personal HTCondor pool with real daemons (cluster/condor/, docs/htcondor.md).

- ``condor_pool`` (session): a running pool (``cluster/condor/up.sh``; the daemons are built once per version
  by ``cluster/condor/build.sh`` into ``~/.cache/hpscan-condor``). A pool that is already up (``make condor``) is
  reused and left running; one this session started is stopped at its end (``HPSCAN_KEEP_CONDOR=1`` keeps it).
  While the session runs, ``CONDOR_CONFIG`` points at the pool, so the ``htcondor2`` bindings in this process
  talk to it as the submitting user (with the IDTOKEN the pool issued for that user).

Tests that use ``condor_pool`` are marked ``condor`` and ``integration`` automatically. Registered from
tests/integration/conftest.py.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import re
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import htcondor2
import pytest

REPO = Path(__file__).resolve().parents[2]
CONDOR_DIR = Path(os.environ.get("HPSCAN_CONDOR_DIR", REPO / ".condor")).resolve()
SCRIPTS = REPO / "cluster" / "condor"
TOKEN_DOMAIN = "hpscan.test"  # UID_DOMAIN and TRUST_DOMAIN of the pool (cluster/condor/up.sh)

T = TypeVar("T")


@dataclass(frozen=True)
class CondorPool:
    """The running personal pool, as tests see it."""

    state_dir: Path
    """``.condor/``: logs in ``log/``, the job queue in ``spool/``, job scratch directories in ``execute/``."""
    config: Path
    """The clients' ``CONDOR_CONFIG`` (the daemons read ``daemons.config`` beside it)."""
    release: Path
    """The HTCondor installation the pool runs: ``bin/``, ``sbin/``, ``libexec/``."""
    collector: str
    """``host:port`` of the collector (the pool's address, as a site's ``pool`` field names it)."""
    schedd_address: str
    """The schedd's sinful string, ``<127.0.0.1:port?...>``."""
    submit_user: str
    """The unprivileged local user whose jobs these are (``hpscan-submit`` when the pool runs as root)."""
    gpu_capability: float = 8.0
    """Compute capability of the simulated GPUs (two A100s in the partitionable GPU slot)."""

    def token(self, identity: str | None = None, authz: Sequence[str] = (), lifetime_s: int | None = None) -> str:
        """A fresh IDTOKEN signed with the pool key, for ``identity`` (default: the submitting user)."""
        command = [str(self.release / "bin" / "condor_token_create"), "-identity", identity or self.identity]
        for level in authz:
            command += ["-authz", level]
        if lifetime_s is not None:
            command += ["-lifetime", str(lifetime_s)]
        result = subprocess.run(command, env=self.env(), capture_output=True, text=True, check=True)
        return result.stdout.strip()

    @property
    def identity(self) -> str:
        """The submitting user's authenticated identity, ``user@hpscan.test``."""
        return f"{self.submit_user}@{TOKEN_DOMAIN}"

    def token_dir(self, token: str, where: Path) -> Path:
        """Write ``token`` as the only token of a new directory under ``where`` (for SEC_TOKEN_DIRECTORY)."""
        directory = where / f"tokens-{secrets.token_hex(3)}"
        directory.mkdir(mode=0o700, parents=True)
        path = directory / "token"
        path.write_text(token + "\n")
        path.chmod(0o600)
        return directory

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for subprocesses (condor_* tools, Python with htcondor2): CONDOR_CONFIG and the tools."""
        path = f"{self.release / 'bin'}:{self.release / 'sbin'}:{os.environ.get('PATH', '')}"
        return {**os.environ, "CONDOR_CONFIG": str(self.config), "PATH": path, **extra}

    def tool(self, *args: str, check: bool = True, **extra_env: str) -> subprocess.CompletedProcess[str]:
        """Run a condor_* tool (``bin/`` or ``sbin/``) against the pool and capture its output."""
        name = args[0]
        path = self.release / "bin" / name
        if not path.exists():
            path = self.release / "sbin" / name
        return subprocess.run(
            [str(path), *args[1:]], env=self.env(**extra_env), capture_output=True, text=True, check=check
        )

    def schedd(self) -> htcondor2.Schedd:
        """The pool's schedd, through the bindings (authenticated as the submitting user)."""
        return htcondor2.Schedd(htcondor2.Collector(self.collector).locate(htcondor2.DaemonType.Schedd))

    def job_dir(self, name: str) -> Path:
        """A fresh directory for one job's submit files and output, owned by the submitting user (the shadow
        reads input and writes output as that user, so a root-only pytest tmp_path does not do)."""
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name)[:60]
        directory = self.state_dir / "jobs" / f"{slug}-{secrets.token_hex(3)}"
        directory.mkdir(parents=True)
        user = pwd.getpwnam(self.submit_user)
        if os.geteuid() == 0:
            os.chown(directory, user.pw_uid, user.pw_gid)
        return directory

    def job_bin(self) -> Path:
        """A folder with python, hpscan and dl1 that the pool's jobs (the submitting user) can run, with this
        repository's packages (``cluster/condor/job-python.sh``): put it first on the jobs' PATH."""
        result = subprocess.run([str(SCRIPTS / "job-python.sh")], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            pytest.fail(f"cluster/condor/job-python.sh failed: {result.stderr[-2000:]}", pytrace=False)
        return Path(result.stdout.strip())

    def site(self) -> dict[str, str]:
        """An hpscan site ``htcondor`` block that names this pool's schedd."""
        return {"pool": self.collector, "schedd": self.schedd_name()}

    def schedd_name(self) -> str:
        ad = htcondor2.Collector(self.collector).locate(htcondor2.DaemonType.Schedd)
        return str(ad["Name"])

    def log(self, daemon: str) -> str:
        """A daemon's log (``Sched``, ``Start``, ``Negotiator``, ``Collector``, ``Master``, ``Shadow``...)."""
        path = self.state_dir / "log" / f"{daemon}Log"
        return path.read_text(errors="replace") if path.exists() else ""

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


def _master_alive() -> bool:
    """The pool's master runs (a reused pid's environment does not name this pool's config)."""
    try:
        pid = int((CONDOR_DIR / "run" / "master.pid").read_text())
        return f"CONDOR_CONFIG={CONDOR_DIR}/daemons.config".encode() in Path(f"/proc/{pid}/environ").read_bytes()
    except (OSError, ValueError):
        return False


def run_script(script: str) -> str:
    """Run a cluster/condor/ script; a failure fails the session with its output (never a skip)."""
    result = subprocess.run([str(SCRIPTS / script)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.fail(
            f"cluster/condor/{script} failed ({result.returncode}); logs in {CONDOR_DIR / 'log'}:\n"
            f"{result.stdout[-3000:]}{result.stderr[-3000:]}",
            pytrace=False,
        )
    return result.stdout


def _pool_env() -> dict[str, str]:
    values = {}
    for line in (CONDOR_DIR / "pool.env").read_text().splitlines():
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip()
    return values


@pytest.fixture(scope="session")
def condor_pool() -> Iterator[CondorPool]:
    CONDOR_DIR.mkdir(parents=True, exist_ok=True)
    # Every session using the pool holds a shared lock; only the last one out may stop it.
    users = open(CONDOR_DIR / ".users", "a")  # noqa: SIM115 (held for the whole session)
    fcntl.flock(users, fcntl.LOCK_SH)
    marker = CONDOR_DIR / "run" / "started-by-pytest"
    started = not _master_alive()
    run_script("up.sh")  # idempotent: builds when needed, waits for the schedd and the GPU slot
    if started:
        marker.write_text(str(os.getpid()))
    settings = _pool_env()
    collector = f"127.0.0.1:{settings['COLLECTOR_PORT']}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONDOR_CONFIG", str(CONDOR_DIR / "condor_config"))
        for name in [n for n in os.environ if n.startswith(("_CONDOR_", "_condor_"))]:
            patch.delenv(name)  # a developer's own pool settings must not leak into this one
        htcondor2.reload_config()
        schedd_ad = htcondor2.Collector(collector).locate(htcondor2.DaemonType.Schedd)
        yield CondorPool(
            state_dir=CONDOR_DIR,
            config=CONDOR_DIR / "condor_config",
            release=CONDOR_DIR / "release",
            collector=collector,
            schedd_address=str(schedd_ad["MyAddress"]),
            submit_user=settings["SUBMIT_USER"],
        )
    with contextlib.suppress(Exception):
        htcondor2.reload_config()  # back to the environment's own configuration
    try:
        fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return  # another session still uses it
    finally:
        users.close()
    if marker.exists() and not os.environ.get("HPSCAN_KEEP_CONDOR"):
        subprocess.run([str(SCRIPTS / "down.sh")], check=False, capture_output=True)


def uses_condor_pool(item: pytest.Item) -> bool:
    return "condor_pool" in getattr(item, "fixturenames", ())


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by these markers
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if uses_condor_pool(item):
            item.add_marker(pytest.mark.condor)
            item.add_marker(pytest.mark.integration)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "condor: needs the personal HTCondor pool (make condor)")


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the daemons before the first test when a selected test needs the pool: a cold build takes about
    20 minutes, which must not count against any one test's timeout. A cached build takes a second."""
    if not session.config.option.collectonly and any(uses_condor_pool(item) for item in session.items):
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("building the HTCondor daemons (cluster/condor/build.sh; cached by version)")
        run_script("build.sh")
