"""examples/ as a kustomize base (what Argo CD and Flux render): the base and a site overlay (namespace, name suffix,
payload image through `images:`, a sites patch) render with the kubectl of the local control plane, and the API
server accepts the result (server-side dry run against the HPScan CRD, CEL rules included)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples"

OVERLAY = """\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: {namespace}
nameSuffix: -v2
resources:
  - {base}
images:
  - name: registry.example.org/hpscan/dl1-payload
    newName: registry.cern.ch/atlas/dl1-payload
    newTag: "0.2.0"
patches:
  - target: {{kind: HPScan}}
    patch: |
      - op: add
        path: /spec/sites
        value:
          - name: gpu-cluster
            kubernetes:
              nodeSelector: {{nvidia.com/gpu.present: "true"}}
              tolerations: [{{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}}]
"""


def kustomize(cluster: Any, folder: Path) -> list[dict[str, Any]]:
    rendered = cluster.kubectl("kustomize", str(folder)).stdout
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def server_dry_run(cluster: Any, namespace: str, docs: list[dict[str, Any]]) -> None:
    result = subprocess.run(
        [str(cluster.tools_bin / "kubectl"), "apply", "--dry-run=server", "--validate=strict", "-n", namespace,
         "-f", "-"],
        input=yaml.safe_dump_all(docs), env=cluster.env(), capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("(server dry run)") == len(docs)


def test_examples_render_as_a_kustomize_base_the_api_server_accepts(cluster, crd, namespace):
    docs = kustomize(cluster, EXAMPLES)
    listed = yaml.safe_load((EXAMPLES / "kustomization.yaml").read_text())["resources"]
    assert sorted(d["metadata"]["name"] for d in docs) == sorted(
        yaml.safe_load((EXAMPLES / f).read_text())["metadata"]["name"] for f in listed
    )
    assert all(d["kind"] == "HPScan" for d in docs)
    server_dry_run(cluster, namespace, docs)


def test_a_site_overlay_sets_namespace_image_and_sites(cluster, crd, namespace, tmp_path):
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    base = os.path.relpath(EXAMPLES, overlay)  # kustomize refuses absolute paths
    (overlay / "kustomization.yaml").write_text(OVERLAY.format(namespace=namespace, base=base))
    docs = kustomize(cluster, overlay)
    assert {d["metadata"]["name"] for d in docs} == {"dl1-seed-scan-v2", "quickstart-v2"}
    for doc in docs:
        assert doc["metadata"]["namespace"] == namespace
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "hpscan"
        assert doc["spec"]["payload"]["image"] == "registry.cern.ch/atlas/dl1-payload:0.2.0"
        assert doc["spec"]["sites"][0]["kubernetes"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    server_dry_run(cluster, namespace, docs)
