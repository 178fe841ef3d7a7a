#!/usr/bin/env bash
# Build the S3 server the tests use, versitygw (an S3 gateway; its POSIX backend keeps objects as files), from
# the Go module proxy, once per (version, platform), into ${HPSCAN_TOOLS_CACHE:-$HOME/.cache/hpscan-tools}/
# versitygw-<version>-<platform>/bin/versitygw, hard-linked into .tools/bin/. A warm run only links.
# Why not MinIO: its server is under the AGPL, which this workplace does not use; versitygw is Apache-2.0 and its
# module has no replace directives, so `go install module/cmd@version` builds it.
set -euo pipefail

# shellcheck source=../lib.sh
source "$(dirname "$0")/../lib.sh"
build_lock build-s3 s3

out="$cache/versitygw-$VERSITYGW_VERSION-$platform"
if ! have "$out/bin" versitygw; then
  build_start "$out" "versitygw $VERSITYGW_VERSION" "a few minutes on 2 cores with cold Go caches"
  GOBIN="$out/bin.tmp" with_progress versitygw go install -trimpath \
    -ldflags "-s -w -X main.Version=$VERSITYGW_VERSION -X main.Build=hpscan -X main.BuildTime=1970-01-01" \
    "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
  build_done "$out" "versitygw $VERSITYGW_VERSION"
fi
install_from "$out/bin" versitygw
echo "$bin/versitygw"
