#!/usr/bin/env bash
# Debian packages the tests use besides the cluster build's own (hack/cluster/build.sh):
# lua5.1 runs the Argo CD health checks, prometheus (with promtool) scrapes the operator and
# checks the alert rules, libtcmalloc-minimal4 is the trainer's allocator (as in its image). Installs only what is missing; run by `make install`.
set -euo pipefail
PKGS=(lua5.1 prometheus libtcmalloc-minimal4)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
[ "${#missing[@]}" -eq 0 ] && exit 0
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The tests start their own Prometheus on loopback; a service the package started is not wanted.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
  systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
