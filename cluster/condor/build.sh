#!/usr/bin/env bash
# Build the HTCondor daemons and tools a personal test pool needs, once per (version, platform), into
# ${HPSCAN_CONDOR_CACHE:-$HOME/.cache/hpscan-condor}/htcondor-<version>-<platform>/{bin,sbin,libexec,lib}.
# Sources, in order:
#   1. a condor_master already on PATH whose version equals the installed htcondor bindings' (linked, not built);
#   2. the source tarball $HPSCAN_CONDOR_SOURCE (default: htcondor-<version>-src.tar.gz in ../shared/htcondor/
#      or shared/htcondor/ beside the repository, when present);
#   3. HTCondor's source release for the tag v<version>, downloaded from GitHub.
# Prints the release directory on stdout (the last line); progress goes to stderr.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source-path=SCRIPTDIR source=../versions.env
source "$here/../versions.env"

version="$HTCONDOR_VERSION"
cache="${HPSCAN_CONDOR_CACHE:-$HOME/.cache/hpscan-condor}"
# Binaries link the distribution's libraries (ssl, krb5, pcre2, curl), so the key names the distribution too.
arch="$(uname -m)"; arch="${arch/x86_64/amd64}"; arch="${arch/aarch64/arm64}"
platform="$(. /etc/os-release && echo "${ID}${VERSION_ID:-}")-$arch"
jobs="${HPSCAN_CONDOR_JOBS:-$(nproc)}"
mkdir -p "$cache"

log() { printf '[condor] %s\n' "$*" >&2; }

# The targets a personal pool with GPUs, file transfer, chirp and IDTOKENs needs (the full build is ~4x larger).
targets=(
  condor_master condor_collector condor_negotiator condor_schedd condor_startd condor_shadow condor_starter
  condor_procd condor_shared_port condor_gpu_discovery condor_chirp
  condor_submit condor_q condor_status condor_rm condor_history condor_on condor_config_val condor_version
  condor_transfer_data condor_token_create condor_token_list condor_ping condor_wait
)

# with_progress WHAT LOG COMMAND...: run COMMAND with its output in LOG, saying every minute that WHAT is still
# running (with ninja's latest [done/total] step, when it prints them).
with_progress() {
  local what="$1" output="$2"; shift 2
  "$@" >"$output" 2>&1 &
  local pid=$! seconds=0 step
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    seconds=$((seconds + 1))
    if ((seconds % 60 == 0)); then
      step="$(grep -o '^\[[0-9]*/[0-9]*\]' "$output" 2>/dev/null | tail -1 || true)"
      log "$what: still running ($((seconds / 60)) min)${step:+ $step}"
    fi
  done
  wait "$pid"
}

# complete DIR: DIR holds a finished release (every daemon the pool starts, and the tools the scripts use).
complete() {
  local dir="$1" name
  for name in sbin/condor_master sbin/condor_collector sbin/condor_negotiator sbin/condor_schedd \
      sbin/condor_startd sbin/condor_shadow sbin/condor_starter sbin/condor_procd libexec/condor_gpu_discovery \
      libexec/condor_chirp bin/condor_status bin/condor_q bin/condor_token_create bin/condor_config_val; do
    [[ -x "$dir/$name" ]] || return 1
  done
}

# bindings_version: the version of the htcondor Python bindings hpscan's tests use (empty when absent).
bindings_version() {
  local python="$repo/.venv/bin/python"
  [[ -x "$python" ]] || python="python3"
  "$python" -c 'import htcondor2; print(htcondor2.version().split()[1])' 2>/dev/null || true
}

