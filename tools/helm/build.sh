#!/usr/bin/env bash
# Builds the helm client the chart tests use (tests/integration/test_chart.py) with `go install`, into the
# same folder as the Go-built Kubernetes binaries (tools/kube/build.sh), so tests find it next to kubectl.
# helm has no replace directives, so `go install pkg@version` works outside any module.
#
# Output: ${MODELREUSE_CACHE:-$HOME/.cache/modelreuse}/kube-<version>/bin/helm
# A no-op when a helm of this exact version is already there.
#
# Knobs (environment): MODELREUSE_CACHE, GO (the go command), KUBE_BUILD_P (go build -p, default 2),
# HELM_VERSION (default below).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

HELM_VERSION="${HELM_VERSION:-v3.21.4}"
# shellcheck source=../go-env.sh
source "$here/../go-env.sh" helm/build.sh
bin="$CACHE/kube-$KUBE_VERSION/bin"

have() { [ -x "$bin/helm" ] && [ "$("$bin/helm" version --template '{{.Version}}' 2>/dev/null)" = "$HELM_VERSION" ]; }

if have; then
  echo "helm $HELM_VERSION already built in $bin"
  exit 0
fi
mkdir -p "$bin"
start=$(date +%s)
echo "building helm $HELM_VERSION into $bin"
major="${HELM_VERSION#v}"; major="${major%%.*}"
mod="helm.sh/helm/v$major"
# The ldflags helm's own Makefile sets. Without them `helm version` says only "v3.21" (so the no-op check
# above could never match) and `helm template`/`helm lint` assume Kubernetes 1.20 instead of the release
# its client libraries speak (k8s.io/client-go v0.X.Y is Kubernetes 1.X).
helm_dir="$(cd / && GOFLAGS= "$GO" mod download -json "$mod@$HELM_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')"
k8s_minor="$(awk '$1 == "k8s.io/client-go" {split($2, v, "."); print v[2]}' "$helm_dir/go.mod")"
ldflags="-s -w -X $mod/internal/version.version=$HELM_VERSION"
if [ -n "$k8s_minor" ]; then
  for pkg in pkg/chartutil pkg/lint/rules; do
    ldflags+=" -X $mod/$pkg.k8sVersionMajor=1 -X $mod/$pkg.k8sVersionMinor=$k8s_minor"
  done
fi
(cd / && GOBIN="$bin" GOFLAGS= CGO_ENABLED=0 "$GO" install -p "${KUBE_BUILD_P:-2}" -trimpath \
  -ldflags "$ldflags" "$mod/cmd/helm@$HELM_VERSION")
have || { echo "helm/build.sh: built helm does not report version $HELM_VERSION" >&2; "$bin/helm" version >&2; exit 1; }
echo "helm $HELM_VERSION built in $(( $(date +%s) - start )) s"
