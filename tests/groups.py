"""`make test`'s runner: the test groups that share no singleton, side by side, each with its own ports and state.

The integration tests mostly wait on daemons (an API server, a schedd, slurmctld, a kubelet), so one pytest
session after another leaves the CPU idle. A group is a set of test folders that shares one set of real parts:

- ``kubernetes``: the control plane, the real node (a host singleton: containerd, the kubelet's ports) and an S3
  server, at the ports of the environment (the harness defaults, or what the caller exported);
- ``grid``: the personal HTCondor pool and the Slurm cluster (each a singleton: its job user, its ports), with a
  control plane and an S3 server of their own, at the environment's ports plus ``PORT_STEP`` in ``.cluster-grid``,
  and the real node for its last test (the scan over all three batch systems): the machine has one, which the
  kubernetes group's real-node tests hold first and then free (a host lock, tests/integration/conftest.py);
- ``local``: the unit tests, the simulation and the TensorFlow tests on this machine (no daemon);
- ``lanes``: the fast tests on the lowest dependencies and on Python 3.12 and 3.13 (``make test-lanes``).

Each group writes its output to ``.test-logs/<group>.log``; a group's log is printed whole when it ends, and the
run fails when any group fails. Extra arguments after ``--`` go to every pytest group (e.g. ``-m "not real_node"``).

    .venv/bin/python tests/groups.py                    # all groups (what `make test` runs)
    .venv/bin/python tests/groups.py --only grid local  # some of them
    .venv/bin/python tests/groups.py --list
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOGS = REPO / ".test-logs"
PORT_STEP = 100  # the grid group's control plane and S3 server sit this far above the kubernetes group's
# The harness defaults (cluster/up.sh, cluster/s3server.py); the pool's and Slurm's ports are the grid group's alone.
SHIFTED_PORTS = {
    "HPSCAN_API_PORT": 26443,
    "HPSCAN_ETCD_PORT": 23790,
    "HPSCAN_ETCD_PEER_PORT": 23800,
    "HPSCAN_S3_PORT": 29000,
}


@dataclass(frozen=True)
class Group:
    name: str
    what: str
    paths: tuple[str, ...] = ()
    command: tuple[str, ...] = ()  # instead of pytest over paths
    own_control_plane: bool = False  # ports shifted by PORT_STEP and a state folder of its own
    env: dict[str, str] = field(default_factory=dict)


GROUPS = (
    Group("kubernetes", "control plane, real node, S3", ("tests/integration/kubernetes", "tests/integration/store")),
    Group(
        "grid",
        "HTCondor pool, Slurm cluster, the backend contract",
        ("tests/integration/htcondor", "tests/integration/slurm", "tests/integration/backends"),
        own_control_plane=True,
        # its one real-node test (the three-site scan) last: by then the kubernetes group's ran and freed the node
        env={"HPSCAN_REAL_NODE_ORDER": "last"},
    ),
    Group("local", "unit, simulation, TensorFlow", ("tests/unit", "tests/simulation", "tests/integration/local")),
    Group("lanes", "lowest dependencies, Python 3.12 and 3.13", command=("make", "--no-print-directory", "test-lanes")),
)


def group_env(group: Group, base: dict[str, str]) -> dict[str, str]:
    """The environment of one group: the caller's, with its own ports and state folder when it has its own parts."""
    env = {**base, **group.env}
    if group.own_control_plane:
        for name, default in SHIFTED_PORTS.items():
            env[name] = str(int(base.get(name, default)) + PORT_STEP)
        env["HPSCAN_CLUSTER_DIR"] = base.get("HPSCAN_CLUSTER_DIR", str(REPO / ".cluster")) + f"-{group.name}"
    return env


def group_command(group: Group, pytest_args: list[str]) -> list[str]:
    if group.command:
        return list(group.command)
    return [sys.executable, "-m", "pytest", "-q", "--durations=15", *pytest_args, *group.paths]


def run(groups: list[Group], pytest_args: list[str]) -> int:
    LOGS.mkdir(exist_ok=True)
    started = time.monotonic()
    running: dict[str, tuple[subprocess.Popen[bytes], float]] = {}
    for group in groups:
        log = open(LOGS / f"{group.name}.log", "wb")  # noqa: SIM115 (the child writes it until it ends)
        process = subprocess.Popen(
            group_command(group, pytest_args),
            cwd=REPO,
            env=group_env(group, dict(os.environ)),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # so that an interrupt reaches the whole group (pytest, its daemons' stops)
        )
        running[group.name] = (process, time.monotonic())
        print(f"[groups] {group.name} ({group.what}) started, log .test-logs/{group.name}.log", flush=True)
    results: dict[str, tuple[int, float]] = {}
    try:
        while running:
            for name, (process, since) in list(running.items()):
                if process.poll() is None:
                    continue
                del running[name]
                results[name] = (process.returncode, time.monotonic() - since)
                _print_log(name, *results[name])
            time.sleep(1)
    except KeyboardInterrupt:
        for process, _ in running.values():  # pytest tears its fixtures down on SIGINT (clusters, pools)
            os.killpg(process.pid, signal.SIGINT)
        for process, _ in running.values():
            process.wait()
        raise
    print(f"[groups] all ended in {time.monotonic() - started:.0f} s", flush=True)
    for name, (code, seconds) in results.items():
        print(f"[groups]   {name:<11} {'passed' if code == 0 else f'FAILED ({code})':<12} {seconds:6.0f} s", flush=True)
    return 0 if all(code == 0 for code, _ in results.values()) else 1


def _print_log(name: str, code: int, seconds: float) -> None:
    verdict = "passed" if code == 0 else f"FAILED (exit {code})"
    print(f"\n[groups] ===== {name}: {verdict} in {seconds:.0f} s =====", flush=True)
    sys.stdout.buffer.write((LOGS / f"{name}.log").read_bytes())
    print(f"[groups] ===== end of {name} =====", flush=True)


def main() -> int:
    argv = sys.argv[1:]
    pytest_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=[g.name for g in GROUPS], help="run only these groups")
    parser.add_argument("--list", action="store_true", help="list the groups and their environment, run nothing")
    args = parser.parse_args(own)
    groups = [g for g in GROUPS if not args.only or g.name in args.only]
    if args.list:
        for group in groups:
            env = group_env(group, dict(os.environ))
            changed = {k: v for k, v in env.items() if os.environ.get(k) != v}
            print(f"{group.name:<11} {' '.join(group_command(group, pytest_args)[3:])}  {changed or ''}")
        return 0
    return run(groups, pytest_args)


if __name__ == "__main__":
    sys.exit(main())
