#!/usr/bin/env bash
# Build Kueue's controller manager (sigs.k8s.io/kueue/cmd/kueue) from the Go module proxy, once per (version,
# platform), into ${HPSCAN_TOOLS_CACHE:-$HOME/.cache/hpscan-tools}/kueue-<version>-<platform>/bin/kueue, hard-linked
# into .tools/bin/. A warm run only links. Prints the binary's path, then the module's source folder (the CRDs and
# webhook manifests the harness installs come from there: config/components/{crd/bases,webhook}; nothing is copied
# into this repository). The module has no replace directives, so `go install module/cmd@version` builds it.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source-path=SCRIPTDIR source=../versions.env
source "$here/../versions.env"

cache="${HPSCAN_TOOLS_CACHE:-$HOME/.cache/hpscan-tools}"
bin="$repo/.tools/bin"
platform="$(go env GOOS)-$(go env GOARCH)"
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOTOOLCHAIN=local
mkdir -p "$bin" "$cache"
exec 8>"$cache/build-kueue.lock"  # one build at a time (make test and a pytest session may start together)
flock 8

log() { printf '[kueue] %s\n' "$*" >&2; }

module="sigs.k8s.io/kueue@$KUEUE_VERSION"
out="$cache/kueue-$KUEUE_VERSION-$platform"
if [[ ! -x "$out/bin/kueue" ]]; then
  log "building kueue $KUEUE_VERSION (several minutes on 2 cores with cold Go caches)"
  start=$SECONDS
  rm -rf "$out/bin.tmp" && mkdir -p "$out/bin.tmp"
  GOBIN="$out/bin.tmp" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kueue/cmd/kueue@$KUEUE_VERSION" &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    if (((SECONDS - start) % 60 == 0)); then log "kueue: still building ($(((SECONDS - start) / 60)) min)"; fi
  done
  wait "$pid"
  rm -rf "$out/bin" && mv "$out/bin.tmp" "$out/bin"  # the cache only ever holds complete builds
  log "kueue $KUEUE_VERSION built in $((SECONDS - start))s"
fi
ln -f "$out/bin/kueue" "$bin/kueue" 2>/dev/null || cp -f "$out/bin/kueue" "$bin/kueue"
echo "$bin/kueue"
# The module's source (read-only in the Go module cache; already there after the build).
(cd "$out" && go mod download -json "$module" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
