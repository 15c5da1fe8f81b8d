#!/usr/bin/env bash
# make test: starts the local cluster when it is not running, runs every test, and stops
# the cluster again only if this script started it.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
export KUBECONFIG="$REPO/.cluster/kubeconfig"
started=0
if ! kubectl get --raw /readyz >/dev/null 2>&1; then
  bash hack/cluster/up.sh
  started=1
fi
cleanup() {
  status=$?
  if [ "$started" = 1 ]; then bash hack/operator.sh stop || true; bash hack/cluster/down.sh || true; fi
  exit "$status"  # pytest's verdict, whatever the cleanup did
}
trap cleanup EXIT
# --durations: the slowest tests, named in every CI log, so the 30-minute budget can be kept.
"$REPO/.venv/bin/python" -m pytest -q -rfEs --durations=25 "$@"
