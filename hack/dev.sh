#!/usr/bin/env bash
# make dev: a local single-node cluster (hack/cluster.sh) with mediafleet
# deployed in-cluster from config/default and the minimal sample serving.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
STATE="${MEDIAFLEET_DEV_DIR:-$ROOT/bin/dev}"
export KUBECONFIG="$STATE/kubeconfig"
log() { printf '[dev] %s\n' "$*" >&2; }

phase() { log "$1 ($(($SECONDS - PHASE_START))s)"; PHASE_START=$SECONDS; }
PHASE_START=$SECONDS
ALL_START=$SECONDS

log "building image tarballs (make images)"
make -s images >/dev/null
phase "images built"

was_up=0
hack/cluster.sh status | grep "^kube-apiserver  *running" >/dev/null && was_up=1
hack/cluster.sh up
phase "cluster up"
KUBECTL="$("$ROOT/hack/controlplane.sh" kubectl 2>/dev/null)/kubectl"

log "deploying the operator (config/default)"
make -s deploy KUBECTL="$KUBECTL" >/dev/null
if ((was_up)); then
	# The images were just re-imported under the same tags: restart the
	# operator so it runs the fresh build.
	"$KUBECTL" -n mediafleet-system rollout restart deploy/mediafleet-controller-manager >/dev/null
fi
if ! "$KUBECTL" -n mediafleet-system rollout status deploy/mediafleet-controller-manager --timeout 180s >/dev/null; then
	log "ERROR: the operator did not become ready; its pod and log:"
	"$KUBECTL" -n mediafleet-system get pods -o wide >&2 || true
	"$KUBECTL" -n mediafleet-system logs deploy/mediafleet-controller-manager --tail 30 >&2 || true
	exit 1
fi
phase "operator ready"

log "applying config/samples/media_v1alpha1_mediaservice_minimal.yaml"
"$KUBECTL" apply -f config/samples/media_v1alpha1_mediaservice_minimal.yaml >/dev/null
if ! "$KUBECTL" wait msvc/demo --for condition=Available --timeout 180s >/dev/null; then
	log "ERROR: MediaService demo did not become Available:"
	"$KUBECTL" describe msvc demo >&2 || true
	"$KUBECTL" get pods -o wide >&2 || true
	exit 1
fi
phase "sample Available"
log "ready in $((SECONDS - ALL_START))s"

ip="$("$KUBECTL" get svc demo -o jsonpath='{.spec.clusterIP}')"
port="$("$KUBECTL" get svc demo -o jsonpath='{.spec.ports[?(@.name=="signaling")].port}')"
"$KUBECTL" get msvc,pods -o wide
cat <<MSG

mediafleet runs in a local cluster (node 198.18.0.1, all addresses on interfaces it created).

  export KUBECONFIG=$KUBECONFIG PATH=$(dirname "$KUBECTL"):\$PATH   # kubectl v1.37.2 built here
  kubectl get msvc                        # sessions and capacity of each MediaService
  kubectl describe msvc demo              # conditions and Events
  kubectl scale msvc demo --replicas 3
  curl http://$ip:$port/                  # the demo page, through the sample's signalling Service
  go run ./cmd/mediaload -url http://$ip:$port -interfaces mfdev0,mfbr0 -duration 20s   # real WebRTC load
  make test-e2e                           # the end-to-end suite against this cluster
  make dev-down                           # stop everything, unmount, remove interfaces and state
MSG
