#!/usr/bin/env bash
# Builds the Kubernetes control plane the integration tests run (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl) from the k8s.io/kubernetes Go module pinned in go.mod next to this script,
# plus kwok (fake nodes). Everything comes through the Go module proxy; nothing else is downloaded.
#
# Output: ${MODELREUSE_CACHE:-$HOME/.cache/modelreuse}/kube-<version>/bin/
# A no-op when that folder already holds the binaries of this exact pin (stamp file).
#
# Knobs (environment): MODELREUSE_CACHE, GO (the go command), KUBE_BUILD_P (go build -p, default 2),
# KWOK_VERSION (default below).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
# shellcheck source=../go-env.sh
source "$here/../go-env.sh" kube/build.sh
root="$CACHE/kube-$KUBE_VERSION"
bin="$root/bin"
stamp="$root/stamp"
binaries=(kube-apiserver kube-controller-manager kube-scheduler kubectl kwok)
stages="$root/kwok-stages.yaml"

# The stamp names everything that decides what the binaries are.
want_stamp="kubernetes=$KUBE_VERSION kwok=$KWOK_VERSION gomod=$(cat go.mod go.sum | sha256sum | cut -c1-16)"

up_to_date() {
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want_stamp" ] || return 1
  for b in "${binaries[@]}"; do [ -x "$bin/$b" ] || return 1; done
  [ -s "$stages" ]
}

if up_to_date; then
  echo "kube tools $KUBE_VERSION (kwok $KWOK_VERSION) already built in $bin"
  exit 0
fi

mkdir -p "$root"
# One build at a time per cache (two `make test` runs in parallel would otherwise race).
exec 9>"$root/.lock"
if command -v flock >/dev/null; then flock 9; fi
if up_to_date; then
  echo "kube tools $KUBE_VERSION built by another process in $bin"
  exit 0
fi
rm -f "$stamp"
mkdir -p "$bin"

major="${KUBE_VERSION#v}"; major="${major%%.*}"
minor="${KUBE_VERSION#v*.}"; minor="${minor%%.*}"
# The module proxy does not say which git commit a version is; the release time it does say is used as
# the build date, so the build is reproducible.
build_date="$("$GO" list -m -f '{{.Time.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes 2>/dev/null || true)"
[ -n "$build_date" ] || build_date="1970-01-01T00:00:00Z"
commit="go-module-k8s.io/kubernetes@$KUBE_VERSION"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitCommit=$commit -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done

export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:-} -mod=mod"
p="${KUBE_BUILD_P:-2}"

start=$(date +%s)
echo "building Kubernetes $KUBE_VERSION control plane into $bin (first run: module download + compile, many minutes)"
# One invocation: the packages share one build cache and one dependency graph.
"$GO" build -p "$p" -trimpath -ldflags "$ldflags" -o "$bin/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kubectl
mid=$(date +%s)
echo "kubernetes binaries built in $((mid - start)) s; building kwok $KWOK_VERSION"
# kwok has no replace directives, so `go install pkg@version` works (outside this module).
(cd / && GOBIN="$bin" GOFLAGS= "$GO" install -p "$p" -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION")
# kwok alone has no built-in behaviour: its Stages (what happens to nodes and pods) come from config.
# These are the defaults kwokctl uses: nodes initialise and keep a lease, pods become Running, Job pods
# Succeeded, deleted pods go away. Taken from the same kwok module version.
kwok_dir="$(cd / && GOFLAGS= "$GO" mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')"
{
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
           pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    echo "---"
    cat "$kwok_dir/kustomize/stage/$f"
  done
} > "$stages.tmp"
mv "$stages.tmp" "$stages"
end=$(date +%s)
echo "kwok built in $((end - mid)) s"

"$bin/kubectl" version --client >/dev/null
echo "$want_stamp" > "$stamp"
echo "kube tools ready in $bin ($((end - start)) s):"
ls -l "$bin"
