"""The images `make images` builds, run in real containers (runc, via cluster/containers.py): their entry points
work, and the payload image holds everything a shard Job's command needs, under the Job's own security context
(its uid, a read-only root filesystem, no capabilities, no network).

The images are built (or found up to date: seconds) by cluster/images/build.sh once per session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.containers import Bind, image_config, run
from hpscan.backends.kubernetes.names import SHARD_MOUNT
from support.operator_support import tiny_shard

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]
TAG = os.environ.get("HPSCAN_IMAGE_TAG", "dev")
PAYLOAD = f"localhost/hpscan/dl1-payload:{TAG}"
GPU_CHECK = f"localhost/hpscan/dl1-gpu-check:{TAG}"
OPERATOR = f"localhost/hpscan/operator:{TAG}"


@pytest.fixture(scope="session", autouse=True)
def images() -> None:
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("containers here need root on Linux (buildah's default storage, runc)")
    build = subprocess.run([REPO / "cluster/images/build.sh"], capture_output=True, text=True, check=False)
    if build.returncode != 0:
        pytest.fail(f"cluster/images/build.sh failed:\n{build.stderr[-6000:]}", pytrace=False)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def test_the_payload_image_runs_dl1_and_the_shard_runner():
    assert "train-shard" in ok(run(PAYLOAD))  # ENTRYPOINT dl1, CMD --help
    assert "--channel" in ok(run(PAYLOAD, command=["hpscan", "shard-run", "--help"]))


def test_the_gpu_check_image_exits_3_without_a_gpu():
    result = run(GPU_CHECK)  # ENTRYPOINT dl1 gpu-check --require; no device in the container
    assert result.returncode == 3, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "no NVIDIA device nodes" in result.stderr, result.stderr  # the one-line reason


def test_the_operator_image_runs_hpscan_operator():
    assert "Usage" in ok(run(OPERATOR, ["--help"]))  # ENTRYPOINT hpscan operator
    assert image_config(OPERATOR)["User"] == "10001:10001"


def shard_job_container() -> tuple[dict, dict]:
    """The pod spec and container of the Job the operator makes for shard 0 of the seed scan."""
    from hpscan.backends.base import ScanRef
    from hpscan.backends.kubernetes import job_manifest
    from hpscan.core.manifest import load_scan

    scan = load_scan(REPO / "examples" / "dl1-seed-scan.yaml")
    job = job_manifest(ScanRef(name="dl1-seed-scan", namespace="physics", uid="1"), scan.spec, 0, scan.spec.sites[0])
    pod = job["spec"]["template"]["spec"]
    return pod, pod["containers"][0]


TINY_SHARD = tiny_shard("dl1-seed-scan")


def run_as_the_job(tmp_path: Path, command: list[str] | None = None):
    """Run the payload image as the operator's shard Job runs it: its command (or `command`), env, uid/gid,
    read-only root filesystem and volumes (the output, /tmp and shard-file emptyDirs), with the kubernetes channel
    swapped for stdout (it needs an API server) and the shard file written where that channel writes it."""
    pod, container = shard_job_container()
    if command is None:
        command = list(container["command"])
        at = command.index("--channel")
        command[at : at + 2] = ["--channel", "stdout"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    uid, gid = pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    binds = []
    for mount in container["volumeMounts"]:
        source = tmp_path / mount["name"]
        source.mkdir(exist_ok=True)
        if mount["mountPath"] == SHARD_MOUNT:  # where the kubernetes channel writes the file from the record pages
            (source / "shard.json").write_text(json.dumps(TINY_SHARD))
        if "configMap" not in volumes[mount["name"]]:
            os.chown(source, uid, gid)  # an emptyDir, writable by the pod's fsGroup
        binds.append(Bind(source, mount["mountPath"], read_only=mount.get("readOnly", False)))
    env = {e["name"]: e.get("value", "physics") for e in container["env"]}  # valueFrom: the namespace
    out = next(tmp_path / m["name"] for m in container["volumeMounts"] if m["mountPath"] == "/hpscan/out")
    return run(PAYLOAD, command=command, env=env, user=f"{uid}:{gid}", binds=binds, timeout=600), out


# What each channel of `hpscan shard-run` imports when it starts: the kubernetes client (shard Jobs) and
# htchirp (HTCondor jobs), and boto3 for the uploads to a scan's model store (spec.artifacts.store). The chirp
# channel reports a failing client on stderr and goes on, so only an import shows that htchirp is missing.
CHANNEL_IMPORTS = """
import hpscan.cli, dl1.cli, tensorflow
import htchirp
from kubernetes import client
from hpscan.job.configmap import ConfigMapChannel
from hpscan.job.chirp import ChirpChannel
from hpscan.api.store import ModelStoreLocation
from hpscan.job.store import ModelStore, ModelUploader
ConfigMapChannel("results", "ns", api_client=client.ApiClient())
ModelStore(ModelStoreLocation(endpoint="http://127.0.0.1:1", bucket="b", key_prefix="p/"), "k", "s")
print("channels ok")
"""


def test_the_payload_image_has_what_both_job_channels_import(tmp_path):
    result, _ = run_as_the_job(tmp_path, ["python3", "-c", CHANNEL_IMPORTS])
    assert "channels ok" in ok(result)


def check_tiny_shard(result, out: Path) -> None:
    ok(result)
    (record,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert (record["id"], record["status"], record["device"]) == ("c-tiny", "succeeded", "CPU")
    assert record["metrics"]["val_loss"] > 0


def test_a_tiny_shard_runs_in_the_payload_image_exactly_as_its_job_runs_it(tmp_path):
    """Found here first: the Job had a read-only root filesystem and nothing writable at /tmp, and `import
    tensorflow` needs a temporary directory; job_manifest now mounts an emptyDir there."""
    check_tiny_shard(*run_as_the_job(tmp_path))


def test_no_build_configuration_is_left_in_the_images():
    """The wheelhouse and pip.conf reach the builds as a mount at /etc/xdg/pip: nothing of them stays (buildah leaves
    the empty mount point)."""
    for image in (PAYLOAD, OPERATOR):
        result = run(image, command=["sh", "-c", "ls -A /etc/xdg/pip 2>/dev/null; cat /etc/pip.conf 2>/dev/null; true"])
        assert ok(result).strip() == "", f"{image}: {result.stdout}"
