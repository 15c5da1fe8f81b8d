#!/usr/bin/env bash
# Starts the local Kubernetes 1.20 control plane (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler) and the node agent that plays the kubelet,
# all on loopback, with state under .cluster/ in the repo. Idempotent: what is already
# running is left alone, what died is restarted.
# See ../shared/docs/local-cluster.md for how the pieces fit.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/cluster/common.sh
source "$HERE/common.sh"

[ -x "$PYTHON" ] || { echo "ERROR: $PYTHON not found: create the venv (make install) or set KUBETUNE_PYTHON" >&2; exit 1; }
bash "$HERE/build.sh"

mkdir -p "$PKI" "$LOGS" "$PIDS" "$STATE/etcd" "$STATE/pods" "$STATE/pvcs"
chmod 700 "$STATE"

# --- credentials, made once ------------------------------------------------------------
# issue NAME CN EXT: $PKI/NAME.key and NAME.crt (CN, signed by the CA, with the extensions
# in EXT besides the common ones), unless NAME.crt exists.
issue() {
  local name="$1" cn="$2" ext="$3"
  [ -f "$PKI/$name.crt" ] && return 0
  printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
    "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid,issuer" "$ext" >"$PKI/$name.ext"
  openssl req -new -newkey rsa:2048 -nodes -keyout "$PKI/$name.key" \
      -out "$PKI/$name.csr" -subj "/CN=$cn" 2>/dev/null
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
      -CAcreateserial -days 3650 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
}

make_pki() {
  [ -f "$PKI/ca.crt" ] || openssl req -x509 -newkey rsa:2048 -nodes -days 3650 \
      -keyout "$PKI/ca.key" -out "$PKI/ca.crt" -subj "/CN=kubetune-local-ca" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
  issue apiserver kube-apiserver "extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:$SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  # The kubelet API of the node agent (container logs), and the API server's client
  # certificate for it: the agent only checks that a client's certificate is of the CA.
  issue node-agent "$NODE_NAME" "extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:$NODE_NAME"
  issue apiserver-kubelet-client kube-apiserver-kubelet-client "extendedKeyUsage=clientAuth"
  if [ ! -f "$PKI/sa.key" ]; then
    openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
    openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  fi
  # Static bearer tokens: token,user,uid,"groups". The components get their real
  # identities so the bootstrap RBAC policy applies to them as on a real cluster.
  if [ ! -f "$PKI/tokens.csv" ]; then
    umask 077
    {
      echo "$(openssl rand -hex 24),kubetune-admin,kubetune-admin,\"system:masters\""
      echo "$(openssl rand -hex 24),system:kube-controller-manager,system:kube-controller-manager,"
      echo "$(openssl rand -hex 24),system:kube-scheduler,system:kube-scheduler,"
    } >"$PKI/tokens.csv"
    umask 022
  fi
}

token_of() { grep ",$1," "$PKI/tokens.csv" | cut -d, -f1; }

write_kubeconfig() { # file user token
  local ca; ca="$(base64 -w0 <"$PKI/ca.crt")"
  umask 077
  cat >"$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: kubetune-local
  cluster:
    server: $API_URL
    certificate-authority-data: $ca
users:
- name: $2
  user:
    token: $3
contexts:
- name: kubetune-local
  context:
    cluster: kubetune-local
    user: $2
    namespace: default
current-context: kubetune-local
KC
  umask 022
}

make_pki
write_kubeconfig "$KUBECONFIG_ADMIN" kubetune-admin "$(token_of kubetune-admin)"
write_kubeconfig "$PKI/controller-manager.kubeconfig" system:kube-controller-manager \
  "$(token_of system:kube-controller-manager)"
write_kubeconfig "$PKI/scheduler.kubeconfig" system:kube-scheduler "$(token_of system:kube-scheduler)"

# --- processes ---------------------------------------------------------------------------
# start NAME EXE ARGS...: runs EXE in its own session (so it outlives this script and a
# Ctrl-C here does not reach it), logs to $LOGS/NAME.log, pid in $PIDS/NAME.pid.
start() {
  local name="$1"; shift
  if running "$name"; then echo "  $name: running (pid $(cat "$PIDS/$name.pid"))"; return 0; fi
  # Close every inherited descriptor above stderr first: a daemon must not hold what its
  # caller had open (a lock taken with flock(1), the pipe of a CI step that waits for EOF).
  (
    for fd in /proc/$BASHPID/fd/*; do fd="${fd##*/}"; [ "$fd" -gt 2 ] && eval "exec $fd>&-" 2>/dev/null; done
    exec setsid "$@"
  ) >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$PIDS/$name.pid"
  echo "  $name: started (pid $!), log $LOGS/$name.log"
}

