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

# shellcheck source=hack/progress.sh
source "$ROOT/hack/progress.sh"

log "building image tarballs (make images; cold: about 3 minutes)"
with_progress "make images" "$ROOT/bin/logs/images.log" make -s images
phase "images built"
if [[ "${MONITORING:-1}" != 0 ]]; then
	log "building the monitoring stack from source (hack/monitoring.sh build; cold: about 8 minutes)"
	hack/monitoring.sh build
	phase "monitoring images built"
fi

was_up=0
hack/cluster.sh status | grep "^kube-apiserver  *running" >/dev/null && was_up=1
hack/cluster.sh up
phase "cluster up"
KUBECTL="$("$ROOT/hack/controlplane.sh" kubectl 2>/dev/null)/kubectl"

if [[ "${MONITORING:-1}" != 0 ]]; then
	# Before the operator, so that it finds the Prometheus Operator's CRDs
	# at start and generates the PodMonitor and PrometheusRule at once.
	hack/monitoring.sh deploy
	phase "monitoring stack ready"
fi

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
for _ in $(seq 60); do
	ip="$("$KUBECTL" get svc demo -o jsonpath='{.spec.clusterIP}' 2>/dev/null || true)"
	[[ -n "$ip" ]] && break
	sleep 1
done
[[ -n "$ip" ]] || { log "ERROR: the sample's Service never appeared"; exit 1; }
port="$("$KUBECTL" get svc demo -o jsonpath='{.spec.ports[?(@.name=="signaling")].port}')"

# HTTPS for the sample: browsers give a page camera access only in a
# secure context. A local CA (kept in bin/pki across make dev-down, so a
# browser that trusts it keeps trusting it) signs a certificate for the
# sample Service's ClusterIP and names; the MediaService serves it from a
# kubernetes.io/tls Secret.
PKI="$ROOT/bin/pki"
mkdir -p "$PKI"
if [[ ! -s "$PKI/ca.crt" || ! -s "$PKI/ca.key" ]]; then
	openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/ca.key" 2>/dev/null
	openssl req -x509 -new -key "$PKI/ca.key" -sha256 -days 3650 -subj "/CN=mediafleet local dev CA" \
		-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$PKI/ca.crt" 2>/dev/null
	log "made a local CA: $PKI/ca.crt"
fi
sans="IP:$ip,IP:127.0.0.1,DNS:localhost,DNS:demo,DNS:demo.default,DNS:demo.default.svc,DNS:demo.default.svc.cluster.local"
if [[ ! -s "$PKI/demo.crt" ]] || ! openssl x509 -in "$PKI/demo.crt" -noout -ext subjectAltName 2>/dev/null | grep -q "IP Address:$ip\b" ||
	! openssl verify -CAfile "$PKI/ca.crt" "$PKI/demo.crt" >/dev/null 2>&1; then
	openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/demo.key" 2>/dev/null
	openssl req -new -key "$PKI/demo.key" -subj "/CN=demo.default.svc" -out "$PKI/demo.csr" 2>/dev/null
	printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n' "$sans" >"$PKI/demo.ext"
	openssl x509 -req -in "$PKI/demo.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial -days 365 -sha256 \
		-extfile "$PKI/demo.ext" -out "$PKI/demo.crt" 2>/dev/null
	log "issued a certificate for the sample ($sans)"
fi
"$KUBECTL" create secret tls demo-tls --cert "$PKI/demo.crt" --key "$PKI/demo.key" --dry-run=client -o yaml |
	"$KUBECTL" apply --server-side --field-manager mediafleet-dev -f - >/dev/null
"$KUBECTL" patch msvc demo --type merge -p '{"spec":{"signaling":{"tls":{"secretRef":{"name":"demo-tls"}}}}}' >/dev/null

# Available (ready pods that serve through the Service), then every pod of
# the sample ready and the rollout settled, so the table below is final.
settled() { # no pod of an older ReplicaSet left, as many pods as wanted
	[[ "$("$KUBECTL" get pods -l app.kubernetes.io/instance=demo --no-headers 2>/dev/null | wc -l)" == \
		"$("$KUBECTL" get msvc demo -o jsonpath='{.spec.replicas}')" ]]
}
ok=0
if "$KUBECTL" wait msvc/demo --for condition=Available --timeout 180s >/dev/null &&
	"$KUBECTL" rollout status deploy/demo --timeout 180s >/dev/null; then
	for _ in $(seq 120); do
		settled && break
		sleep 1
	done
	settled && "$KUBECTL" wait pods -l app.kubernetes.io/instance=demo --for condition=Ready --timeout 120s >/dev/null && ok=1
fi
if ((!ok)); then
	log "ERROR: MediaService demo did not become Available with all pods ready:"
	"$KUBECTL" describe msvc demo >&2 || true
	"$KUBECTL" get pods -o wide >&2 || true
	exit 1
fi
phase "sample Available (HTTPS)"
log "ready in $((SECONDS - ALL_START))s"

admins="$("$KUBECTL" get pods -l app.kubernetes.io/instance=demo -o jsonpath='{range .items[*]}http://{.status.podIP}:9090,{end}')"
"$KUBECTL" get msvc,pods -o wide
cat <<MSG

mediafleet runs in a local cluster (node 198.18.0.1, all addresses on interfaces it created).

  export KUBECONFIG=$KUBECONFIG PATH=$(dirname "$KUBECTL"):\$PATH   # the kubectl built here
  kubectl get msvc                        # sessions and capacity of each MediaService
  kubectl describe msvc demo              # conditions and Events
  kubectl scale msvc demo --replicas 3

The sample serves HTTPS with a certificate of a local CA ($PKI/ca.crt):
  https://$ip:$port/                 the demo page (publish, watch, rooms) through the sample's Service
  curl --cacert $PKI/ca.crt https://$ip:$port/
  Trust the CA in Chromium/Chrome on Linux (then restart the browser):
    certutil -d sql:\$HOME/.pki/nssdb -A -t C,, -n mediafleet-dev -i $PKI/ca.crt   # apt-get install libnss3-tools
  Firefox: Settings > Privacy & Security > Certificates > View Certificates > Authorities > Import.
  Without trusting anything: kubectl port-forward svc/demo 8443:$port, then https://localhost:8443/
  (accept the warning once); http://localhost is a secure context too, for a MediaService without TLS.

  export MEDIAFLEET_ADMIN_TOKEN=\$(kubectl get secret demo-admin-token -o jsonpath='{.data.token}' | base64 -d)   # the pods' admin token
  go run ./cmd/mediaload -url https://$ip:$port -cacert $PKI/ca.crt -admin ${admins%,} -interfaces mfdev0,mfbr0 -duration 20s
  make test-e2e                           # the end-to-end suite against this cluster
  make dev-down                           # stop everything, unmount, remove interfaces and state
MSG
if [[ "${MONITORING:-1}" != 0 ]]; then
	echo
	hack/monitoring.sh info
fi
