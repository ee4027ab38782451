#!/usr/bin/env bash
# Builds the Kubernetes control plane from source through the Go module proxy
# and caches it under bin/controlplane/<version>/. Prints the directory that
# holds the binaries (suitable for KUBEBUILDER_ASSETS) on stdout; progress
# goes to stderr.
#
#   hack/controlplane.sh                 # kube-apiserver + etcd (envtest)
#   hack/controlplane.sh kubelet ...     # extra components for a local cluster
#   hack/controlplane.sh --dir           # only print the directory (no build)
#
# The versions are the ones the helper modules require (hack/controlplane/
# kube/go.mod, hack/controlplane/etcd/go.mod): the one place to change them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
required() { awk -v m="$2" '$1 == "require" && $2 == m { print $3 } $1 == m { print $2 }' "$1" | head -1; }
KUBE_VERSION="$(required "$ROOT/hack/controlplane/kube/go.mod" k8s.io/kubernetes)"
ETCD_VERSION="$(required "$ROOT/hack/controlplane/etcd/go.mod" go.etcd.io/etcd/server/v3)"
OUT="${CONTROLPLANE_DIR:-$ROOT/bin/controlplane/$KUBE_VERSION}"
if [[ "${1:-}" == "--dir" ]]; then
	echo "$OUT"
	exit 0
fi
mkdir -p "$OUT"

components=(kube-apiserver kube-controller-manager "$@")

log() { printf '[controlplane] %s\n' "$*" >&2; }

# shellcheck source=hack/progress.sh
source "$ROOT/hack/progress.sh"

# build_with_progress NAME DIR PKG [LDFLAGS] builds one component with a
# heartbeat, so a cold build (minutes on 2 cores) never looks hung.
build_with_progress() {
	local name="$1" dir="$2" pkg="$3" ldflags="${4:-}" start=$SECONDS
	log "building $name (cold builds take minutes; log: $OUT/.build-$name.log)"
	with_progress "$name" "$OUT/.build-$name.log" \
		bash -c 'cd "$1" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $2" -o "$3" "$4"' _ "$dir" "$ldflags" "$OUT/$name.tmp" "$pkg" ||
		{ log "FAILED to build $name"; exit 1; }
	mv "$OUT/$name.tmp" "$OUT/$name"
	log "built $name in $((SECONDS - start))s"
}

kube_minor="${KUBE_VERSION#v1.}"
kube_minor="${kube_minor%%.*}"
kube_ldflags="-X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$kube_minor"
for c in "${components[@]}"; do
	if [[ -x "$OUT/$c" ]]; then
		log "$c $KUBE_VERSION cached"
		continue
	fi
	build_with_progress "$c" "$ROOT/hack/controlplane/kube" "k8s.io/kubernetes/cmd/$c" "$kube_ldflags"
done

if [[ -x "$OUT/etcd" ]]; then
	log "etcd $ETCD_VERSION cached"
else
	build_with_progress etcd "$ROOT/hack/controlplane/etcd" go.etcd.io/etcd/server/v3
fi

echo "$OUT"
