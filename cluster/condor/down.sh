#!/usr/bin/env bash
# Stop the personal pool cluster/condor/up.sh started: the master from .condor/run/master.pid shuts its
# daemons (and their jobs) down; any daemon of this pool still running after that is killed. State (job queue,
# pool key, tokens) is kept unless --purge is given.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
dir="${HPSCAN_CONDOR_DIR:-$repo/.condor}"
[[ -d "$dir" ]] || exit 0
dir="$(cd "$dir" && pwd)"
exec 9>"$dir/run.lock"
flock 9

log() { printf '[condor] %s\n' "$*" >&2; }

# ours PID: the process belongs to this pool (its environment names our config), so a stale pid file or a
# reused pid never makes us signal an unrelated process. HTCondor daemons pass CONDOR_CONFIG to their children.
ours() { grep -qaF "CONDOR_CONFIG=$dir/daemons.config" "/proc/$1/environ" 2>/dev/null; }

# leftovers: the pids of this pool's processes that still run.
leftovers() {
  local environ pid
  for environ in /proc/[0-9]*/environ; do
    pid="${environ#/proc/}"; pid="${pid%/environ}"
    [[ "$pid" != "$$" ]] && ours "$pid" && echo "$pid"
  done
  return 0
}

pid="$(cat "$dir/run/master.pid" 2>/dev/null || true)"
if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && ours "$pid"; then
  log "stopping condor_master (pid $pid): graceful shutdown of its daemons and jobs"
  kill -TERM "$pid"
  for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    log "condor_master still running after 30 s: fast shutdown"
    kill -QUIT "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
fi
rm -f "$dir/run/master.pid"
mapfile -t left < <(leftovers)
if ((${#left[@]})); then
  log "killing what the master left behind: ${left[*]}"
  kill -KILL "${left[@]}" 2>/dev/null || true
fi
rm -f "$dir/run/started-by-pytest"
if [[ "${1:-}" == "--purge" ]]; then
  log "removing $dir"
  rm -rf "$dir"
fi
log "stopped"
