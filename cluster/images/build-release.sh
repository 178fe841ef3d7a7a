#!/usr/bin/env bash
# The operator and payload images of an earlier commit, for the upgrade test (tests/integration/kubernetes/test_upgrade.py):
#
#   cluster/images/build-release.sh COMMIT      (COMMIT: charts/hpscan-operator/ci/upgrade-from.yaml's)
#
#   localhost/hpscan/operator:release-<commit12>      that commit's operator/Dockerfile
#   localhost/hpscan/dl1-payload:release-<commit12>   that commit's payload/Dockerfile, target payload
#
# The commit's tree (git archive) and a wheelhouse of its own pyproject.toml are kept under
# $HPSCAN_IMAGES_CACHE/release-<commit12>; the images are built on the bases `make images` made (the same
# bookworm Python and tensorflow-cpu, so both releases' payloads train on one TensorFlow) and labelled with the
# commit: a built commit is not built again, so CI builds it once. Prints the two image names. Needs root and git.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${HPSCAN_IMAGES_CACHE:-$HOME/.cache/hpscan-images}"
commit_arg="${1:?usage: build-release.sh COMMIT}"

log() { printf '[release-images] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

commit="$(git -C "$repo" rev-parse --verify "$commit_arg^{commit}" 2>/dev/null)" ||
  die "$commit_arg is no commit of this repository (a shallow clone? fetch its history)"
short="${commit:0:12}"
work="$cache/release-$short"
BASE_IMAGE=localhost/hpscan/bookworm-python:dev
OPERATOR_IMAGE="localhost/hpscan/operator:release-$short"
PAYLOAD_IMAGE="localhost/hpscan/dl1-payload:release-$short"
KEY_LABEL=io.hpscan.release-commit

built() {
  [[ "$(buildah inspect --type image --format "{{index .OCIv1.Config.Labels \"$KEY_LABEL\"}}" "$1" 2>/dev/null)" == "$commit" ]]
}

if built "$OPERATOR_IMAGE" && built "$PAYLOAD_IMAGE"; then
  log "$OPERATOR_IMAGE and $PAYLOAD_IMAGE are built"
  echo "$OPERATOR_IMAGE $PAYLOAD_IMAGE"
  exit 0
fi
mkdir -p "$cache"
exec 7>"$cache/build.lock"  # the same lock as cluster/images/build.sh: one build per cache at a time
flock 7

start=$SECONDS
tf_version="$(git -C "$repo" show "$commit:payload/Dockerfile" |
  sed -nE 's/^ARG BASE_IMAGE=tensorflow\/tensorflow:([0-9.]+)-gpu.*/\1/p')"
tf_image="localhost/hpscan/tensorflow-cpu:$tf_version"
buildah inspect --type image "$BASE_IMAGE" >/dev/null 2>&1 && buildah inspect --type image "$tf_image" >/dev/null 2>&1 ||
  die "$BASE_IMAGE or $tf_image is missing: run 'make images' first"

if [[ ! -f "$work/src/pyproject.toml" ]]; then
  rm -rf "$work/src.tmp" && mkdir -p "$work/src.tmp"
  git -C "$repo" archive "$commit" | tar -C "$work/src.tmp" -xf -
  mv "$work/src.tmp" "$work/src"
fi
handoff="$work/wheelhouse"
if [[ ! -f "$handoff/complete" ]]; then
  py="${HPSCAN_HOST_PYTHON:-python3}"
  log "fetching the wheels of $short's pyproject.toml (tensorflow-cpu==$tf_version, its extras)"
  rm -rf "$handoff.tmp" && mkdir -p "$handoff.tmp/wheels"
  "$py" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$handoff.tmp/wheels" \
    "tensorflow-cpu==$tf_version" "$work/src[payload,job,operator,condor]" "setuptools>=69" wheel >&2
  rm -f "$handoff.tmp"/wheels/hpscan-*.whl
  printf '[global]\nno-index = true\nfind-links = /etc/xdg/pip/wheels\n' > "$handoff.tmp/pip.conf"
  touch "$handoff.tmp/complete"
  rm -rf "$handoff" && mv "$handoff.tmp" "$handoff"
fi

# build IMAGE DOCKERFILE [buildah build args...]
build() {
  local image="$1" dockerfile="$2"; shift 2
  built "$image" && return
  local log_file="$work/build-$(basename "$image" | tr : -).log" began=$SECONDS
  log "building $image from $short's $dockerfile"
  buildah build --quiet --format docker --layers --pull-never --network none --volume "$handoff:/etc/xdg/pip:ro" \
    --label "$KEY_LABEL=$commit" -f "$work/src/$dockerfile" -t "$image" "$@" "$work/src" > "$log_file" 2>&1 ||
    die "buildah build of $image failed: $(tail -20 "$log_file")"
  log "$image built in $((SECONDS - began))s"
}

build "$OPERATOR_IMAGE" operator/Dockerfile --build-arg "PYTHON_IMAGE=$BASE_IMAGE"
build "$PAYLOAD_IMAGE" payload/Dockerfile --target payload --build-arg "BASE_IMAGE=$tf_image"
log "release images of $short ready in $((SECONDS - start))s"
echo "$OPERATOR_IMAGE $PAYLOAD_IMAGE"
