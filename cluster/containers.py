"""Run an image from buildah's storage in a real container (runc), the way a kubelet would start a pod's.

`buildah run` ignores an image's entrypoint and cannot make the root filesystem read-only; this writes the OCI
runtime spec itself: the image's entrypoint, command, environment, user and working directory (overridable with
Kubernetes' `command`/`args` semantics), a read-only root filesystem, no capabilities, `no_new_privs`, and a
network namespace of its own with nothing in it, so no packet can leave. Bind mounts stand in for volumes.

    python -m cluster.containers localhost/hpscan/dl1-gpu-check:dev; echo $?        # 3 without a GPU
    python -m cluster.containers --user 1000:1000 -v /tmp/out:/hpscan/out \\
        localhost/hpscan/dl1-payload:dev -- train-shard /hpscan/out/shard.json --out /hpscan/out

Needs root (buildah's default storage, runc).
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ContainerError(RuntimeError):
    """The container could not be set up (not: the command in it failed)."""


@dataclass(frozen=True)
class Bind:
    """A host folder or file at `destination` inside the container."""

    source: Path
    destination: str
    read_only: bool = False


def _tool(*args: str, timeout: float = 120) -> str:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise ContainerError(f"{' '.join(args)}: exit {result.returncode}: {result.stderr.strip()}")
    return result.stdout.strip()


def image_config(image: str) -> dict[str, Any]:
    """The image's OCI config (Entrypoint, Cmd, Env, User, WorkingDir, Labels)."""
    return json.loads(_tool("buildah", "inspect", "--type", "image", image))["OCIv1"].get("config") or {}


def _ids(rootfs: Path, user: str) -> tuple[int, int]:
    """uid and gid of an image's USER (`name`, `uid`, `name:group` or `uid:gid`), read from its /etc files."""
    name, _, group = user.partition(":")

    def lookup(table: str, key: str, field: int) -> int:
        if key.isdigit():
            return int(key)
        for line in (rootfs / "etc" / table).read_text().splitlines():
            parts = line.split(":")
            if parts[0] == key:
                return int(parts[field])
        raise ContainerError(f"{key!r} is not in the image's /etc/{table}")

    uid = lookup("passwd", name or "0", 2)
    if group:
        return uid, lookup("group", group, 2)
    if name.isdigit():
        for line in (rootfs / "etc" / "passwd").read_text().splitlines():
            parts = line.split(":")
            if parts[2] == name:
                return uid, int(parts[3])
        return uid, uid if uid else 0
    return uid, lookup("passwd", name, 3)


def _spec(
    rootfs: Path, args: list[str], env: list[str], uid: int, gid: int, cwd: str, binds: Sequence[Bind], read_only: bool
) -> dict[str, Any]:
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755"]},
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
        },
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
    ]
    for bind in binds:
        options = ["rbind", "rprivate", *(["ro"] if bind.read_only else [])]
        mounts.append({"destination": bind.destination, "type": "bind", "source": str(bind.source), "options": options})
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": uid, "gid": gid, "additionalGids": [gid]},
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {"bounding": [], "effective": [], "permitted": [], "inheritable": [], "ambient": []},
            "noNewPrivileges": True,
        },
        "root": {"path": str(rootfs), "readonly": read_only},
        "hostname": "hpscan-test",
        "mounts": mounts,
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    }


@contextmanager
def _mounted(image: str) -> Iterator[Path]:
    """The image's root filesystem as a buildah working container, removed afterwards."""
    container = _tool("buildah", "from", "--pull-never", "--quiet", image)
    try:
        yield Path(_tool("buildah", "mount", container))
    finally:
        subprocess.run(["buildah", "rm", container], capture_output=True, check=False)


def run(
    image: str,
    args: Sequence[str] | None = None,
    *,
    command: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    user: str | None = None,
    workdir: str | None = None,
    binds: Sequence[Bind] = (),
    read_only: bool = True,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """Run `image` to completion and return its exit code and output.

    `command` replaces the entrypoint and `args` the image's CMD, as in a Kubernetes container; `env` is added
    to (and overrides) the image's; `user` (`uid[:gid]` or a name) overrides its USER.
    """
    if shutil.which("runc") is None or shutil.which("buildah") is None:
        raise ContainerError("runc and buildah are needed (cluster/images/build.sh installs them)")
    config = image_config(image)
    if command is not None:
        argv = [*command, *(args or [])]
    else:
        argv = [*(config.get("Entrypoint") or []), *(args if args is not None else config.get("Cmd") or [])]
    if not argv:
        raise ContainerError(f"{image}: no entrypoint, no command and no args")
    environment = dict(item.split("=", 1) for item in config.get("Env") or [])
    environment.update(env or {})
    container_id = f"hpscan-{secrets.token_hex(6)}"
    with _mounted(image) as rootfs, tempfile.TemporaryDirectory(prefix="hpscan-bundle-") as bundle:
        uid, gid = _ids(rootfs, user or config.get("User") or "0")
        spec = _spec(
            rootfs,
            argv,
            [f"{key}={value}" for key, value in environment.items()],
            uid,
            gid,
            workdir or config.get("WorkingDir") or "/",
            binds,
            read_only,
        )
        (Path(bundle) / "config.json").write_text(json.dumps(spec))
        try:
            return subprocess.run(
                ["runc", "run", "--bundle", bundle, container_id],
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        finally:
            subprocess.run(["runc", "delete", "--force", container_id], capture_output=True, check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.containers", description=__doc__.split("\n\n")[0])
    parser.add_argument("image")
    parser.add_argument("args", nargs="*", help="replace the image's CMD (after --)")
    parser.add_argument("--entrypoint", help="replace the image's entrypoint (a command line, split on spaces)")
    parser.add_argument("--user", help="uid[:gid] or a user name of the image")
    parser.add_argument("-e", "--env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("-v", "--volume", action="append", default=[], metavar="SRC:DST[:ro]")
    parser.add_argument("--writable", action="store_true", help="a writable root filesystem")
    options = parser.parse_args(argv)
    binds = []
    for volume in options.volume:
        source, destination, *mode = volume.split(":")
        binds.append(Bind(Path(source).resolve(), destination, read_only=mode == ["ro"]))
    result = run(
        options.image,
        options.args or None,
        command=options.entrypoint.split() if options.entrypoint else None,
        env=dict(item.split("=", 1) for item in options.env),
        user=options.user,
        binds=binds,
        read_only=not options.writable,
    )
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
