#!/usr/bin/env bash
# Stop the real node cluster/node/up.sh started and restore what it and the kubelet changed on the host, from
# .cluster/node/host-state.env: the sysctls the kubelet sets (kernel.panic, kernel.panic_on_oops,
# vm.overcommit_memory), iptables chains (KUBE-*, the hpscan-real-node FORWARD rules), mounts, kubepods
# cgroups, network namespaces, the bridge, and the fixed paths the kubelet and containerd create. Called by
# cluster/down.sh while the API server still runs (the node's pods are deleted through it first); a no-op
# when no real node was started.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
dir="${HPSCAN_CLUSTER_DIR:-$repo/.cluster}"
node_dir="$dir/node"
tools="$repo/.tools/bin"
[[ -f "$node_dir/node.env" ]] || exit 0
exec 6>"$node_dir/lock"
flock 6
# shellcheck disable=SC1091
source "$node_dir/node.env"
sock="$node_dir/containerd.sock"

log() { printf '[node] %s\n' "$*" >&2; }
ctr() { command ctr --address "$sock" --namespace k8s.io "$@"; }

ours() { grep -qaF "$node_dir" "/proc/$1/cmdline" 2>/dev/null; }
stop() {
  local pidfile="$node_dir/run/$1.pid" pid
  pid="$(cat "$pidfile" 2>/dev/null || true)"
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && ours "$pid"; then
    log "stopping $1 (pid $pid)"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

# 1. Pods: deleted through the API (the kubelet stops their containers and tears their sandboxes' network
#    down), while the kubelet and the API server run.
kubeconfig="$dir/kubeconfig"
if [[ -x "$tools/kubectl" ]] && "$tools/kubectl" --kubeconfig "$kubeconfig" get node "$NODE_NAME" >/dev/null 2>&1; then
  "$tools/kubectl" --kubeconfig "$kubeconfig" delete pods --all-namespaces --field-selector "spec.nodeName=$NODE_NAME" \
    --grace-period=0 --force --wait=false >/dev/null 2>&1 || true
  for _ in $(seq 60); do
    if ! [[ -S "$sock" && -n "$(ctr tasks ls -q 2>/dev/null)" ]]; then break; fi
    sleep 0.5
  done
  "$tools/kubectl" --kubeconfig "$kubeconfig" delete node "$NODE_NAME" --wait=false >/dev/null 2>&1 || true
  "$tools/kubectl" --kubeconfig "$kubeconfig" -n default delete endpointslice kubernetes-real-node \
    --ignore-not-found --wait=false >/dev/null 2>&1 || true
fi
stop kube-proxy
stop apiforward
stop kubelet

# 2. Whatever still runs: tasks through containerd, then runc directly, then containerd and its shims.
if [[ -S "$sock" ]]; then
  for task in $(ctr tasks ls -q 2>/dev/null); do ctr tasks kill -s SIGKILL "$task" >/dev/null 2>&1 || true; done
fi
runc_root="$node_dir/containerd/runc/k8s.io"
if [[ -d "$runc_root" ]]; then
  for id in $(runc --root "$runc_root" list -q 2>/dev/null); do
    runc --root "$runc_root" kill "$id" KILL 2>/dev/null || true
    runc --root "$runc_root" delete --force "$id" 2>/dev/null || true
  done
fi
stop containerd
for pid in $(pgrep -f containerd-shim 2>/dev/null || true); do
  if ours "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
done

state="$node_dir/host-state.env"
if [[ ! -f "$state" ]]; then log "stopped (no host state to restore)"; exit 0; fi
# shellcheck disable=SC1090
source "$state"

# 3. Mounts: overlay snapshots, volumes, sandbox /dev/shm, network namespaces we made.
umount_under() {
  awk -v d="$1" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/mounts | sort -r |
    while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" || true; done
}
umount_under "$node_dir"
umount_under /var/lib/kubelet
umount_under /run/containerd
if [[ -d /run/netns ]]; then
  for ns in /run/netns/cni-*; do
    [[ -e "$ns" ]] || continue
    grep -qxF "$(basename "$ns")" "$node_dir/netns.before" 2>/dev/null && continue
    umount "$ns" 2>/dev/null || true
    rm -f "$ns"
  done
fi

# 4. cgroups: the kubepods trees the kubelet made in every hierarchy (empty once the containers are gone).
for hierarchy in /sys/fs/cgroup/*/; do
  [[ -d "$hierarchy/kubepods" ]] || continue
  find "$hierarchy/kubepods" -depth -type d -exec rmdir {} + 2>/dev/null || true
done

# 5. iptables (v4 and v6): every KUBE-* rule and chain (the kubelet's canaries and KUBE-FIREWALL, kube-proxy's;
#    `kube-proxy --cleanup` leaves KUBE-FIREWALL), and our FORWARD rules.
drop_kube_chains() {
  local tool="$1" table rules rule chains chain
  for table in filter nat mangle; do
    rules="$("$tool" -t "$table" -S 2>/dev/null || true)"
    while read -r rule; do
      [[ "$rule" =~ ^-A\ .*(-j|--jump|-g|--goto)\ KUBE- ]] || continue
      eval "$tool -t $table ${rule/#-A /-D }" 2>/dev/null || true
    done <<< "$rules"
    chains="$(awk '$1 == "-N" && $2 ~ /^KUBE-/ {print $2}' <<< "$rules")"
    for chain in $chains; do "$tool" -t "$table" -F "$chain" 2>/dev/null || true; done
    for chain in $chains; do "$tool" -t "$table" -X "$chain" 2>/dev/null || true; done
  done
}
drop_kube_chains iptables
if command -v ip6tables >/dev/null; then drop_kube_chains ip6tables; fi
for direction in -i -o; do
  while iptables -D FORWARD "$direction" "$BRIDGE" -m comment --comment hpscan-real-node -j DROP 2>/dev/null; do :; done
done

# 6. sysctls, the bridge, the fixed paths that were not there before.
while read -r key value; do
  if [[ "$(sysctl -n "$key" 2>/dev/null)" != "$value" ]]; then sysctl -qw "$key=$value" || true; fi
done < "$node_dir/host-sysctls"
if [[ "${BRIDGE_EXISTED:-1}" == 0 ]] && ip link show "$BRIDGE" >/dev/null 2>&1; then ip link delete "$BRIDGE"; fi
i=0
while true; do
  path_var="PATH_$i" existed_var="PATH_${i}_EXISTED"
  [[ -n "${!path_var:-}" ]] || break
  if [[ "${!existed_var}" == 0 && -e "${!path_var}" ]]; then
    umount_under "${!path_var}"
    rm -rf "${!path_var}"
  fi
  i=$((i + 1))
done
rm -f /var/lib/cni/results/hpscan-*  # CNI's result cache (a fixed path), our network's entries
rm -f "$state" "$node_dir/host-sysctls" "$node_dir/netns.before" "$node_dir/iptables.before"
log "stopped; host restored"
