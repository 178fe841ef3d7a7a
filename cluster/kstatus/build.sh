#!/usr/bin/env bash
# Build the kstatus checker of the tests (main.go: sigs.k8s.io/cli-utils' kstatus on one object) once per content of
# its go.mod, go.sum and main.go into ${HPSCAN_TOOLS_CACHE:-$HOME/.cache/hpscan-tools}/kstatus-<hash>-<platform>/bin/,
# hard-linked into .tools/bin/kstatus; prints that path. A warm run only links. The key holds main.go too, so an
# edit of the program rebuilds it (a key of go.sum alone would keep running the old one).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${HPSCAN_TOOLS_CACHE:-$HOME/.cache/hpscan-tools}"
bin="$repo/.tools/bin"
platform="$(go env GOOS)-$(go env GOARCH)"
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOTOOLCHAIN=local
mkdir -p "$bin" "$cache"
exec 8>"$cache/build-kstatus.lock"  # one build at a time (make test and a pytest session may start together)
flock 8

log() { printf '[kstatus] %s\n' "$*" >&2; }

key="$(cat "$here/go.mod" "$here/go.sum" "$here/main.go" | sha256sum | cut -c1-16)"
out="$cache/kstatus-$key-$platform"
if [[ ! -x "$out/bin/kstatus" ]]; then
  log "building the kstatus checker (sigs.k8s.io/cli-utils; about a minute on 2 cores with cold Go caches)"
  start=$SECONDS
  rm -rf "$out/bin.tmp" && mkdir -p "$out/bin.tmp"
  (cd "$here" && go build -mod=readonly -trimpath -ldflags "-s -w" -o "$out/bin.tmp/kstatus" .)
  rm -rf "$out/bin" && mv "$out/bin.tmp" "$out/bin"  # the cache only ever holds complete builds
  log "kstatus checker built in $((SECONDS - start))s"
fi
ln -f "$out/bin/kstatus" "$bin/kstatus" 2>/dev/null || cp -f "$out/bin/kstatus" "$bin/kstatus"
echo "$bin/kstatus"
