# Shared settings for up.sh / down.sh (sourced, not run).
# Ports are deliberately not the Kubernetes/etcd defaults, so nothing else collides.
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STATE="$REPO/.cluster"
PKI="$STATE/pki"
LOGS="$STATE/logs"
PIDS="$STATE/pids"
KUBECONFIG_ADMIN="$STATE/kubeconfig"
CACHE="${KUBETUNE_CACHE:-$HOME/.cache/kubetune}"
BIN="$CACHE/k8s-1.20.2/bin"
PYTHON="${KUBETUNE_PYTHON:-$REPO/.venv/bin/python}"

ETCD_PORT=23790
ETCD_PEER_PORT=23800
API_PORT=16443
CM_PORT=16257
SCHED_PORT=16259
NODE_AGENT_PORT=16250   # the node agent's kubelet API (container logs)
API_URL="https://127.0.0.1:$API_PORT"
SERVICE_CIDR=10.96.0.0/16
SERVICE_IP=10.96.0.1
NODE_NAME=kubetune-local

# Components in start order; down.sh stops them in reverse.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler node-agent)

# running NAME: true if $PIDS/NAME.pid names a live (not zombie) process that is really
# NAME (its command line mentions it), so a recycled pid is never mistaken for ours.
running() {
  local name="$1" pid want
  [ -f "$PIDS/$name.pid" ] || return 1
  pid="$(cat "$PIDS/$name.pid")"
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  [ "$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)" != Z ] || return 1
  want="$name"; [ "$name" = node-agent ] && want=hack/cluster/node_agent
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$want"
}
