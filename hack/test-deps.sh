#!/usr/bin/env bash
# make test-deps-latest / test-deps-lowest: the ends of pyproject.toml's ranges, proven.
#   latest  the newest versions the registry serves today, pyproject's upper bounds lifted
#   lowest  every direct dependency at its lower bound
# Resolves the end into .deps-END/ (hack/lock.sh --ends), builds throwaway venvs from it (as
# make install does from the lock), then runs the trainer, evaluator and e2e demo tests with
# those venvs in every role: the tests, the node agent's pods (KUBETUNE_PYTHON) and the
# operator (KUBETUNE_OPERATOR_BIN). The local cluster is restarted for that and stopped after.
# Prints the versions it used; a failure here means: fix the code, or move the bound.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
END="${1:?usage: $0 latest|lowest [pytest args]}"; shift
case "$END" in latest|lowest) ;; *) echo "usage: $0 latest|lowest [pytest args]" >&2; exit 2 ;; esac
DIR="$REPO/.deps-$END"
TESTS=(tests/trainer tests/eval tests/e2e/test_finetunejob.py tests/e2e/test_evaljob.py)

rm -rf "$DIR" && mkdir -p "$DIR"
UV=.venv-tools/bin/uv PYTHON=.venv-tools/bin/python bash hack/lock.sh --ends "$DIR" "$END"
# The lower bounds must be the versions that run: raise a bound the resolver cannot reach.
[ "$END" = latest ] || .venv-tools/bin/python hack/deps.py lowest "$DIR/dev.txt"
# The venvs by make install's own rules, from the end's lock files.
make --no-print-directory LOCK_DIR="$DIR" VENV="$DIR/venv" OPERATOR_VENV="$DIR/venv-operator" \
  "$DIR/venv/.installed" "$DIR/venv-operator/.installed"

export KUBECONFIG="$REPO/.cluster/kubeconfig" KUBETUNE_PYTHON="$DIR/venv/bin/python"
export KUBETUNE_OPERATOR_BIN="$DIR/venv-operator/bin/kubetune-operator"
stop_cluster() { bash hack/operator.sh stop || true; bash hack/cluster/down.sh >/dev/null || true; }
stop_cluster
trap 'status=$?; stop_cluster; exit $status' EXIT
bash hack/cluster/up.sh

versions="$("$DIR/venv/bin/python" -c 'import importlib.metadata as m
print(", ".join(f"{n} {m.version(n)}" for n in ("torch", "transformers", "peft", "accelerate", "datasets", "evaluate", "tokenizers", "numpy", "pandas", "pyarrow", "kubernetes", "pydantic")))')"
operator_versions="$("$DIR/venv-operator/bin/python" -c 'import importlib.metadata as m
print(", ".join(f"{n} {m.version(n)}" for n in ("kopf", "kubernetes", "prometheus-client", "cryptography", "pydantic")))')"
echo "test-deps-$END: $versions; operator: $operator_versions"
"$DIR/venv/bin/python" -m pytest -q -rfEs -p no:cacheprovider "${@:-${TESTS[@]}}"
echo "test-deps-$END passed on: $versions; operator: $operator_versions"
