#!/usr/bin/env bash
# The Python environment the test cluster's jobs run in, as a centre's software area (a module, CVMFS) would
# provide it: python, hpscan and dl1 the job user can run. Prints the folder to put first on the jobs' PATH (a
# site's `runner` is <folder>/hpscan). Usage: cluster/slurm/job-python.sh [VENV]   (default: the repository's .venv)
#
# As an ordinary user the jobs are that user's and VENV/bin serves as it is. As root, jobs run as the job user
# (hpscan-slurm), who cannot reach an interpreter under ~root (pyenv, uv): then a venv is made in
# .slurm/job-python from the system's python of the same minor version, seeing VENV's packages (a .pth file), with
# its own hpscan and dl1 scripts (as cluster/condor/job-python.sh does for the HTCondor pool).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
dir="${HPSCAN_SLURM_DIR:-$repo/.slurm}"
venv="$(cd "${1:-$repo/.venv}" && pwd)"

die() { printf '[slurm] ERROR: %s\n' "$*" >&2; exit 1; }

[[ -x "$venv/bin/python" ]] || die "no Python environment at $venv (make install)"
if ((EUID != 0)); then
  echo "$venv/bin"
  exit 0
fi
# shellcheck disable=SC1091
source "$dir/cluster.env" 2>/dev/null || die "no cluster in $dir (cluster/slurm/up.sh first)"
runs() { runuser -u "$JOB_USER" -- "$@" >/dev/null 2>&1; }
if runs "$venv/bin/python" -c 'import hpscan'; then
  echo "$venv/bin"
  exit 0
fi

read -r version site <<<"$("$venv/bin/python" -c \
  'import sys, sysconfig; print(f"{sys.version_info[0]}.{sys.version_info[1]}", sysconfig.get_paths()["purelib"])')"
dest="$dir/job-python"
if [[ "$(cat "$dest/.venv" 2>/dev/null)" != "$venv" ]]; then
  base="/usr/bin/python$version"
  runs "$base" -c 'import venv' ||
    die "$JOB_USER cannot run $venv/bin/python (its interpreter is under a private home) nor $base;" \
      "install python$version from the system's packages"
  rm -rf "$dest.tmp"
  "$base" -m venv --without-pip "$dest.tmp"
  echo "import site; site.addsitedir('$site')" > "$dest.tmp/lib/python$version/site-packages/hpscan-venv.pth"
  for command in hpscan:hpscan.cli dl1:dl1.cli; do
    printf '#!%s/bin/python\nimport sys\nfrom %s import main\nsys.exit(main())\n' "$dest" "${command#*:}" \
      > "$dest.tmp/bin/${command%%:*}"
    chmod 755 "$dest.tmp/bin/${command%%:*}"
  done
  echo "$venv" > "$dest.tmp/.venv"
  rm -rf "$dest" && mv "$dest.tmp" "$dest"
  sed -i "s|$dest.tmp|$dest|g" "$dest/bin/activate" "$dest/pyvenv.cfg" 2>/dev/null || true
fi
runs "$dest/bin/hpscan" --help || die "$JOB_USER cannot run $dest/bin/hpscan (are $venv's files readable?)"
echo "$dest/bin"
