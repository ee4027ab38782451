#!/usr/bin/env bash
# The local cluster's monitoring stack, every piece built from source
# through the Go module proxy and packed as an image the way the project's
# own are (no registry, no pulls):
#   the Prometheus Operator v0.85.0 and its prometheus-config-reloader,
#   Prometheus (the version whose promtool the tests use),
#   Alertmanager, and a webhook receiver (hack/alertreceiver) that records
#   every notification.
#
#   hack/monitoring.sh build    # binaries cached in bin/monitoring/, images in bin/images/
#   hack/monitoring.sh deploy   # CRDs, operator, Prometheus, Alertmanager, receiver; waits until ready
#   hack/monitoring.sh info     # where to reach them
#
# Deployed in namespace monitoring; Prometheus selects every PodMonitor and
# PrometheusRule the mediafleet operator generates (label
# app.kubernetes.io/managed-by=mediafleet, all namespaces), scrapes every 5 s
# and evaluates every 5 s. Fixed ClusterIPs from the Service range's static
# band, reachable from the host: Prometheus 198.18.16.90:9090, Alertmanager
# 198.18.16.91:9093, the receiver 198.18.16.92:9095 (GET /notifications).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
STATE="${MEDIAFLEET_DEV_DIR:-$ROOT/bin/dev}"
OUT="$ROOT/bin/monitoring"
IMAGES="$ROOT/bin/images"

OPERATOR_VERSION="$(sed -n 's/^require github.com\/prometheus-operator\/prometheus-operator \(v[0-9.]*\)$/\1/p' hack/tools/prometheus-operator/go.mod)"
PROMETHEUS_MODULE="$(sed -n 's/.*github.com\/prometheus\/prometheus \(v[0-9.]*\).*/\1/p' hack/tools/promtool/go.mod | head -1)"
# Prometheus 3.x is released as module v0.3MM.P: v0.316.0 is v3.16.0.
PROMETHEUS_VERSION="$(echo "$PROMETHEUS_MODULE" | sed -E 's/^v0\.3([0-9][0-9])\.([0-9]+)$/v3.\1.\2/; s/^v3\.0([0-9])/v3.\1/')"
ALERTMANAGER_VERSION="$(sed -n 's/^require github.com\/prometheus\/alertmanager \(v[0-9.]*\)$/\1/p' hack/tools/alertmanager/go.mod)"

PROMETHEUS_IP=198.18.16.90
ALERTMANAGER_IP=198.18.16.91
RECEIVER_IP=198.18.16.92

