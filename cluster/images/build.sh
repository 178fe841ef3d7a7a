#!/usr/bin/env bash
# `make images`: build hpscan's container images with buildah (no Docker daemon, no registry) from the
# repository's own Dockerfiles, into buildah's default storage:
#
#   localhost/hpscan/dl1-payload:dev     payload/Dockerfile, target payload
#   localhost/hpscan/dl1-gpu-check:dev   payload/Dockerfile, target gpu-check
#   localhost/hpscan/operator:dev        operator/Dockerfile
#
# The Dockerfiles stay what a site builds (the official tensorflow/tensorflow GPU image, python:3.11-slim);
# here their base images are made locally and handed in as build arguments:
#
#   localhost/hpscan/bookworm-python:dev       debootstrap --variant=minbase bookworm + python3, FROM scratch
#   localhost/hpscan/tensorflow-cpu:<version>  the above + tensorflow-cpu of the official image's version
#
# Builds have no network (--network none): the Python packages are fetched on the host by pip with the host's
# own configuration (index, CA) into a wheelhouse, which each build sees with a pip.conf (no-index,
# find-links) under /etc/xdg/pip, a folder pip reads and the Dockerfiles never name.
# Every image carries a label io.hpscan.build-key, a hash of what it is made of; an image whose key matches
# is not built again, so a warm run takes seconds.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${HPSCAN_IMAGES_CACHE:-$HOME/.cache/hpscan-images}"
tag="${HPSCAN_IMAGE_TAG:-dev}"
suite=bookworm
mirror="${HPSCAN_DEBIAN_MIRROR:-}"

BASE_IMAGE=localhost/hpscan/bookworm-python:dev
PAYLOAD_IMAGE="localhost/hpscan/dl1-payload:$tag"
GPU_CHECK_IMAGE="localhost/hpscan/dl1-gpu-check:$tag"
OPERATOR_IMAGE="localhost/hpscan/operator:$tag"
KEY_LABEL=io.hpscan.build-key
# Bump when the recipe of a base changes in a way its inputs below do not show.
BASE_RECIPE="bookworm minbase python3 python3-venv python3-pip python-is-python3; no EXTERNALLY-MANAGED; v1"
TF_RECIPE="pip install --no-index tensorflow-cpu; v1"
# Docker format: the OCI format has no SHELL, and buildah would run the Dockerfiles' RUN lines without pipefail.
BUILD_RECIPE="buildah build --format docker --network none; v1"

