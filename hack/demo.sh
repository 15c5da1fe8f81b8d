#!/usr/bin/env bash
# make demo: local cluster -> CRD + RBAC -> operator -> examples/finetunejob.yaml -> Succeeded.
#   hack/demo.sh [MANIFEST]               the demo (examples/finetunejob.yaml by default)
#   hack/demo.sh --clean-only [MANIFEST]  only remove what an earlier run left: the job, its
#                                         EvalJobs, their pods, then the output directory
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
export KUBECONFIG="$REPO/.cluster/kubeconfig"
CLEAN_ONLY=false
[ "${1:-}" = --clean-only ] && { CLEAN_ONLY=true; shift; }
MANIFEST="${1:-examples/finetunejob.yaml}"
TIMEOUT="${DEMO_TIMEOUT:-1800}"
METRICS_PORT="${KUBETUNE_METRICS_PORT:-18080}"

# A fresh run each time, also after a failed or interrupted one: the previous job, its EvalJobs
# and every pod of theirs are gone (no process still writing) before the outputs are removed.
clean_previous() {
  local evaljobs selectors=("kubetune.io/finetunejob=$NAME" "kubetune.io/promotion=$NAME") e ns=()
  [ -z "$NAMESPACE" ] || ns=(-n "$NAMESPACE")
  evaljobs="$(kubectl "${ns[@]}" get evj -l "kubetune.io/finetunejob=$NAME" -o name)"
  for e in $evaljobs; do selectors+=("kubetune.io/evaljob=${e#*/}"); done
  kubectl delete -f "$MANIFEST" --ignore-not-found --cascade=foreground --wait=true >/dev/null
  [ -z "$evaljobs" ] || kubectl "${ns[@]}" delete $evaljobs --ignore-not-found --cascade=foreground --wait=true >/dev/null
  for selector in "${selectors[@]}"; do
    kubectl "${ns[@]}" delete pods -l "$selector" --ignore-not-found --wait=true >/dev/null
  done
  rm -rf "${OUTPUT:?}"
}

if [ "$CLEAN_ONLY" = false ]; then
  bash hack/cluster/up.sh
  bash hack/operator.sh start
fi
# (Read through the API server: the kind's schema comes from the installed CRD.)
NAME="$(kubectl create --dry-run=client -o jsonpath='{.metadata.name}' -f "$MANIFEST")"
OUTPUT="$(kubectl create --dry-run=client -o jsonpath='{.spec.output.path}' -f "$MANIFEST")"
NAMESPACE="$(kubectl create --dry-run=client -o jsonpath='{.metadata.namespace}' -f "$MANIFEST")"
clean_previous
[ "$CLEAN_ONLY" = false ] || exit 0
echo "+ kubectl apply -f $MANIFEST"
kubectl apply -f "$MANIFEST"

echo "waiting for FineTuneJob/$NAME (the first run converts the GGUF model once)..."
deadline=$((SECONDS + TIMEOUT)); last=""
while :; do
  phase="$(kubectl get ftj "$NAME" -o jsonpath='{.status.phase}')"
  line="$(kubectl get ftj "$NAME" -o jsonpath='{.status.phase}: {.status.message}')"
  step="$(kubectl get ftj "$NAME" -o jsonpath='{.status.progress.step}/{.status.progress.totalSteps} ({.status.progress.percent}%) loss {.status.metrics.trainLoss}')"
  [ "${step%%/*}" != "" ] && line="$line, step $step"
  [ -n "$phase" ] && [ "$line" != "$last" ] && { echo "  $(date +%T) $line"; last="$line"; }
  case "$phase" in Succeeded|Failed) break ;; esac
  [ "$SECONDS" -lt "$deadline" ] || { echo "timed out after ${TIMEOUT}s" >&2; exit 1; }
  sleep 3
done

if [ "$phase" = Succeeded ] && [ -n "$(kubectl get ftj "$NAME" -o jsonpath='{.spec.evaluation}')" ]; then
  echo "waiting for the evaluation (base vs tuned)..."
  deadline=$((SECONDS + TIMEOUT)); last=""
  while :; do
    verdict="$(kubectl get ftj "$NAME" -o jsonpath='{.status.conditions[?(@.type=="Evaluated")].status}')"
    line="$(kubectl get evj -l kubetune.io/finetunejob="$NAME" -o jsonpath='{range .items[*]}{.metadata.name} {.status.phase} {.status.progress.percent}%  {end}')"
    [ "$line" != "$last" ] && { echo "  $(date +%T) $line"; last="$line"; }
    case "$verdict" in True|False) break ;; esac
    [ "$SECONDS" -lt "$deadline" ] || { echo "timed out after ${TIMEOUT}s" >&2; exit 1; }
    sleep 3
  done
  echo; echo "+ kubectl get evj"; kubectl get evj
fi

echo; echo "+ kubectl get ftj"; kubectl get ftj
echo; echo "+ kubectl get ftj $NAME -o yaml (status)"
kubectl get ftj "$NAME" -o json | "$REPO/.venv/bin/python" -c 'import json,sys,yaml; print(yaml.safe_dump(json.load(sys.stdin)["status"], sort_keys=False))'
echo "+ kubectl describe ftj $NAME (events)"; kubectl describe ftj "$NAME" | sed -n '/^Events:/,$p'
echo; echo "+ curl -s http://127.0.0.1:$METRICS_PORT/metrics | grep kubetune_"
curl -s "http://127.0.0.1:$METRICS_PORT/metrics" | grep '^kubetune_' | grep -v '_bucket\|_created' || true
echo
if [ "$phase" != Succeeded ]; then echo "FineTuneJob $NAME ended $phase" >&2; exit 1; fi
if [ "${verdict:-True}" != True ]; then echo "the evaluation of $NAME failed (kubectl describe evj)" >&2; exit 1; fi
echo "FineTuneJob $NAME succeeded; outputs in $OUTPUT:"; ls "$OUTPUT"
echo "The cluster and operator keep running: KUBECONFIG=$KUBECONFIG kubectl get ftj; 'make cluster-down' stops them."