# 1. An installation on PATH at the bindings' version: link its programs into the cache, build nothing.
from_path() {
  local master bindings installed dir sbin bin libexec
  master="$(command -v condor_master)" || return 1
  bindings="$(bindings_version)"
  # shellcheck disable=SC2016 # a literal $ in the pattern
  installed="$(condor_version 2>/dev/null | sed -n 's/^\$CondorVersion: \([0-9.]*\) .*/\1/p')"
  if [[ -z "$installed" || "$installed" != "${bindings:-$version}" ]]; then
    log "ignoring $master: version '${installed:-unknown}', the bindings are ${bindings:-absent} (want ${bindings:-$version})"
    return 1
  fi
  dir="$cache/htcondor-$installed-$platform-system"
  if complete "$dir"; then echo "$dir"; return 0; fi
  sbin="$(dirname "$master")"; bin="$(dirname "$(command -v condor_status)")"
  libexec="$(condor_config_val LIBEXEC 2>/dev/null || echo /usr/libexec/condor)"
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"/{bin,sbin,libexec}
  local name
  for name in "$sbin"/condor_*; do ln -s "$name" "$dir.tmp/sbin/"; done
  for name in "$bin"/condor_*; do ln -s "$name" "$dir.tmp/bin/"; done
  for name in "$libexec"/*; do ln -s "$name" "$dir.tmp/libexec/"; done
  complete "$dir.tmp" || { log "$master: incomplete installation (no condor_gpu_discovery or condor_chirp in $libexec?)"; rm -rf "$dir.tmp"; return 1; }
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
  log "using the installed HTCondor $installed ($master), linked into $dir"
  echo "$dir"
}

# apt_install PACKAGE...: install the build dependencies that are missing (CI starts from a bare machine).
apt_install() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  ((${#missing[@]})) || return 0
  command -v apt-get >/dev/null || { log "missing build dependencies ${missing[*]} and no apt-get: install them"; exit 1; }
  local sudo=()
  ((EUID == 0)) || sudo=(sudo)
  log "installing build dependencies: ${missing[*]}"
  { "${sudo[@]}" apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
  } >"$cache/apt.log" 2>&1 || { log "apt-get failed: $cache/apt.log"; tail -20 "$cache/apt.log" >&2; exit 1; }
}

# source_tarball: the path of the source tarball, fetching it when no local copy is named or found.
source_tarball() {
  local name="htcondor-$version-src.tar.gz" candidate
  if [[ -n "${HPSCAN_CONDOR_SOURCE:-}" ]]; then
    [[ -f "$HPSCAN_CONDOR_SOURCE" ]] || { log "HPSCAN_CONDOR_SOURCE=$HPSCAN_CONDOR_SOURCE: no such file"; exit 1; }
    echo "$HPSCAN_CONDOR_SOURCE"; return
  fi
  for candidate in "$repo/../shared/htcondor/$name" "$repo/shared/htcondor/$name" "$cache/$name"; do
    if [[ -f "$candidate" ]]; then echo "$candidate"; return; fi
  done
  local url="https://github.com/htcondor/htcondor/archive/refs/tags/v$version.tar.gz"
  log "downloading $url (set HPSCAN_CONDOR_SOURCE to a local copy to skip this)"
  if ! curl -fsSL --retry 3 -o "$cache/$name.tmp" "$url"; then
    rm -f "$cache/$name.tmp"
    log "download failed: set HPSCAN_CONDOR_SOURCE=/path/to/$name (HTCondor's source tree at tag v$version)"
    exit 1
  fi
  mv "$cache/$name.tmp" "$cache/$name"
  echo "$cache/$name"
}

# install_built BUILD DEST: copy the built targets (and the shared libraries they link) to DEST, at the places
# the generated cmake_install.cmake scripts name; `ninja install` would build everything first.
install_built() {
  python3 - "$1" "$2" "${targets[@]}" <<'PY'
import os, pathlib, re, shutil, sys

build, dest, *targets = sys.argv[1:]
build, dest = pathlib.Path(build), pathlib.Path(dest)
wanted = set(targets)
rule = re.compile(r'file\(INSTALL DESTINATION "\$\{CMAKE_INSTALL_PREFIX\}/([^"]+)" TYPE (EXECUTABLE|SHARED_LIBRARY)'
                  r'[^)]*?FILES ((?:"[^"]+"\s*)+)\)')
link = re.compile(r'create_symlink \\?"([^"\\]+)\\?" \$ENV\{DESTDIR\}\$\{CMAKE_INSTALL_PREFIX\}/(\S+?)\)')
copied, links = 0, []
for script in build.rglob("cmake_install.cmake"):
    text = script.read_text()
    for where, kind, files in rule.findall(text):
        for name in re.findall(r'"([^"]+)"', files):
            path = pathlib.Path(name)
            if not path.exists() or (kind == "EXECUTABLE" and path.name not in wanted):
                continue  # a library or program this build did not need
            target = dest / where / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            if path.is_symlink():
                target.unlink(missing_ok=True)
                target.symlink_to(os.readlink(path))
            else:
                shutil.copy2(path, target)
                copied += 1
    links += link.findall(text)
for relative, where in links:  # clones such as condor_hold -> condor_rm, made once their program is there
    target = dest / where
    if (target.parent / relative).exists():
        target.unlink(missing_ok=True)
        target.symlink_to(relative)
missing = sorted(t for t in wanted if not any((dest / d / t).exists() for d in ("bin", "sbin", "libexec")))
if missing:
    sys.exit(f"built but not installed: {missing}")
print(f"installed {copied} files", file=sys.stderr)
PY
}

from_source() {
  local out="$cache/htcondor-$version-$platform"
  if complete "$out"; then echo "$out"; return; fi
  apt_install cmake ninja-build g++ make pkg-config libpcre2-dev libkrb5-dev libcurl4-openssl-dev libssl-dev \
    uuid-dev libexpat1-dev libsqlite3-dev zlib1g-dev python3
  local tarball start=$SECONDS
  tarball="$(source_tarball)"
  log "building HTCondor $version from $tarball (${#targets[@]} targets; 25-30 minutes on 2 shared cores)"
  local work="$cache/build-$version-$platform"
  if [[ ! -f "$work/build/build.ninja" ]]; then  # a build interrupted after configuring resumes where it stopped
    rm -rf "$work" && mkdir -p "$work/build"
    tar -xzf "$tarball" -C "$work"
    local src
    src="$(find "$work" -mindepth 1 -maxdepth 1 -type d ! -name build | head -1)"
    # PROPER: use the system's libraries, download nothing. RPATH $ORIGIN/../lib, so the release is relocatable.
    with_progress "configuring" "$work/configure.log" cmake -S "$src" -B "$work/build" -G Ninja -Wno-dev \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O2" -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2" \
      -DPROPER=ON -DBUILD_TESTING=OFF -DWITH_PYTHON_BINDINGS=OFF -DWITH_PYTHON_BINDINGS_V2=OFF \
      -DWITH_PYTHON_BINDINGS_V3=OFF -DWANT_PYTHON3_BINDINGS=OFF -DWANT_MAN_PAGES=OFF -DENABLE_JAVA_TESTS=OFF \
      -DWITH_SCITOKENS=OFF -DWITH_VOMS=OFF -DWITH_MUNGE=OFF -DWITH_LIBVIRT=OFF -DWITH_BLAHP=OFF \
      -DWITH_GANGLIA=OFF -DHAVE_BOINC=OFF -DCMAKE_SKIP_RPATH=OFF ||
      { log "configure failed: $work/configure.log"; tail -20 "$work/configure.log" >&2; exit 1; }
  fi
  with_progress "ninja (log: $work/ninja.log)" "$work/ninja.log" ninja -C "$work/build" -j "$jobs" "${targets[@]}" ||
    { log "build failed: $work/ninja.log"; grep -m5 -B2 -A8 'FAILED' "$work/ninja.log" >&2 || tail -30 "$work/ninja.log" >&2; exit 1; }
  rm -rf "$out.tmp" && mkdir -p "$out.tmp"
  install_built "$work/build" "$out.tmp"
  "$out.tmp/bin/condor_version" >&2
  complete "$out.tmp" || { log "incomplete install in $out.tmp"; exit 1; }
  rm -rf "$out" && mv "$out.tmp" "$out"  # the cache only ever holds complete releases
  [[ -n "${HPSCAN_CONDOR_KEEP_BUILD:-}" ]] || rm -rf "$work"  # 1.8 GB; set HPSCAN_CONDOR_KEEP_BUILD=1 to keep it
  log "HTCondor $version built in $((SECONDS - start))s: $out ($(du -sh "$out" | cut -f1))"
  echo "$out"
}

# One build at a time per cache (make condor and a pytest session may start together).
exec 8>"$cache/build.lock"
flock 8
bindings="$(bindings_version)"
if [[ -n "$bindings" && "$bindings" != "$version" ]]; then
  log "note: the htcondor bindings are $bindings, the daemons $version (the suite passes with 25.14 bindings on" \
    "25.13 daemons; if a client fails to authenticate through condor_shared_port, pin htcondor==$version)"
fi
from_path || from_source