log() { printf '[images] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

mkdir -p "$cache"
exec 7>"$cache/build.lock"  # one build at a time per cache (make images and a pytest session)
flock 7

# --- packages: CI starts on a fresh machine ------------------------------------------------------------
ensure_packages() {
  local missing=()
  command -v buildah >/dev/null || missing+=(buildah)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v runc >/dev/null || missing+=(runc)
  ((${#missing[@]} == 0)) && return
  ((EUID == 0)) || die "missing ${missing[*]}: run as root (apt-get install) or install them"
  log "installing ${missing[*]} (apt-get)"
  apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}

sha() { sha256sum | cut -c1-16; }

# key_of IMAGE: its build-key label, empty when the image is absent.
key_of() {
  buildah inspect --type image --format "{{index .OCIv1.Config.Labels \"$KEY_LABEL\"}}" "$1" 2>/dev/null || true
}

# fresh IMAGE KEY: the image exists with that key.
fresh() { [[ "$(key_of "$1")" == "$2" ]]; }

# The Debian mirror apt already uses (deb822 or one-line sources), unless HPSCAN_DEBIAN_MIRROR says otherwise.
debian_mirror() {
  if [[ -n "$mirror" ]]; then echo "$mirror"; return; fi
  local found
  found="$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -1)"
  [[ -n "$found" ]] || found="$(grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | grep -v security | head -1)"
  echo "${found:-http://deb.debian.org/debian}"
}

# --- bases ----------------------------------------------------------------------------------------------
build_base() {
  local key="$1"
  if fresh "$BASE_IMAGE" "$key"; then log "$BASE_IMAGE is up to date"; return; fi
  local start=$SECONDS rootfs="$cache/rootfs.tmp" src
  src="$(debian_mirror)"
  log "debootstrap $suite (minbase, python3) from $src"
  # debootstrap mounts /proc and /sys inside the root; undo them even when it fails half-way.
  trap 'umount_under "$rootfs"' EXIT
  umount_under "$rootfs" && rm -rf "$rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,python-is-python3 \
    "$suite" "$rootfs" "$src" > "$cache/debootstrap.log" 2>&1 ||
    die "debootstrap failed (log: $cache/debootstrap.log): $(tail -3 "$cache/debootstrap.log")"
  umount_under "$rootfs"
  trap - EXIT
  # The official images let pip install into the system Python (no PEP 668 marker); so does this base.
  rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
  rm -rf "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/root/.cache
  : > "$rootfs/etc/hostname"
  rm -f "$rootfs/etc/resolv.conf"
  local ctr mnt
  ctr="$(buildah from scratch)"
  mnt="$(buildah mount "$ctr")"
  tar -C "$rootfs" --numeric-owner -cf - . | tar -C "$mnt" --numeric-owner -xpf -
  buildah umount "$ctr" >/dev/null
  buildah config --env LANG=C.UTF-8 --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --cmd python3 --label "$KEY_LABEL=$key" --label "io.hpscan.debian-mirror=$src" "$ctr"
  buildah commit --quiet --format docker --rm "$ctr" "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
  log "$BASE_IMAGE built in $((SECONDS - start))s ($(python3_version "$BASE_IMAGE"))"
}

# umount_under DIR: unmount whatever is mounted at or below DIR, deepest first.
umount_under() {
  local dir="$1"
  [[ -d "$dir" ]] || return 0
  awk -v d="$dir" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/mounts | sort -r |
    while read -r m; do umount -l "$m" || true; done
}

python3_version() {
  local ctr
  ctr="$(buildah from --pull-never --quiet "$1")"
  buildah run --network none "$ctr" -- python3 -V 2>&1 || true
  buildah rm "$ctr" >/dev/null
}

build_tf_base() {
  local image="$1" key="$2" version="$3"
  if fresh "$image" "$key"; then log "$image is up to date"; return; fi
  local start=$SECONDS ctr
  log "installing tensorflow-cpu==$version into $image (no network: from the wheelhouse)"
  ctr="$(buildah from --pull-never --quiet "$BASE_IMAGE")"
  buildah run --network none --volume "$handoff:/etc/xdg/pip:ro" "$ctr" -- \
    python3 -m pip install --no-cache-dir --disable-pip-version-check --root-user-action=ignore -q \
    "tensorflow-cpu==$version" >&2
  buildah config --env TF_CPP_MIN_LOG_LEVEL=3 --label "$KEY_LABEL=$key" "$ctr"
  buildah commit --quiet --format docker --rm "$ctr" "$image" >/dev/null
  log "$image built in $((SECONDS - start))s"
}

# --- the wheelhouse: every wheel the builds install, fetched on the host -------------------------------
# pip.conf and wheels/ in one folder, mounted read-only at /etc/xdg/pip (pip's site-wide config folder).
fetch_wheels() {
  local key="$1" version="$2"
  handoff="$cache/wheelhouse-$key"
  if [[ -f "$handoff/complete" ]]; then return; fi
  local start=$SECONDS py="${HPSCAN_HOST_PYTHON:-python3}"
  local host_py
  host_py="$("$py" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
  [[ "$host_py" == 3.11 ]] || die "$py is Python $host_py; the images run 3.11 (set HPSCAN_HOST_PYTHON)"
  log "fetching wheels with the host's pip configuration (tensorflow-cpu==$version, hpscan's extras)"
  rm -rf "$handoff.tmp" && mkdir -p "$handoff.tmp/wheels"
  # One resolution for everything, so the payload's packages agree with TensorFlow's (NumPy above all).
  # pip wheel also turns any source-only package into a wheel: the builds compile nothing.
  "$py" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$handoff.tmp/wheels" \
    "tensorflow-cpu==$version" "${repo}[payload,job,operator,condor]" "setuptools>=69" wheel >&2
  rm -f "$handoff.tmp"/wheels/hpscan-*.whl  # the images build hpscan from their own copy of the sources
  printf '[global]\nno-index = true\nfind-links = /etc/xdg/pip/wheels\n' > "$handoff.tmp/pip.conf"
  touch "$handoff.tmp/complete"
  rm -rf "$handoff" && mv "$handoff.tmp" "$handoff"
  find "$cache" -maxdepth 1 -name 'wheelhouse-*' ! -name "wheelhouse-$key" -exec rm -rf {} +
  log "wheelhouse ready in $((SECONDS - start))s ($(du -sh "$handoff" | cut -f1))"
}

# --- the repository's images ------------------------------------------------------------------------------
# build_dockerfile IMAGE KEY DOCKERFILE [buildah build args...]
build_dockerfile() {
  local image="$1" key="$2" dockerfile="$3"; shift 3
  if fresh "$image" "$key"; then log "$image is up to date"; return; fi
  local start=$SECONDS
  log "building $image from $dockerfile $*"
  buildah build --quiet --format docker --layers --pull-never --network none --volume "$handoff:/etc/xdg/pip:ro" \
    --label "$KEY_LABEL=$key" -f "$repo/$dockerfile" -t "$image" "$@" "$repo" > "$cache/build-$(basename "$image" | tr : -).log" 2>&1 ||
    die "buildah build of $image failed: $(tail -20 "$cache/build-$(basename "$image" | tr : -).log")"
  log "$image built in $((SECONDS - start))s"
}

# What the images are made of: the files their COPY lines take, the Dockerfiles, the ignore file.
source_hash() {
  (
    cd "$repo"
    find pyproject.toml README.md .dockerignore operator payload/dl1 payload/Dockerfile -type f \
      ! -path '*/__pycache__/*' ! -path '*.egg-info/*' -print0 | sort -z | xargs -0 sha256sum
  ) | sha
}

start=$SECONDS
ensure_packages
# The TensorFlow version of the official image the payload Dockerfile names (ARG BASE_IMAGE=...:X.Y.Z-gpu).
tf_version="$(sed -nE 's/^ARG BASE_IMAGE=tensorflow\/tensorflow:([0-9.]+)-gpu.*/\1/p' "$repo/payload/Dockerfile")"
[[ -n "$tf_version" ]] || die "payload/Dockerfile has no 'ARG BASE_IMAGE=tensorflow/tensorflow:<version>-gpu'"
tf_image="localhost/hpscan/tensorflow-cpu:$tf_version"

base_key="$(echo "$suite|$BASE_RECIPE" | sha)"
wheels_key="$(cat "$repo/pyproject.toml" <(echo "$tf_version") | sha)"
tf_key="$(echo "$base_key|$wheels_key|$tf_version|$TF_RECIPE" | sha)"
src_key="$(cat <(source_hash) <(echo "$BUILD_RECIPE") | sha)"

build_base "$base_key"
handoff="$cache/wheelhouse-$wheels_key"
needs_wheels=false
for pair in "$tf_image=$tf_key" "$PAYLOAD_IMAGE=$tf_key.$src_key" "$GPU_CHECK_IMAGE=$tf_key.$src_key" \
  "$OPERATOR_IMAGE=$base_key.$wheels_key.$src_key"; do
  fresh "${pair%%=*}" "${pair#*=}" || needs_wheels=true
done
if $needs_wheels; then fetch_wheels "$wheels_key" "$tf_version"; fi
build_tf_base "$tf_image" "$tf_key" "$tf_version"
build_dockerfile "$PAYLOAD_IMAGE" "$tf_key.$src_key" payload/Dockerfile --target payload \
  --build-arg "BASE_IMAGE=$tf_image"
build_dockerfile "$GPU_CHECK_IMAGE" "$tf_key.$src_key" payload/Dockerfile --target gpu-check \
  --build-arg "BASE_IMAGE=$tf_image"
build_dockerfile "$OPERATOR_IMAGE" "$base_key.$wheels_key.$src_key" operator/Dockerfile \
  --build-arg "PYTHON_IMAGE=$BASE_IMAGE"
# Images a rebuild replaced, and the build's intermediate layers, are untagged now: free their space.
if [[ -n "$(buildah images --quiet --filter dangling=true 2>/dev/null)" ]]; then
  buildah rmi --prune >/dev/null 2>&1 || true
fi
log "images ready in $((SECONDS - start))s: $PAYLOAD_IMAGE $GPU_CHECK_IMAGE $OPERATOR_IMAGE"
