#!/usr/bin/env bash
# Start a local Kubernetes control plane in the background: etcd, kube-apiserver (RBAC, service-account
# signing key), kube-controller-manager, kube-scheduler and the test node agent (a stand-in for a kubelet
# with a container runtime; HPSCAN_REAL_NODE=1 adds a real node, cluster/node/up.sh). Idempotent: components
# already running are left alone. Returns when /readyz answers and every node of the agent is Ready.
# Everything listens on 127.0.0.1 only. State, certificates and the admin kubeconfig live in .cluster/.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

dir="${HPSCAN_CLUSTER_DIR:-$repo/.cluster}"
tools="$repo/.tools/bin"
python="${HPSCAN_PYTHON:-$repo/.venv/bin/python}"
nodes_file="${HPSCAN_CLUSTER_NODES:-$here/nodes.yaml}"
timeout_s="${HPSCAN_CLUSTER_TIMEOUT:-120}"

mkdir -p "$dir/logs" "$dir/run" "$dir/pki"
# One start at a time (make cluster and several pytest sessions may race).
exec 9>"$dir/run.lock"
flock 9

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for tool in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  [[ -x "$tools/$tool" ]] || die "$tools/$tool is missing: run 'make tools' first"
done
[[ -x "$python" ]] || die "$python is missing: run 'make install' first"

# Ports are chosen once and remembered, so a restarted cluster keeps its kubeconfig.
if [[ ! -f "$dir/cluster.env" ]]; then
  cat > "$dir/cluster.env" <<ENV
ETCD_PORT=${HPSCAN_ETCD_PORT:-23790}
ETCD_PEER_PORT=${HPSCAN_ETCD_PEER_PORT:-23800}
API_PORT=${HPSCAN_API_PORT:-26443}
ENV
fi
# shellcheck disable=SC1091
source "$dir/cluster.env"
server="https://127.0.0.1:$API_PORT"

