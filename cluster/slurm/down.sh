#!/usr/bin/env bash
# Stop the cluster cluster/slurm/up.sh started, by the pids in .slurm/run/ (each checked to be this cluster's
# daemon: its command line names our state folder), slurmrestd and the slurmd first, then slurmctld and munged;
# job steps the slurmd leave behind (slurmstepd of this cluster) are killed. With --purge the state folder goes;
# the job user up.sh created (created-user) is removed on every stop: the host is as before.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
dir="${HPSCAN_SLURM_DIR:-$repo/.slurm}"
[[ -d "$dir" ]] || exit 0
dir="$(cd "$dir" && pwd)"
exec 9>"$dir/run.lock"
flock 9

log() { printf '[slurm] %s\n' "$*" >&2; }
ours() { grep -qaF "$dir/" "/proc/$1/cmdline" 2>/dev/null; }

stop() {  # stop NAME: TERM the daemon of run/NAME.pid, KILL it after 10 s
  local pid
  pid="$(cat "$dir/run/$1.pid" 2>/dev/null)" || return 0
  if kill -0 "$pid" 2>/dev/null && ours "$pid"; then
    kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { log "$1 (pid $pid) still running after 10 s: killing it"; kill -KILL "$pid" || true; }
  fi
  rm -f "$dir/run/$1.pid"
}
# Cancel every job first, so a restarted cluster holds no job whose processes are gone (slurmctld would keep
# such a job's node busy until it finds out); as an admin: without SLURM_JWT, which would make us the job user.
pid="$(cat "$dir/run/slurmctld.pid" 2>/dev/null || true)"
if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && ours "$pid"; then
  export SLURM_CONF="$dir/slurm.conf"
  unset SLURM_JWT
  jobs="$(squeue -h -o %i 2>/dev/null || true)"
  if [[ -n "$jobs" ]]; then
    log "cancelling $(echo "$jobs" | wc -l) job(s)"
    # shellcheck disable=SC2086
    scancel $jobs 2>/dev/null || true
    for _ in $(seq 50); do [[ -z "$(squeue -h -t R,CG,S -o %i 2>/dev/null)" ]] && break; sleep 0.2; done
  fi
fi
for name in slurmrestd slurmd-gpu1 slurmd-cpu1 slurmctld munged; do stop "$name"; done
# Job steps outlive a stopped slurmd: slurmstepd processes of this cluster (their command line names no path, so
# they are found by their environment's SLURM_CONF) and the jobs under them.
for environ in /proc/[0-9]*/environ; do
  pid="${environ#/proc/}"; pid="${pid%/environ}"
  if grep -qaF "SLURM_CONF=$dir/slurm.conf" "$environ" 2>/dev/null; then
    [[ "$pid" != "$$" ]] && kill -KILL "$pid" 2>/dev/null || true
  fi
done
# The job user up.sh created goes with the cluster (up.sh creates it again).
if [[ -f "$dir/created-user" ]]; then
  while read -r user; do
    [[ -n "$user" ]] && id -u "$user" >/dev/null 2>&1 && { log "removing the system user $user"; userdel "$user" || true; }
  done < "$dir/created-user"
  rm -f "$dir/created-user"
fi
rm -f "$dir/run/started-by-pytest"
if [[ "${1:-}" == "--purge" ]]; then
  log "removing $dir"
  rm -rf "$dir"
fi
log "stopped"
