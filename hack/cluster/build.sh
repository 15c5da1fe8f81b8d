#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager and kube-scheduler (Kubernetes 1.20.2) from
# Debian's source package, once per machine, into a cache outside the checkout.
# See ../shared/docs/local-cluster.md for why each step is needed.
set -euo pipefail

K8S_VERSION="1.20.5+really1.20.2"
CACHE="${KUBETUNE_CACHE:-$HOME/.cache/kubetune}"
BIN="$CACHE/k8s-1.20.2/bin"
WANT=(kube-apiserver kube-controller-manager kube-scheduler)

have_all() { for b in "${WANT[@]}"; do [ -x "$BIN/$b" ] || return 1; done; }
if have_all && command -v etcd >/dev/null; then
  echo "kubernetes binaries cached in $BIN"; exit 0
fi

export DEBIAN_FRONTEND=noninteractive
APT_PKGS=(etcd-server golang-go rsync jq openssl curl
          golang-github-modern-go-reflect2-dev golang-github-json-iterator-go-dev)
missing=()
for p in "${APT_PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts etcd as a system service on install; we run our own on other ports.
systemctl disable --now etcd >/dev/null 2>&1 || true

have_all && exit 0

SRC="$CACHE/src"
mkdir -p "$SRC" "$BIN"
if [ ! -f "$SRC/kubernetes_${K8S_VERSION}.orig.tar.gz" ]; then
  # A private apt sources dir with a deb-src entry, so the system's lists stay untouched.
  APTDIR="$CACHE/apt"; mkdir -p "$APTDIR/sources" "$APTDIR/lists/partial"
  cat > "$APTDIR/sources/src.sources" <<SRCS
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRCS
  APT_OPTS=(-o "Dir::Etc::SourceParts=$APTDIR/sources" -o "Dir::Etc::SourceList=/dev/null"
            -o "Dir::State::Lists=$APTDIR/lists")
  apt-get "${APT_OPTS[@]}" update -qq
  (cd "$SRC" && apt-get "${APT_OPTS[@]}" source --download-only kubernetes >/dev/null)
fi

TREE="$SRC/kubernetes-1.20.2"
if [ ! -d "$TREE/cmd" ]; then
  rm -rf "$TREE.tmp" && mkdir -p "$TREE.tmp"
  tar -xzf "$SRC/kubernetes_${K8S_VERSION}.orig.tar.gz" -C "$TREE.tmp" --strip-components=1
  # The vendored reflect2 1.0.1 crashes under Go >= 1.18: use Debian's newer sources.
  for pair in "github.com/modern-go/reflect2" "github.com/json-iterator/go"; do
    rm -rf "$TREE.tmp/vendor/$pair"
    cp -r "/usr/share/gocode/src/$pair" "$TREE.tmp/vendor/$pair"
    find "$TREE.tmp/vendor/$pair" -name '*_test.go' -delete
  done
  mv "$TREE.tmp" "$TREE"
fi

cd "$TREE"
mkdir -p .go/src/k8s.io
[ -e .go/src/k8s.io/kubernetes ] || ln -s ../../.. .go/src/k8s.io/kubernetes
echo "building kubernetes 1.20.2 control plane (a few minutes, once per machine)..."
GOPATH="$TREE/.go" GO111MODULE=off CGO_ENABLED=0 GOFLAGS= \
  make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler" >"$CACHE/build.log" 2>&1 \
  || { tail -40 "$CACHE/build.log"; exit 1; }
for b in "${WANT[@]}"; do cp "_output/local/bin/linux/amd64/$b" "$BIN/$b"; done
echo "kubernetes binaries built into $BIN"
