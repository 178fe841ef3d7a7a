#!/usr/bin/env bash
# Stop everything cluster/up.sh started (and any pod process the node agent left), then keep the state
# (etcd data, certificates) unless --purge is given.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
dir="${HPSCAN_CLUSTER_DIR:-$repo/.cluster}"
[[ -d "$dir" ]] || exit 0
exec 9>"$dir/run.lock"
flock 9

log() { printf '[cluster] %s\n' "$*" >&2; }

# ours PID: the process is one this cluster started (its command line or environment names $dir), so a
# stale pid file never makes us signal an unrelated process that reused the pid.
ours() {
  local pid="$1"
  grep -qaF "$dir" "/proc/$pid/cmdline" 2>/dev/null || grep -qaF "$dir" "/proc/$pid/environ" 2>/dev/null
}

# stop PIDFILE: TERM the process group the pid leads, KILL it after 10 s.
stop() {
  local pidfile="$1" pid
  pid="$(cat "$pidfile" 2>/dev/null || true)"
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && ours "$pid"; then
    log "stopping $(basename "$pidfile" .pid) (pid $pid)"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

# A real node first, while the API server still runs (a no-op when none was started); it restores the host.
"$here/node/down.sh" || log "WARNING: cluster/node/down.sh failed; stopping the rest anyway"
# The node agent first (it stops its pods), then the control plane in reverse start order.
for name in node-agent kube-scheduler kube-controller-manager kube-apiserver etcd; do
  stop "$dir/run/$name.pid"
done
# Pod processes the agent could not stop (it was killed): each leads its own process group.
if [[ -d "$dir/pods" ]]; then
  while IFS= read -r -d '' pidfile; do stop "$pidfile"; done < <(find "$dir/pods" -name '*.pid' -print0)
fi
rm -f "$dir/run/started-by-pytest" "$dir/run/node-agent.ready"
if [[ "${1:-}" == "--purge" ]]; then
  log "removing $dir"
  rm -rf "$dir"
fi
log "stopped"