# wait_for WHAT SECONDS NAME CMD...: polls CMD until it succeeds; on timeout (or if the
# process NAME died) shows the end of its log and fails.
wait_for() {
  local what="$1" secs="$2" name="$3"; shift 3
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ! running "$name" || [ "$SECONDS" -ge "$deadline" ]; then
      echo "ERROR: $what not ready; last lines of $LOGS/$name.log:" >&2
      tail -25 "$LOGS/$name.log" >&2 || true
      exit 1
    fi
    sleep 0.5
  done
}

kc() { kubectl --kubeconfig "$KUBECONFIG_ADMIN" "$@" 2>/dev/null; }

# probe URL [CA]: true if URL answers 200 (TLS verified against CA when given; the
# components' own health ports use self-signed certs). Python, since curl may be missing.
probe() {
  "$PYTHON" -c 'import ssl, sys, urllib.request
ctx = ssl.create_default_context(cafile=sys.argv[2]) if len(sys.argv) > 2 else ssl._create_unverified_context()
sys.exit(urllib.request.urlopen(sys.argv[1], timeout=2, context=ctx).status != 200)' "$@"
}

echo "starting kubetune local cluster (state in $STATE)"

start etcd etcd --name kubetune --data-dir "$STATE/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "kubetune=http://127.0.0.1:$ETCD_PEER_PORT"
wait_for etcd 30 etcd probe "http://127.0.0.1:$ETCD_PORT/health"

# The endpoint reconciler is off: Endpoints may not hold loopback addresses, and the
# `kubernetes` Service is not reachable from the local "pods" anyway (they get a kubeconfig).
start kube-apiserver "$BIN/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API_PORT" --insecure-port 0 \
  --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
  --client-ca-file "$PKI/ca.crt" --token-auth-file "$PKI/tokens.csv" \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
  --authorization-mode RBAC --service-cluster-ip-range "$SERVICE_CIDR" \
  --endpoint-reconciler-type none --allow-privileged=true \
  --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
  --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority "$PKI/ca.crt" --kubelet-preferred-address-types InternalIP \
  --feature-gates TTLAfterFinished=true --cert-dir "$PKI/apiserver-generated"
wait_for kube-apiserver 90 kube-apiserver probe "$API_URL/readyz" "$PKI/ca.crt"

start kube-controller-manager "$BIN/kube-controller-manager" \
  --kubeconfig "$PKI/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$PKI/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$PKI/controller-manager.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$CM_PORT" --port 0 --cert-dir "$PKI/cm-generated" \
  --controllers '*,-nodeipam,-nodelifecycle' --leader-elect=false \
  --use-service-account-credentials=true \
  --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
  --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
  --service-cluster-ip-range "$SERVICE_CIDR" --feature-gates TTLAfterFinished=true

start kube-scheduler "$BIN/kube-scheduler" \
  --kubeconfig "$PKI/scheduler.kubeconfig" \
  --authentication-kubeconfig "$PKI/scheduler.kubeconfig" \
  --authorization-kubeconfig "$PKI/scheduler.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$SCHED_PORT" --port 0 --cert-dir "$PKI/sched-generated" \
  --leader-elect=false

# The node agent is the package hack/cluster/node_agent, run by path (its __main__.py puts
# hack/cluster on sys.path; PYTHONPATH would leak into the pods' processes).
start node-agent "$PYTHON" "$HERE/node_agent" --kubeconfig "$KUBECONFIG_ADMIN" \
  --state "$STATE" --node "$NODE_NAME" --port "$NODE_AGENT_PORT" \
  --tls-cert-file "$PKI/node-agent.crt" --tls-private-key-file "$PKI/node-agent.key" \
  --client-ca-file "$PKI/ca.crt"

wait_for kube-controller-manager 60 kube-controller-manager probe "https://127.0.0.1:$CM_PORT/healthz"
wait_for kube-scheduler 60 kube-scheduler probe "https://127.0.0.1:$SCHED_PORT/healthz"
wait_for "node $NODE_NAME" 60 node-agent \
  bash -c "kubectl --kubeconfig '$KUBECONFIG_ADMIN' get node '$NODE_NAME' \
    -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' 2>/dev/null | grep -qx True"
# Pods are refused until the namespace's service account and (in 1.20) its token exist.
wait_for "default service account" 60 kube-controller-manager \
  bash -c "kubectl --kubeconfig '$KUBECONFIG_ADMIN' -n default get sa default \
    -o jsonpath='{.secrets[0].name}' 2>/dev/null | grep -q ."
kc apply -f "$HERE/storageclass.yaml" >/dev/null

cat <<DONE
cluster ready: API $API_URL, node $NODE_NAME
  export KUBECONFIG=$KUBECONFIG_ADMIN
  logs: $LOGS/{etcd,kube-apiserver,kube-controller-manager,kube-scheduler,node-agent}.log
  pod logs: kubectl logs (the node agent serves them; files in $STATE/pods/<namespace>/<pod>/)
  stop: bash hack/cluster/down.sh   (add --purge to delete $STATE)
DONE
