# Sourced by tools/kube/build.sh and tools/helm/build.sh: finds the Go toolchain and the pinned Kubernetes
# version, and names the cache folder both build into. Sets GO, KUBE_VERSION, CACHE, or exits 1 saying why.
# $1: the calling script's name, for the messages.

GO="${GO:-$(command -v go || true)}"
if [ -z "$GO" ] && [ -x /usr/local/go/bin/go ]; then GO=/usr/local/go/bin/go; fi
if [ -z "$GO" ]; then
  echo "$1: no Go toolchain found (install Go >= 1.24, or set GO=/path/to/go)" >&2
  exit 1
fi

_kube_mod="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/kube/go.mod"
KUBE_VERSION="$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$_kube_mod")"
if [ -z "$KUBE_VERSION" ]; then
  echo "$1: cannot read the k8s.io/kubernetes version from $_kube_mod" >&2
  exit 1
fi
CACHE="${MODELREUSE_CACHE:-$HOME/.cache/modelreuse}"
