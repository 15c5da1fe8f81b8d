#!/usr/bin/env bash
# Stops what up.sh started, by pid: the node agent (which stops its pods' processes), any
# pod process it left behind, then the control plane. Keeps .cluster/ so the next up.sh is
# quick (etcd data, certs); `down.sh --purge` deletes it.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/cluster/common.sh
source "$HERE/common.sh"

purge=false
case "${1:-}" in
  --purge) purge=true ;;
  "") ;;
  *) echo "usage: $0 [--purge]" >&2; exit 2 ;;
esac

# stop NAME: SIGTERM, up to 20 s to exit, then SIGKILL.
stop() {
  local name="$1" pid
  if ! running "$name"; then rm -f "$PIDS/$name.pid"; return 0; fi
  pid="$(cat "$PIDS/$name.pid")"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do running "$name" || break; sleep 0.2; done
  if running "$name"; then echo "  $name: did not exit, killing"; kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$PIDS/$name.pid"
  echo "  $name: stopped"
}

# Pod processes the agent could not stop (if it died): each pid file holds
# "pid starttime"; the start time guards against a recycled pid.
stop_leftover_pods() {
  local f pid start now
  [ -d "$STATE/pods" ] || return 0
  while IFS= read -r -d '' f; do
    read -r pid start <"$f" || continue
    now="$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f20)" || true
    if [ -n "$pid" ] && [ "$now" = "$start" ]; then
      echo "  killing leftover pod process group $pid ($f)"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
  done < <(find "$STATE/pods" -name '*.pid' -print0)
}

echo "stopping kubetune local cluster"
stop node-agent
stop_leftover_pods
for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
  [ "${COMPONENTS[$i]}" = node-agent ] || stop "${COMPONENTS[$i]}"
done

if $purge; then
  rm -rf "$STATE"
  echo "deleted $STATE"
fi
