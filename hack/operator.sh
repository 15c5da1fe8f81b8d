#!/usr/bin/env bash
# Runs the kubetune operator as a local process against the local cluster, with the
# credentials of its own ServiceAccount, so it has exactly the RBAC of manifests/operator/
# (rendered from charts/kubetune by `make manifests`), from .venv-operator: the operator's extra
# installed alone (no torch, no Jinja), as in its image.
#   hack/operator.sh install   manifests/ without the operator Deployment: CRDs, namespace,
#                              ServiceAccount, RBAC, metrics Service (and deletes a Deployment
#                              from `kubectl apply -k manifests/`: one operator at a time)
#   hack/operator.sh start     install, then start the operator (no-op when running)
#   hack/operator.sh stop      stop the operator this script started
#   hack/operator.sh kubeconfig  write .cluster/operator.kubeconfig only
#   hack/operator.sh install-crds DIR  apply the CRDs in DIR and wait until each is Established
#
# The validating admission webhook is on, in its development mode: the operator makes its own
# CA and points ValidatingWebhookConfiguration kubetune-operator-dev at https://127.0.0.1:$KUBETUNE_WEBHOOK_PORT
# (hack/operator-dev-rbac.yaml lets its ServiceAccount create and patch it; the chart grants
# no verb on webhook configurations). The webhooks stay when it stops, as in a cluster; locally
# their failurePolicy is Ignore with a 5 s timeout, so a stopped operator lets applies through
# unchecked (a refused connection fails at once; the operator's own preflight still fails a bad
# spec without a pod when it is back, and a spec changed meanwhile never reaches a new attempt).
# manifests/ holds the in-cluster operator's webhook configuration (a Service, cert-manager's CA):
# not applied here; the local operator creates its own.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="$REPO/.cluster"
PIDFILE="$STATE/pids/operator.pid"
LOG="$STATE/logs/operator.log"
OPERATOR_KUBECONFIG="$STATE/operator.kubeconfig"
export KUBECONFIG="${KUBECONFIG:-$STATE/kubeconfig}"
METRICS_PORT="${KUBETUNE_METRICS_PORT:-18080}"
WEBHOOK_PORT="${KUBETUNE_WEBHOOK_PORT:-19443}"
WEBHOOK_CONFIGURATION=kubetune-operator-dev  # its own: the chart's (kubetune-operator, for release kubetune) never collides
OPERATOR_BIN="${KUBETUNE_OPERATOR_BIN:-$REPO/.venv-operator/bin/kubetune-operator}"

running() {
  [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null \
    && tr '\0' ' ' <"/proc/$(cat "$PIDFILE")/cmdline" | grep -q kubetune-operator
}

# install_crds DIR: apply the CRDs in DIR and wait until the API server serves each. A CRD
# just created has no status for a moment, and `kubectl wait --for=condition=Established`
# fails on that instead of waiting, so the condition is polled.
install_crds() {
  local crds crd deadline=$((SECONDS + 60))
  crds="$(kubectl apply -f "$1" -o name)"
  for crd in $crds; do
    until [ "$(kubectl get "$crd" -o jsonpath='{.status.conditions[?(@.type=="Established")].status}')" = True ]; do
      [ "$SECONDS" -lt "$deadline" ] || { echo "$crd is not Established after 60 s" >&2; exit 1; }
      sleep 0.2
    done
  done
}

install() {
  install_crds "$REPO/manifests/crds/"
  local files=() f
  for f in "$REPO"/manifests/namespace.yaml "$REPO"/manifests/operator/*.yaml; do
    case "$(basename "$f")" in deployment.yaml|certificate.yaml|webhook.yaml) ;; *) files+=(-f "$f") ;; esac
  done
  kubectl apply "${files[@]}" -f "$REPO/hack/operator-dev-rbac.yaml" >/dev/null
  # The operator runs here as a local process: the manifests' Deployment would be a second one.
  kubectl -n kubetune-system delete deployment kubetune-operator --ignore-not-found --wait=true >/dev/null
}

# A kubeconfig with the cluster of the admin one and the operator ServiceAccount's token.
write_kubeconfig() {
  local token
  token="$(kubectl -n kubetune-system create token kubetune-operator --duration=24h)"
  kubectl config view --raw --minify --flatten >"$OPERATOR_KUBECONFIG.tmp"
  local admin_user
  admin_user="$(kubectl --kubeconfig="$OPERATOR_KUBECONFIG.tmp" config view -o jsonpath='{.contexts[0].context.user}')"
  kubectl --kubeconfig="$OPERATOR_KUBECONFIG.tmp" config unset "users.$admin_user" >/dev/null
  kubectl --kubeconfig="$OPERATOR_KUBECONFIG.tmp" config set-credentials kubetune-operator --token="$token" >/dev/null
  kubectl --kubeconfig="$OPERATOR_KUBECONFIG.tmp" config set-context --current --user=kubetune-operator >/dev/null
  chmod 600 "$OPERATOR_KUBECONFIG.tmp" && mv "$OPERATOR_KUBECONFIG.tmp" "$OPERATOR_KUBECONFIG"
}

start() {
  install
  if running; then echo "operator already running (pid $(cat "$PIDFILE"))"; return; fi
  write_kubeconfig
  mkdir -p "$(dirname "$PIDFILE")" "$(dirname "$LOG")"
  KUBECONFIG="$OPERATOR_KUBECONFIG" setsid "$OPERATOR_BIN" \
    --metrics-port "$METRICS_PORT" --metrics-address 127.0.0.1 --health-port 0 \
    --webhook-port "$WEBHOOK_PORT" --webhook-address 127.0.0.1 --webhook-host 127.0.0.1 \
    --webhook-configuration "$WEBHOOK_CONFIGURATION" --webhook-failure-policy Ignore --webhook-timeout 5 \
    >>"$LOG" 2>&1 &
  echo $! >"$PIDFILE"
  for _ in $(seq 1 60); do
    curl -fs "http://127.0.0.1:$METRICS_PORT/metrics" >/dev/null && break
    running || { tail -20 "$LOG"; echo "operator exited; log: $LOG" >&2; exit 1; }
    sleep 0.5
  done
  echo "operator running (pid $(cat "$PIDFILE")), metrics on http://127.0.0.1:$METRICS_PORT/metrics," \
    "webhook on https://127.0.0.1:$WEBHOOK_PORT, log $LOG"
}

stop() {
  if running; then
    kill "$(cat "$PIDFILE")"
    for _ in $(seq 1 20); do running || break; sleep 0.5; done
    if running; then kill -9 "$(cat "$PIDFILE")"; fi
    echo "operator stopped"
  fi
  rm -f "$PIDFILE"
}

case "${1:-}" in
  install) install ;;
  install-crds) install_crds "${2:?usage: $0 install-crds DIR}" ;;
  start) start ;;
  stop) stop ;;
  kubeconfig) write_kubeconfig ;;
  *) echo "usage: $0 install|install-crds DIR|start|stop|kubeconfig" >&2; exit 2 ;;
esac
