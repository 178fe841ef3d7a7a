#!/usr/bin/env bash
# A real node for the local control plane (HPSCAN_REAL_NODE=1 make cluster, the real_node test fixture, or this after
# cluster/up.sh): containerd + runc + a kubelet built from the same wrapper module as the control plane, running
# the images `make images` built. cluster/node/down.sh (called by cluster/down.sh) stops it and restores every
# host change this script makes, recorded in .cluster/node/host-state.env before the first one.
#
# Networking keeps every packet on the machine: pods sit on a bridge (hpscan0, 10.234.0.0/24) that is no
# gateway and masquerades nothing; their only route is the service range via the bridge's host address; they
# get no DNS; a FORWARD rule drops whatever would be routed from or to the bridge.
# Needs root. Idempotent: what runs is left alone.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=../versions.env
source "$here/../versions.env"

dir="${HPSCAN_CLUSTER_DIR:-$repo/.cluster}"
node_dir="$dir/node"
tools="$repo/.tools/bin"
timeout_s="${HPSCAN_CLUSTER_TIMEOUT:-120}"

log() { printf '[node] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

((EUID == 0)) || die "a real node needs root (containerd, runc, cgroups, a bridge)"
[[ -f "$dir/kubeconfig" && -f "$dir/pki/ca.key" ]] || die "no control plane in $dir: run cluster/up.sh first"
for tool in kubelet kube-proxy; do
  [[ -x "$tools/$tool" ]] || die "$tools/$tool is missing: run 'cluster/build-tools.sh --node'"
done

mkdir -p "$node_dir/run" "$node_dir/logs"
exec 6>"$node_dir/lock"
flock 6

# Settings are chosen once and remembered (a restarted node keeps its certificates and addresses).
if [[ ! -f "$node_dir/node.env" ]]; then
  cat > "$node_dir/node.env" <<ENV
NODE_NAME=${HPSCAN_NODE_NAME:-hpscan-real-0}
BRIDGE=${HPSCAN_NODE_BRIDGE:-hpscan0}
NODE_NET=${HPSCAN_NODE_NET:-10.234.0}
KUBELET_PORT=${HPSCAN_KUBELET_PORT:-10250}
KUBE_PROXY_HEALTHZ_PORT=${HPSCAN_KUBE_PROXY_HEALTHZ_PORT:-10256}
KUBE_PROXY_METRICS_PORT=${HPSCAN_KUBE_PROXY_METRICS_PORT:-10249}
NODE_GPUS=${HPSCAN_NODE_GPUS:-4}
ENV
fi
# shellcheck disable=SC1091
source "$node_dir/node.env"
node_ip="$NODE_NET.1"
sock="$node_dir/containerd.sock"
kubeconfig="$dir/kubeconfig"
kubectl() { "$tools/kubectl" --kubeconfig "$kubeconfig" "$@"; }
ctr() { command ctr --address "$sock" --namespace k8s.io "$@"; }

# --- packages -------------------------------------------------------------------------------------------
missing=()
for pair in containerd:containerd ctr:containerd runc:runc /usr/lib/cni/bridge:containernetworking-plugins \
  iptables:iptables; do
  name="${pair%%:*}"
  if [[ "$name" == /* ]]; then [[ -x "$name" ]] || missing+=("${pair#*:}"); else
    command -v "$name" >/dev/null || missing+=("${pair#*:}")
  fi
done
if ((${#missing[@]})); then
  log "installing ${missing[*]} (apt-get)"
  apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

# One real node per machine: the bridge, its address and the kubelet's port are the machine's.
for pid in $(pgrep -x kubelet || true); do
  grep -qaF "$node_dir" "/proc/$pid/cmdline" 2>/dev/null ||
    die "another kubelet runs on this machine (pid $pid: $(tr '\0' ' ' < "/proc/$pid/cmdline" | cut -c1-120))"
done

# --- what the host looks like before we touch it (kept until down.sh has restored it) -------------------
state="$node_dir/host-state.env"
fixed_paths=(/var/lib/kubelet /var/log/containers /var/log/pods /run/containerd /run/netns /var/lib/cni
  /var/lib/cni/results)
# Sysctls the kubelet sets (kernel.panic=10, kernel.panic_on_oops=1, vm.overcommit_memory=1) and those
# kube-proxy may touch (route_localnet, conntrack); ip_forward is never changed, only checked.
sysctls=(kernel.panic kernel.panic_on_oops vm.overcommit_memory net.ipv4.ip_forward
  net.ipv4.conf.all.route_localnet net.bridge.bridge-nf-call-iptables net.netfilter.nf_conntrack_max
  net.netfilter.nf_conntrack_tcp_timeout_established net.netfilter.nf_conntrack_tcp_timeout_close_wait)
if [[ ! -f "$state" ]]; then
  for key in "${sysctls[@]}"; do
    value="$(sysctl -n "$key" 2>/dev/null)" && printf '%s %s\n' "$key" "$value"
  done > "$node_dir/host-sysctls"
  {
    i=0
    for path in "${fixed_paths[@]}"; do
      printf 'PATH_%d=%q\nPATH_%d_EXISTED=%s\n' "$i" "$path" "$i" "$([[ -e "$path" ]] && echo 1 || echo 0)"
      i=$((i + 1))
    done
    printf 'BRIDGE_EXISTED=%s\n' "$(ip link show "$BRIDGE" >/dev/null 2>&1 && echo 1 || echo 0)"
  } > "$state.tmp"
  ls /run/netns 2>/dev/null > "$node_dir/netns.before" || true
  iptables-save > "$node_dir/iptables.before" 2>/dev/null || true
  mv "$state.tmp" "$state"
  log "host state recorded in $state"
fi

# --- network: a bridge that is nobody's gateway --------------------------------------------------------
if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
  ip link add "$BRIDGE" type bridge
fi
addresses="$(ip -o -4 addr show dev "$BRIDGE")"  # (not piped into grep -q: pipefail and SIGPIPE)
[[ "$addresses" == *" $node_ip/24 "* ]] || ip addr add "$node_ip/24" dev "$BRIDGE"
ip link set "$BRIDGE" up
for direction in -i -o; do
  rule=(FORWARD "$direction" "$BRIDGE" -m comment --comment hpscan-real-node -j DROP)
  iptables -C "${rule[@]}" 2>/dev/null || iptables -I "${rule[@]}"
done

mkdir -p "$node_dir/cni/net.d" "$node_dir/cni/ipam"
cat > "$node_dir/cni/net.d/10-hpscan.conflist" <<CNI
{
  "cniVersion": "1.0.0",
  "name": "hpscan",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": false,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "dataDir": "$node_dir/cni/ipam",
        "ranges": [[{"subnet": "$NODE_NET.0/24", "rangeStart": "$NODE_NET.10", "gateway": "$node_ip"}]],
        "routes": [{"dst": "10.0.0.0/24"}]
      }
    }
  ]
}
CNI

# --- certificates: the kubelet's client identity (system:node:NAME) and its serving certificate ----------
pki="$node_dir/pki"
mkdir -p "$pki"
if [[ ! -f "$pki/kubelet-client.crt" ]]; then
  (
    cd "$pki"
    printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' > client.ext
    openssl req -newkey rsa:2048 -nodes -subj "/O=system:nodes/CN=system:node:$NODE_NAME" \
      -keyout kubelet-client.key -out kubelet-client.csr 2>/dev/null
    openssl x509 -req -in kubelet-client.csr -CA "$dir/pki/ca.crt" -CAkey "$dir/pki/ca.key" -CAcreateserial \
      -days 3650 -extfile client.ext -out kubelet-client.crt 2>/dev/null
    printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:%s,DNS:%s\n' \
      "$node_ip" "$NODE_NAME" > serving.ext
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$NODE_NAME" -keyout kubelet.key -out kubelet.csr 2>/dev/null
    openssl x509 -req -in kubelet.csr -CA "$dir/pki/ca.crt" -CAkey "$dir/pki/ca.key" -CAcreateserial \
      -days 3650 -extfile serving.ext -out kubelet.crt 2>/dev/null
    rm -f ./*.csr
  )
fi
server="$(awk '$1 == "server:" {print $2; exit}' "$kubeconfig")"
cat > "$node_dir/kubelet.kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: hpscan-local
  cluster: {server: "$server", certificate-authority: "$dir/pki/ca.crt"}
users:
- name: $NODE_NAME
  user: {client-certificate: "$pki/kubelet-client.crt", client-key: "$pki/kubelet-client.key"}
contexts:
- name: node
  context: {cluster: hpscan-local, user: $NODE_NAME}
current-context: node
KUBECONFIG

# --- images: the pod sandbox (pause) and the repository's images ----------------------------------------
"$repo/cluster/images/build.sh"
pause_image="localhost/hpscan/pause:$K8S_VERSION"
pause_src="$(go env GOMODCACHE)/k8s.io/kubernetes@$K8S_VERSION/build/pause/linux/pause.c"
pause_key="$( (sha256sum < "$pause_src"; echo "gcc -static -O2; v1") | sha256sum | cut -c1-16)"
if [[ "$(buildah inspect --type image --format '{{index .OCIv1.Config.Labels "io.hpscan.build-key"}}' "$pause_image" 2>/dev/null)" != "$pause_key" ]]; then
  [[ -f "$pause_src" ]] || die "$pause_src is missing (run 'make tools': it downloads the Kubernetes module)"
  log "building $pause_image from Kubernetes' build/pause/linux/pause.c"
  work="$(mktemp -d)"
  gcc -static -O2 -DVERSION="$K8S_VERSION" -o "$work/pause" "$pause_src"
  strip "$work/pause"
  ctr_id="$(buildah from scratch)"
  buildah copy --quiet "$ctr_id" "$work/pause" /pause >/dev/null
  buildah config --entrypoint '["/pause"]' --user 65535:65535 --label "io.hpscan.build-key=$pause_key" "$ctr_id"
  buildah commit --quiet --format docker --rm "$ctr_id" "$pause_image" >/dev/null
  rm -rf "$work"
fi

# --- containerd ----------------------------------------------------------------------------------------
mkdir -p "$node_dir/containerd"
cat > "$node_dir/containerd/config.toml" <<TOML
# Generated by cluster/node/up.sh. Paths under $node_dir, not /var/lib/containerd and /run/containerd.
version = 2
root = "$node_dir/containerd/root"
state = "$node_dir/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "$sock"

[ttrpc]
  address = "$node_dir/containerd-ttrpc.sock"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$node_dir/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause_image"
  # root here lacks CAP_SYS_RESOURCE: runc cannot lower /proc/self/oom_score_adj, and every sandbox failed
  # with "can't get final child's PID from pipe: EOF" until this (and the kubelet's oomScoreAdj: 0).
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$node_dir/containerd/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$node_dir/cni/net.d"
    max_conf_num = 1
TOML

# alive NAME: its pid runs and its command line names this node's folder.
alive() {
  local pid
  pid="$(cat "$node_dir/run/$1.pid" 2>/dev/null)" || return 1
  grep -qaF "$node_dir" "/proc/$pid/cmdline" 2>/dev/null
}
start() {
  local name="$1"; shift
  if alive "$name"; then return; fi
  log "starting $name (log: $node_dir/logs/$name.log)"
  setsid "$@" >>"$node_dir/logs/$name.log" 2>&1 < /dev/null 6>&- 9>&- &
  echo $! > "$node_dir/run/$name.pid"
}
wait_for() {
  local what="$1"; shift
  local deadline=$((SECONDS + timeout_s))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "timed out after ${timeout_s}s waiting for $what (logs: $node_dir/logs/)"
    sleep 0.5
  done
}

start containerd containerd --config "$node_dir/containerd/config.toml"
wait_for containerd ctr version

# Images move in as docker archives (an oci-archive from buildah is imported without a name); each is
# imported again only when buildah's image id changed.
for image in "$pause_image" "localhost/hpscan/dl1-payload:dev" "localhost/hpscan/dl1-gpu-check:dev" \
  "localhost/hpscan/operator:dev"; do
  id="$(buildah inspect --type image --format '{{.FromImageID}}' "$image")"
  record="$node_dir/containerd/imported-$(echo "$image" | tr '/:' '__')"
  if [[ "$(cat "$record" 2>/dev/null)" == "$id" && -n "$(ctr images ls -q "name==$image")" ]]; then continue; fi
  log "importing $image into containerd"
  import_start=$SECONDS
  archive="$node_dir/containerd/import.tar"
  rm -f "$archive"
  buildah push --quiet "$image" "docker-archive:$archive:$image" >/dev/null
  ctr images import "$archive" >/dev/null
  rm -f "$archive"
  echo "$id" > "$record"
  log "imported $image in $((SECONDS - import_start))s"
done

# --- the kubelet ---------------------------------------------------------------------------------------
mkdir -p "$node_dir/kubelet" "$node_dir/logs/pods"
cat > "$node_dir/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $node_ip
port: $KUBELET_PORT
readOnlyPort: 0
healthzPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$dir/pki/ca.crt"}
authorization: {mode: Webhook}
tlsCertFile: "$pki/kubelet.crt"
tlsPrivateKeyFile: "$pki/kubelet.key"
containerRuntimeEndpoint: "unix://$sock"
# cgroups v1 here (hybrid): allowed, with the cgroupfs driver containerd uses too.
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
# root here lacks CAP_SYS_RESOURCE (see restrict_oom_score_adj in the containerd config).
oomScoreAdj: 0
# No DNS in pods: nothing to resolve, and nothing outside to reach.
resolvConf: ""
podLogsDir: "$node_dir/logs/pods"
volumePluginDir: "$node_dir/kubelet/volume-plugins"
registerWithTaints:
- {key: nvidia.com/gpu, value: present, effect: NoSchedule}
- {key: hpscan.io/real-node, value: "true", effect: NoSchedule}
maxPods: 16
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
serializeImagePulls: false
YAML

# Labelled and tainted like the node agent's GPU node (cluster/nodes.yaml), plus its own label and taint so
# that only pods meant for a real container runtime land here.
labels="hpscan.io/real-node=true,nvidia.com/gpu.present=true,nvidia.com/gpu.product=NVIDIA-A100-SXM4-40GB"
labels+=",nvidia.com/gpu.compute.major=8,nvidia.com/gpu.compute.minor=0"
start kubelet "$tools/kubelet" --config="$node_dir/kubelet.yaml" --kubeconfig="$node_dir/kubelet.kubeconfig" \
  --hostname-override="$NODE_NAME" --node-ip="$node_ip" --root-dir="$node_dir/kubelet" \
  --cert-dir="$pki" --node-labels="$labels" --v=1

wait_for "node $NODE_NAME" kubectl get node "$NODE_NAME"
wait_for "node $NODE_NAME Ready" kubectl wait --for=condition=Ready --timeout=5s "node/$NODE_NAME"
# GPUs are advertised only (no device plugin): an extended resource on the node's status; the kubelet copies
# it to allocatable and keeps it, but a restarted kubelet needs it patched again.
kubectl patch node "$NODE_NAME" --subresource=status --type=json \
  -p "[{\"op\": \"add\", \"path\": \"/status/capacity/nvidia.com~1gpu\", \"value\": \"$NODE_GPUS\"}]" >/dev/null
gpus_allocatable() {
  [[ "$(kubectl get node "$NODE_NAME" -o jsonpath='{.status.allocatable.nvidia\.com/gpu}')" == "$NODE_GPUS" ]]
}
wait_for "nvidia.com/gpu on $NODE_NAME" gpus_allocatable
# --- pods reach the API server through the kubernetes Service ---------------------------------------------
# kube-proxy (iptables mode) rewrites 10.0.0.1:443 to the bridge address; apiforward.py carries that on to the
# API server on 127.0.0.1. Nothing here masquerades, and the conntrack and route_localnet sysctls stay as
# they are (maxPerCore 0, localhostNodePorts false).
# shellcheck disable=SC1091
source "$dir/cluster.env"
start apiforward python3 "$here/apiforward.py" --listen "$node_ip:$API_PORT" --to "127.0.0.1:$API_PORT" \
  --tag "$node_dir"
kubectl apply -f - >/dev/null <<SLICE
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kubernetes-real-node
  namespace: default
  labels: {kubernetes.io/service-name: kubernetes, endpointslice.kubernetes.io/managed-by: hpscan.io-real-node}
addressType: IPv4
endpoints: [{addresses: ["$node_ip"], conditions: {ready: true}}]
ports: [{name: https, port: $API_PORT, protocol: TCP}]
SLICE
cat > "$node_dir/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: "$kubeconfig"}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $NODE_NET.0/24
bindAddress: $node_ip
healthzBindAddress: 127.0.0.1:${KUBE_PROXY_HEALTHZ_PORT:-10256}
metricsBindAddress: 127.0.0.1:${KUBE_PROXY_METRICS_PORT:-10249}
nodePortAddresses: ["$node_ip/32"]
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables: {localhostNodePorts: false, masqueradeAll: false}
YAML
start kube-proxy "$tools/kube-proxy" --config="$node_dir/kube-proxy.yaml" --v=1
kube_proxy_synced() { iptables -t nat -S KUBE-SERVICES 2>/dev/null | grep -F -- "default/kubernetes:https" >/dev/null; }
wait_for "kube-proxy's rules for the kubernetes Service" kube_proxy_synced

for name in containerd kubelet apiforward kube-proxy; do
  alive "$name" || die "$name exited (log: $node_dir/logs/$name.log)"
done
log "ready: node $NODE_NAME ($node_ip, $NODE_GPUS nvidia.com/gpu advertised; logs: $node_dir/logs/)"
