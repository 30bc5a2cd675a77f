#!/usr/bin/env bash
# Build the upstream Kubernetes components Rotor's real-cluster tiers run on, from their Go
# modules (no release download is reachable here): kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet, kube-proxy and kubectl (k8s.io/kubernetes, pinned in
# tools/kube/kubernetes/go.mod), etcd (tools/kube/etcd), containerd with its runc shim and ctr
# (tools/kube/containerd) and helm (tools/kube/helm).
#
# The binaries go to a cache outside the checkout, keyed by the wrapper modules' content and the
# Go version, and are reused: `tools/kube/build.sh` prints the folder on its last line.
#   ROTOR_KUBE_CACHE   cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/rotor-kube)
#   ROTOR_KUBE_ONLY    build only these binaries (space separated names), e.g. "kube-apiserver etcd"
# A failed step ends in one line naming it: "kube-bin: FAILED building NAME (see LOG)".
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
command -v go >/dev/null || { echo "kube-bin: FAILED: no 'go' on PATH (Go 1.24+ is needed to build the Kubernetes components)"; exit 1; }

key="$(cd "$here" && cat build.sh */go.mod */go.sum | sha256sum | cut -c1-16)-$(go env GOVERSION)"
root="${ROTOR_KUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rotor-kube}"
out="$root/$key/bin"
logs="$root/$key/logs"
mkdir -p "$out" "$logs"

kube_version="$(sed -n 's/^require k8s.io\/kubernetes \(v[0-9.]*\)$/\1/p' "$here/kubernetes/go.mod")"
kube_minor="$(echo "$kube_version" | cut -d. -f2)"
# What `kubectl version` and Helm's kubeVersion read; upstream's hack/lib/version.sh sets the same.
build_date="2000-01-01T00:00:00Z"  # fixed, so the cache key alone decides a rebuild
kube_ldflags="-s -w \
 -X k8s.io/component-base/version.gitVersion=$kube_version \
 -X k8s.io/component-base/version.gitMajor=1 \
 -X k8s.io/component-base/version.gitMinor=$kube_minor \
 -X k8s.io/component-base/version.gitTreeState=clean \
 -X k8s.io/component-base/version.buildDate=$build_date \
 -X k8s.io/client-go/pkg/version.gitVersion=$kube_version \
 -X k8s.io/client-go/pkg/version.gitMajor=1 \
 -X k8s.io/client-go/pkg/version.gitMinor=$kube_minor"
containerd_version="$(sed -n 's/^\s*github.com\/containerd\/containerd\/v2 \(v[0-9.]*\).*/\1/p' "$here/containerd/go.mod" | head -n1)"
helm_version="$(sed -n 's/^\s*helm.sh\/helm\/v4 \(v[0-9.]*\).*/\1/p' "$here/helm/go.mod" | head -n1)"

# name | module folder | package | extra go build flags
targets="
kube-apiserver|kubernetes|k8s.io/kubernetes/cmd/kube-apiserver|kube
kube-controller-manager|kubernetes|k8s.io/kubernetes/cmd/kube-controller-manager|kube
kube-scheduler|kubernetes|k8s.io/kubernetes/cmd/kube-scheduler|kube
kubectl|kubernetes|k8s.io/kubernetes/cmd/kubectl|kube
kubelet|kubernetes|k8s.io/kubernetes/cmd/kubelet|kube
kube-proxy|kubernetes|k8s.io/kubernetes/cmd/kube-proxy|kube
etcd|etcd|go.etcd.io/etcd/server/v3|plain
containerd|containerd|github.com/containerd/containerd/v2/cmd/containerd|containerd
containerd-shim-runc-v2|containerd|github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2|containerd
ctr|containerd|github.com/containerd/containerd/v2/cmd/ctr|containerd
helm|helm|helm.sh/helm/v4/cmd/helm|helm
"

started=$SECONDS
while IFS='|' read -r name dir pkg kind; do
  [ -n "$name" ] || continue
  if [ -n "${ROTOR_KUBE_ONLY:-}" ] && ! [[ " $ROTOR_KUBE_ONLY " == *" $name "* ]]; then continue; fi
  if [ -x "$out/$name" ]; then continue; fi
  case "$kind" in
    kube) flags=(-trimpath -ldflags "$kube_ldflags") ;;
    containerd) flags=(-trimpath -tags "no_btrfs" -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=$containerd_version") ;;
    helm) flags=(-trimpath -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$helm_version") ;;
    *) flags=(-trimpath -ldflags "-s -w") ;;
  esac
  step=$SECONDS
  # CGO off: static binaries, no C toolchain needed (upstream builds these the same way, the
  # kubelet included; containerd's shim needs no cgo either).
  if ! (cd "$here/$dir" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build "${flags[@]}" -o "$out/$name.tmp" "$pkg") >"$logs/$name.log" 2>&1; then
    echo "kube-bin: FAILED building $name from $pkg (see $logs/$name.log)"
    tail -n 5 "$logs/$name.log" | sed 's/^/  /' >&2
    exit 1
  fi
  mv "$out/$name.tmp" "$out/$name"
  echo "kube-bin: built $name in $((SECONDS - step)) s"
done <<<"$targets"
echo "kube-bin: binaries ready in $((SECONDS - started)) s (kubernetes $kube_version, containerd $containerd_version, helm $helm_version)"
echo "$out"
