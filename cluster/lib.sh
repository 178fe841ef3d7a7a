# shellcheck shell=bash
# What the cached Go builds of cluster/ share (build-tools.sh, kueue/build.sh, s3/build.sh, kstatus/build.sh source
# it): the pinned versions, the cache (${HPSCAN_TOOLS_CACHE:-$HOME/.cache/hpscan-tools}, keyed by version or content
# and platform), .tools/bin where builds are linked, a reproducible static Go build, one build at a time, and logging.
#
#   source "$here/lib.sh"        # (or ../lib.sh): sets repo, cache, bin, platform; exports the Go build settings
#   build_lock NAME TAG          # hold $cache/NAME.lock for the rest of the script; log lines start [TAG]
#   if ! have "$out/bin" tool; then
#     build_start "$out" "tool v1" "a few minutes"   # logs, empties $out/bin.tmp (the build writes there)
#     with_progress "tool v1" go install ...          # says every minute that it still builds
#     build_done "$out" "tool v1"                     # $out/bin.tmp becomes $out/bin, logs the time
#   fi
#   install_from "$out/bin" tool # hard-links (or copies) it into .tools/bin

lib_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$lib_dir/.." && pwd)"
# shellcheck source=versions.env
source "$lib_dir/versions.env"

cache="${HPSCAN_TOOLS_CACHE:-$HOME/.cache/hpscan-tools}"
bin="$repo/.tools/bin"
platform="$(go env GOOS)-$(go env GOARCH)"
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOTOOLCHAIN=local
mkdir -p "$bin" "$cache"
log_tag=build

log() { printf '[%s] %s\n' "$log_tag" "$*" >&2; }

# build_lock NAME TAG: one build at a time per cache and lock name (make test and a pytest session may start
# together); the lock is held on descriptor 8 until the script ends.
build_lock() {
  log_tag="$2"
  exec 8>"$cache/$1.lock"
  flock 8
}

# with_progress WHAT COMMAND...: run COMMAND, saying every minute that WHAT is still building (go build is
# silent for minutes on a cold cache).
with_progress() {
  local what="$1"; shift
  "$@" &
  local pid=$! seconds=0
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    seconds=$((seconds + 1))
    if ((seconds % 60 == 0)); then log "$what: still building ($((seconds / 60)) min)"; fi
  done
  wait "$pid"
}

# have DIR NAME...: every binary is already in the cache.
have() {
  local dir="$1"; shift
  for name in "$@"; do [[ -x "$dir/$name" ]] || return 1; done
}

# build_start OUT WHAT [HOW LONG]: a build of WHAT into OUT/bin.tmp begins (emptied first).
build_start() {
  build_started=$SECONDS
  log "building $2${3:+ ($3)}"
  rm -rf "$1/bin.tmp" && mkdir -p "$1/bin.tmp"
}

# build_done OUT WHAT: OUT/bin.tmp becomes OUT/bin, so the cache only ever holds complete builds.
build_done() {
  rm -rf "$1/bin" && mv "$1/bin.tmp" "$1/bin"
  log "$2 built in $((SECONDS - build_started))s"
}

# install_from DIR NAME...: hard-link (or copy) cached binaries into .tools/bin.
install_from() {
  local dir="$1"; shift
  for name in "$@"; do
    ln -f "$dir/$name" "$bin/$name" 2>/dev/null || cp -f "$dir/$name" "$bin/$name"
  done
}
