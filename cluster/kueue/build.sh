#!/usr/bin/env bash
# Build Kueue's controller manager (sigs.k8s.io/kueue/cmd/kueue) from the Go module proxy, once per (version,
# platform), into ${HPSCAN_TOOLS_CACHE:-$HOME/.cache/hpscan-tools}/kueue-<version>-<platform>/bin/kueue, hard-linked
# into .tools/bin/. A warm run only links. Prints the binary's path, then the module's source folder (the CRDs and
# webhook manifests the harness installs come from there: config/components/{crd/bases,webhook}; nothing is copied
# into this repository). The module has no replace directives, so `go install module/cmd@version` builds it.
set -euo pipefail

# shellcheck source=../lib.sh
source "$(dirname "$0")/../lib.sh"
build_lock build-kueue kueue

module="sigs.k8s.io/kueue@$KUEUE_VERSION"
out="$cache/kueue-$KUEUE_VERSION-$platform"
if ! have "$out/bin" kueue; then
  build_start "$out" "kueue $KUEUE_VERSION" "several minutes on 2 cores with cold Go caches"
  GOBIN="$out/bin.tmp" with_progress kueue go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kueue/cmd/kueue@$KUEUE_VERSION"
  build_done "$out" "kueue $KUEUE_VERSION"
fi
install_from "$out/bin" kueue
echo "$bin/kueue"
# The module's source (read-only in the Go module cache; already there after the build).
(cd "$out" && go mod download -json "$module" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
