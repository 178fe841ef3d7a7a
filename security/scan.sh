#!/usr/bin/env bash
# Run Checkov's Kubernetes rules over the rendered Helm chart and over the objects the operator creates for one
# scan (Job, ConfigMap, RBAC, NetworkPolicy). Checkov lives in its own virtualenv, cached by version under
# ${HPSCAN_TOOLS_CACHE:-~/.cache/hpscan-tools} (its pinned dependencies would fight the project's).
# Exit status: checkov's (non-zero when a rule not skipped in security/checkov.yaml fails).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
version=3.3.30
cache="${HPSCAN_TOOLS_CACHE:-$HOME/.cache/hpscan-tools}/checkov-$version"
if [[ ! -x "$cache/bin/checkov" ]]; then
  echo "[security] installing checkov $version into $cache (once)" >&2
  rm -rf "$cache.tmp" && python3 -m venv "$cache.tmp"
  "$cache.tmp/bin/pip" install -q --disable-pip-version-check "checkov==$version"
  rm -rf "$cache" && mv "$cache.tmp" "$cache"
  # the venv's scripts name their folder: fix them after the move
  sed -i "1s|$cache.tmp|$cache|" "$cache"/bin/checkov "$cache"/bin/pip
fi
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
"$repo/.tools/bin/helm" template hpscan "$repo/charts/hpscan-operator" --namespace hpscan-system \
  --set networkPolicy.enabled=true > "$out/chart.yaml"
"$repo/.venv/bin/python" - "$out/scan.yaml" <<'PY'
import sys
from pathlib import Path

import yaml

from hpscan.backends.base import ScanRef
from hpscan.backends.kubernetes.manifests import job_manifest, payload_rbac, shard_network_policy, shard_pages
from hpscan.backends.kubernetes.page_layout import page_layout
from hpscan.core.manifest import load_scan
from hpscan.core.planning import plan

scan = load_scan(Path("examples/quickstart.yaml"))
ref = ScanRef(scan.metadata.name, "physics", "00000000-0000-0000-0000-000000000000")
planned = plan(scan.metadata.name, scan.spec)
site = scan.spec.sites[0] if scan.spec.sites else None
layout = page_layout(scan.spec, planned.shard_count)
objects = [job_manifest(ref, scan.spec, 0, site), *shard_pages(ref, planned.shard_file(0), layout.size),
           *payload_rbac(ref, planned.shard_count, layout.pages_per_shard), shard_network_policy(ref)]
Path(sys.argv[1]).write_text(yaml.safe_dump_all(objects))
PY
cd "$repo"
exec "$cache/bin/checkov" --config-file "$here/checkov.yaml" -d "$out"