# --- certificates: one CA signs the serving certificate and the admin client certificate ---------------
pki="$dir/pki"
if [[ ! -f "$pki/admin.crt" ]]; then
  log "generating certificates and the service-account signing key"
  (
    cd "$pki"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=hpscan-local-ca" \
      -keyout ca.key -out ca.crt 2>/dev/null
    cat > serving.ext <<EXT
basicConstraints=CA:FALSE
keyUsage=digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EXT
    openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout apiserver.key -out apiserver.csr 2>/dev/null
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile serving.ext -out apiserver.crt 2>/dev/null
    printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' > client.ext
    openssl req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=hpscan-admin" -keyout admin.key -out admin.csr 2>/dev/null
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile client.ext -out admin.crt 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    rm -f ./*.csr
  )
fi

# The node agent's log endpoint (what `kubectl logs` reaches through the API server) serves with its own
# certificate; made separately so clusters created before it get one too.
if [[ ! -f "$pki/kubelet.crt" ]]; then
  (
    cd "$pki"
    printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n' > kubelet.ext
    openssl req -newkey rsa:2048 -nodes -subj "/CN=hpscan-node-agent" -keyout kubelet.key -out kubelet.csr 2>/dev/null
    openssl x509 -req -in kubelet.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile kubelet.ext -out kubelet.crt 2>/dev/null
    rm -f kubelet.csr
  )
fi

kubeconfig="$dir/kubeconfig"
cat > "$kubeconfig.tmp" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: hpscan-local
  cluster:
    server: $server
    certificate-authority: $pki/ca.crt
users:
- name: hpscan-admin
  user:
    client-certificate: $pki/admin.crt
    client-key: $pki/admin.key
contexts:
- name: hpscan-local
  context: {cluster: hpscan-local, user: hpscan-admin, namespace: default}
current-context: hpscan-local
KUBECONFIG
mv "$kubeconfig.tmp" "$kubeconfig"

# A person's `make cluster` claims the cluster: the pytest session that started it will not stop it.
[[ "${HPSCAN_CLUSTER_USER:-}" == pytest ]] || rm -f "$dir/run/started-by-pytest"

# --- processes -------------------------------------------------------------------------------------
# alive NAME: its pid runs and is ours (a zombie's or a reused pid's command line does not name $dir).
alive() {
  local pid
  pid="$(cat "$dir/run/$1.pid" 2>/dev/null)" || return 1
  grep -qaF "$dir" "/proc/$pid/cmdline" 2>/dev/null
}

# start NAME COMMAND...: run in its own session (so cluster-down can kill its whole process group).
start() {
  local name="$1"; shift
  if alive "$name"; then return; fi
  log "starting $name (log: $dir/logs/$name.log)"
  setsid "$@" >>"$dir/logs/$name.log" 2>&1 < /dev/null 9>&- &  # 9>&-: the lock stays ours
  echo $! > "$dir/run/$name.pid"
}

# wait_for WHAT COMMAND...: poll until COMMAND succeeds or the timeout passes.
wait_for() {
  local what="$1"; shift
  local deadline=$((SECONDS + timeout_s))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "timed out after ${timeout_s}s waiting for $what (logs: $dir/logs/)"
    sleep 0.5
  done
}

kubectl() { "$tools/kubectl" --kubeconfig "$kubeconfig" "$@"; }

start etcd "$tools/etcd" --name=hpscan --data-dir="$dir/etcd" \
  --listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster="hpscan=http://127.0.0.1:$ETCD_PEER_PORT" \
  --listen-metrics-urls="" --unsafe-no-fsync=true --quota-backend-bytes=2147483648
wait_for etcd curl -sf "http://127.0.0.1:$ETCD_PORT/health"

# The service CIDR is only a config value: nothing sends traffic there, pods talk to 127.0.0.1.
start kube-apiserver "$tools/kube-apiserver" \
  --etcd-servers="http://127.0.0.1:$ETCD_PORT" --bind-address=127.0.0.1 --advertise-address=127.0.0.1 \
  --secure-port="$API_PORT" --cert-dir="$pki" --tls-cert-file="$pki/apiserver.crt" \
  --tls-private-key-file="$pki/apiserver.key" --client-ca-file="$pki/ca.crt" \
  --service-cluster-ip-range=10.0.0.0/24 --endpoint-reconciler-type=none --allow-privileged=true \
  --authorization-mode=Node,RBAC --service-account-issuer="$server" \
  --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
  --kubelet-certificate-authority="$pki/ca.crt" --kubelet-client-certificate="$pki/admin.crt" \
  --kubelet-client-key="$pki/admin.key" --kubelet-preferred-address-types=InternalIP --profiling=false \
  --enable-admission-plugins=ExtendedResourceToleration
wait_for "kube-apiserver /readyz" curl -sf --cacert "$pki/ca.crt" "$server/readyz"

start kube-controller-manager "$tools/kube-controller-manager" --kubeconfig="$kubeconfig" \
  --authentication-kubeconfig="$kubeconfig" --authorization-kubeconfig="$kubeconfig" \
  --bind-address=127.0.0.1 --secure-port=0 --leader-elect=false --controllers='*' \
  --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
  --use-service-account-credentials=true \
  --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" --profiling=false

start kube-scheduler "$tools/kube-scheduler" --kubeconfig="$kubeconfig" \
  --authentication-kubeconfig="$kubeconfig" --authorization-kubeconfig="$kubeconfig" \
  --bind-address=127.0.0.1 --secure-port=0 --leader-elect=false --profiling=false

if ! alive node-agent; then
  rm -f "$dir/run/node-agent.ready"
  start node-agent env PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" "$python" -m cluster.nodeagent \
    --kubeconfig "$kubeconfig" --nodes "$nodes_file" --state-dir "$dir/pods" \
    --api-port "$API_PORT" --kubelet-version "$K8S_VERSION" --ready-file "$dir/run/node-agent.ready" \
    --tls-cert-file "$pki/kubelet.crt" --tls-key-file "$pki/kubelet.key"
  wait_for "the node agent (log: $dir/logs/node-agent.log)" test -f "$dir/run/node-agent.ready"
fi

# Ready means: every node the agent registers reports Ready, and the default ServiceAccount exists
# (pods cannot be created before the service-account controller made it).
node_names="$("$python" -c 'import sys, yaml; print(" ".join(n["name"] for n in yaml.safe_load(open(sys.argv[1]))["nodes"]))' "$nodes_file")"
for node in $node_names; do
  wait_for "node $node" kubectl get node "$node"
  wait_for "node $node Ready" kubectl wait --for=condition=Ready --timeout=5s "node/$node"
done
wait_for "the default ServiceAccount" kubectl -n default get serviceaccount default
for name in etcd kube-apiserver kube-controller-manager kube-scheduler node-agent; do
  alive "$name" || die "$name exited (log: $dir/logs/$name.log)"
done
log "ready: $server (kubeconfig: $kubeconfig; nodes: $node_names)"
# A real node (containerd + kubelet) beside the node agent's, on request (cluster/node/up.sh; the tests start
# it themselves when they need it: the real_node fixture).
if [[ "${HPSCAN_REAL_NODE:-0}" == 1 ]]; then "$here/node/up.sh"; fi