log() { printf '[monitoring] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# shellcheck source=hack/progress.sh
source "$ROOT/hack/progress.sh"

# gobuild NAME MODULE_DIR PACKAGE [VERSION]: builds a static binary once
# into bin/monitoring/NAME, saying every 15 s that it is still at it; with
# VERSION, the binary reports it (build info, /api/v1/status/buildinfo).
gobuild() {
	local name="$1" dir="$2" pkg="$3" version="${4:-}" t0=$SECONDS ldflags="-s -w"
	[[ -z "$version" ]] || ldflags+=" -X github.com/prometheus/common/version.Version=${version#v} -X github.com/prometheus/common/version.Branch=release -X github.com/prometheus/common/version.BuildUser=mediafleet"
	if [[ -x "$OUT/$name" ]]; then
		return
	fi
	mkdir -p "$OUT"
	log "building $name from source ($pkg)"
	with_progress "$name" "$ROOT/bin/logs/build-$name.log" \
		bash -c 'cd "$1" && CGO_ENABLED=0 go build -trimpath -ldflags "$2" -o "$3" "$4"' _ "$dir" "$ldflags" "$OUT/$name.tmp" "$pkg" ||
		die "building $name failed (log: bin/logs/build-$name.log)"
	mv "$OUT/$name.tmp" "$OUT/$name"
	log "built $name in $((SECONDS - t0))s"
}

# alertmanager_source copies the Alertmanager module to bin/src with
# placeholder pages where its web UI build would be (the module ships
# without ui/app/dist, which ui/web.go embeds); the tools module's replace
# points there.
alertmanager_source() {
	local dest="$ROOT/bin/src/alertmanager-$ALERTMANAGER_VERSION" dir d
	[[ -f "$dest/ui/app/dist/mantine/index.html" ]] && return
	dir="$(cd hack/tools/alertmanager && go mod download -json "github.com/prometheus/alertmanager@$ALERTMANAGER_VERSION" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')"
	[[ -d "$dir" ]] || die "could not download github.com/prometheus/alertmanager@$ALERTMANAGER_VERSION"
	rm -rf "$dest"
	mkdir -p "$(dirname "$dest")"
	cp -r "$dir" "$dest"
	chmod -R u+w "$dest"
	for d in elm mantine; do
		mkdir -p "$dest/ui/app/dist/$d"
		echo '<!doctype html><title>Alertmanager</title><p>Built without its web UI (mediafleet local cluster); the API is at /api/v2.' >"$dest/ui/app/dist/$d/index.html"
	done
}

# pack NAME PATH TAG: a single-layer image with bin/monitoring/NAME at PATH.
pack() {
	local name="$1" path="$2" tag="$3" tar="$IMAGES/monitoring-$1.tar"
	[[ -f "$tar" && "$tar" -nt "$OUT/$1" ]] && return
	mkdir -p "$IMAGES"
	go run ./hack/image -binary "$OUT/$name" -path "$path" -tag "$tag" -out "$tar"
}

build() {
	local t0=$SECONDS
	gobuild "prometheus-operator-$OPERATOR_VERSION" hack/tools/prometheus-operator github.com/prometheus-operator/prometheus-operator/cmd/operator "$OPERATOR_VERSION"
	gobuild "prometheus-config-reloader-$OPERATOR_VERSION" hack/tools/prometheus-operator github.com/prometheus-operator/prometheus-operator/cmd/prometheus-config-reloader "$OPERATOR_VERSION"
	gobuild "prometheus-$PROMETHEUS_VERSION" hack/tools/promtool github.com/prometheus/prometheus/cmd/prometheus "$PROMETHEUS_VERSION"
	alertmanager_source
	gobuild "alertmanager-$ALERTMANAGER_VERSION" hack/tools/alertmanager github.com/prometheus/alertmanager/cmd/alertmanager "$ALERTMANAGER_VERSION"
	rm -f "$OUT/alertreceiver"
	gobuild alertreceiver . ./hack/alertreceiver
	pack "prometheus-operator-$OPERATOR_VERSION" /bin/operator "mediafleet-dev/prometheus-operator:$OPERATOR_VERSION"
	pack "prometheus-config-reloader-$OPERATOR_VERSION" /bin/prometheus-config-reloader "mediafleet-dev/prometheus-config-reloader:$OPERATOR_VERSION"
	pack "prometheus-$PROMETHEUS_VERSION" /bin/prometheus "mediafleet-dev/prometheus:$PROMETHEUS_VERSION"
	pack "alertmanager-$ALERTMANAGER_VERSION" /bin/alertmanager "mediafleet-dev/alertmanager:$ALERTMANAGER_VERSION"
	pack alertreceiver /alertreceiver mediafleet-dev/alertreceiver:dev
	log "monitoring images ready in $((SECONDS - t0))s (bin/images/monitoring-*.tar)"
}

kc() { "$KUBECTL" --kubeconfig "$STATE/kubeconfig" "$@"; }

# digest NAME: a short digest of an image tarball built here.
digest() { sha256sum "$IMAGES/monitoring-$1.tar" | cut -c1-16; }

deploy() {
	local t0=$SECONDS crds
	KUBECTL="$("$ROOT/hack/controlplane.sh" kubectl 2>/dev/null)/kubectl"
	crds="$(cd hack/tools/prometheus-operator && go mod download -json "github.com/prometheus-operator/prometheus-operator@$OPERATOR_VERSION" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')/example/prometheus-operator-crd"
	[[ -d "$crds" ]] || die "no CRDs in the prometheus-operator module ($crds)"
	log "installing the Prometheus Operator's CRDs ($OPERATOR_VERSION)"
	kc apply --server-side --force-conflicts -f "$crds" >/dev/null
	kc wait --for condition=Established --timeout 60s crd/prometheuses.monitoring.coreos.com crd/alertmanagers.monitoring.coreos.com >/dev/null
	kc apply --server-side --force-conflicts -f "$crds/../rbac/prometheus-operator/prometheus-operator-cluster-role.yaml" \
		-f "$crds/../rbac/prometheus/prometheus-cluster-role.yaml" >/dev/null
	log "deploying the Prometheus Operator, Prometheus, Alertmanager and the receiver (namespace monitoring)"
	# Each pod template carries the digest of its image tarball: a fresh
	# build under the same tag rolls exactly the pods that run the old one
	# (through the Prometheus Operator for Prometheus and Alertmanager).
	sed -e "s|@OPERATOR_VERSION@|$OPERATOR_VERSION|g" -e "s|@PROMETHEUS_VERSION@|$PROMETHEUS_VERSION|g" \
		-e "s|@ALERTMANAGER_VERSION@|$ALERTMANAGER_VERSION|g" -e "s|@PROMETHEUS_IP@|$PROMETHEUS_IP|g" \
		-e "s|@ALERTMANAGER_IP@|$ALERTMANAGER_IP|g" -e "s|@RECEIVER_IP@|$RECEIVER_IP|g" \
		-e "s|@OPERATOR_SUM@|$(digest "prometheus-operator-$OPERATOR_VERSION")-$(digest "prometheus-config-reloader-$OPERATOR_VERSION")|g" \
		-e "s|@PROMETHEUS_SUM@|$(digest "prometheus-$PROMETHEUS_VERSION")|g" \
		-e "s|@ALERTMANAGER_SUM@|$(digest "alertmanager-$ALERTMANAGER_VERSION")|g" \
		-e "s|@RECEIVER_SUM@|$(digest alertreceiver)|g" hack/monitoring/stack.yaml |
		kc apply --server-side --force-conflicts -f - >/dev/null
	kc -n monitoring rollout status deploy/prometheus-operator --timeout 180s >/dev/null || {
		kc -n monitoring logs deploy/prometheus-operator --tail 30 >&2 || true
		die "the Prometheus Operator did not become ready"
	}
	kc -n monitoring rollout status deploy/alertreceiver --timeout 120s >/dev/null || die "the alert receiver did not become ready"
	local what
	for what in prometheus/main alertmanager/main; do
		if ! kc -n monitoring wait "$what" --for condition=Available --timeout 240s >/dev/null; then
			kc -n monitoring get pods -o wide >&2 || true
			kc -n monitoring describe "$what" >&2 || true
			die "$what did not become Available"
		fi
	done
	log "monitoring stack ready in $((SECONDS - t0))s"
}

info() {
	cat <<MSG
The monitoring stack (namespace monitoring; hack/monitoring.sh):
  Prometheus     http://$PROMETHEUS_IP:9090   e.g. curl -s 'http://$PROMETHEUS_IP:9090/api/v1/query' --data-urlencode 'query=ALERTS{mediaservice="demo"}'
                 targets: curl -s http://$PROMETHEUS_IP:9090/api/v1/targets   rules: .../api/v1/rules
  Alertmanager   http://$ALERTMANAGER_IP:9093   (API only: /api/v2/alerts)
  Notifications  curl -s http://$RECEIVER_IP:9095/notifications   (every webhook call Alertmanager made)
MSG
}

case "${1:-}" in
build) build ;;
deploy) deploy ;;
info) info ;;
*)
	echo "usage: $0 build|deploy|info" >&2
	exit 2
	;;
esac
