#!/usr/bin/env bash
# Build the checkers of the tests that judge an HPScan as GitOps tools do: kstatus (main.go: sigs.k8s.io/cli-utils'
# status.Compute, what Flux's health checks and Helm 4's --wait use) and flux-health (flux/main.go: Flux's own
# evaluator of a Kustomization's healthCheckExprs). Each is built once per content of its go.mod, go.sum and main.go
# into ${HPSCAN_TOOLS_CACHE:-$HOME/.cache/hpscan-tools}/<name>-<hash>-<platform>/bin/, hard-linked into .tools/bin/;
# prints their paths, one a line. A warm run only links. The key holds main.go too, so an edit of a program rebuilds
# it (a key of go.sum alone would keep running the old one). Arguments: the checkers to build (default: both).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=../lib.sh
source "$here/../lib.sh"
build_lock build-kstatus kstatus

# build NAME DIR WHAT: the Go module in DIR as .tools/bin/NAME, from the cache when it holds this content.
build() {
  local name="$1" dir="$2" what="$3"
  local key out
  key="$(cat "$dir/go.mod" "$dir/go.sum" "$dir/main.go" | sha256sum | cut -c1-16)"
  out="$cache/$name-$key-$platform"
  if ! have "$out/bin" "$name"; then
    build_start "$out" "$name" "$what"
    with_progress "$name" go -C "$dir" build -mod=readonly -trimpath -ldflags "-s -w" -o "$out/bin.tmp/$name" .
    build_done "$out" "$name"
  fi
  install_from "$out/bin" "$name"
  echo "$bin/$name"
}

names=("$@")
((${#names[@]})) || names=(kstatus flux-health)
for name in "${names[@]}"; do
  case "$name" in
    kstatus) build kstatus "$here" "sigs.k8s.io/cli-utils; one to two minutes on 2 cores with cold Go caches" ;;
    flux-health) build flux-health "$here/flux" "github.com/fluxcd/pkg/runtime/cel; about two minutes on 2 cores with cold Go caches" ;;
    *) echo "unknown checker $name (kstatus, flux-health)" >&2; exit 2 ;;
  esac
done
