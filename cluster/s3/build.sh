#!/usr/bin/env bash
# Build the S3 server the tests use, versitygw (an S3 gateway; its POSIX backend keeps objects as files), from
# the Go module proxy, once per (version, platform), into ${HPSCAN_TOOLS_CACHE:-$HOME/.cache/hpscan-tools}/
# versitygw-<version>-<platform>/bin/versitygw, hard-linked into .tools/bin/. A warm run only links.
# Why not MinIO: its server is under the AGPL, which this workplace does not use; versitygw is Apache-2.0 and its
# module has no replace directives, so `go install module/cmd@version` builds it.
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
exec 8>"$cache/build-s3.lock"  # one build at a time (make test and a pytest session may start together)
flock 8

log() { printf '[s3] %s\n' "$*" >&2; }

out="$cache/versitygw-$VERSITYGW_VERSION-$platform"
if [[ ! -x "$out/bin/versitygw" ]]; then
  log "building versitygw $VERSITYGW_VERSION (a few minutes on 2 cores with cold Go caches)"
  start=$SECONDS
  rm -rf "$out/bin.tmp" && mkdir -p "$out/bin.tmp"
  GOBIN="$out/bin.tmp" go install -trimpath \
    -ldflags "-s -w -X main.Version=$VERSITYGW_VERSION -X main.Build=hpscan -X main.BuildTime=1970-01-01" \
    "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION" &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    if (((SECONDS - start) % 60 == 0)); then log "versitygw: still building ($(((SECONDS - start) / 60)) min)"; fi
  done
  wait "$pid"
  rm -rf "$out/bin" && mv "$out/bin.tmp" "$out/bin"  # the cache only ever holds complete builds
  log "versitygw $VERSITYGW_VERSION built in $((SECONDS - start))s"
fi
ln -f "$out/bin/versitygw" "$bin/versitygw" 2>/dev/null || cp -f "$out/bin/versitygw" "$bin/versitygw"
echo "$bin/versitygw"
