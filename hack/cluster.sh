#!/usr/bin/env bash
# A single-node Kubernetes cluster built from source, for `make dev` and the
# end-to-end suite. Runs as root on a Linux machine with cgroups; needs no
# image registry and no Docker engine.
#
#   hack/cluster.sh up       # start etcd, the control plane, containerd, kubelet, kube-proxy
#   hack/cluster.sh import   # (re)import bin/images/*.tar into the cluster's containerd
#   hack/cluster.sh down     # stop everything by pid, unmount, remove interfaces and state
#   hack/cluster.sh status   # which components run
#
# Every address lives on interfaces this script creates and removes, taken
# from 198.18.0.0/15 (reserved for network benchmarking), so no cluster
# traffic can reach a private or public network:
#   node      198.18.0.1/32   on mfdev0, a bridge without ports (no dummy module in containers)
#   pods      198.18.1.0/24   on the bridge mfbr0 (CNI bridge + host-local)
#   services  198.18.16.0/20  (the kubernetes Service is 198.18.16.1)
# State, logs and the kubeconfig live in bin/dev/ (MEDIAFLEET_DEV_DIR).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${MEDIAFLEET_DEV_DIR:-$ROOT/bin/dev}"
NODE_NAME="mediafleet-dev"
NODE_IF="mfdev0"
NODE_IP="198.18.0.1"
BRIDGE="mfbr0"
POD_CIDR="198.18.1.0/24"
POD_GW="198.18.1.1"
SVC_CIDR="198.18.16.0/20"
# The whole benchmarking range: nothing addressed inside it may leave this
# machine by the default route.
DEV_RANGE="198.18.0.0/15"
GUARD_CHAIN="MEDIAFLEET-DEV-GUARD"
API_SVC_IP="198.18.16.1"
API_PORT=6443
ETCD_CLIENT="http://127.0.0.1:12379"
ETCD_PEER="http://127.0.0.1:12380"
CNI_BIN="/usr/lib/cni"
CTR_SOCK="$STATE/containerd/containerd.sock"
KUBECONFIG_FILE="$STATE/kubeconfig"
# Paths outside the state directory that containerd, the CNI plugins and the
# kubelet use whatever they are told: removed by down when up created them.
HOST_DIRS=(/run/netns /run/containerd /var/lib/cni /var/lib/kubelet /var/log/containers /var/log/pods)

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- processes

pidfile() { echo "$STATE/run/$1.pid"; }
logfile() { echo "$STATE/logs/$1.log"; }

running() {
	local f
	f="$(pidfile "$1")"
	[[ -f "$f" ]] && kill -0 "$(cat "$f")" 2>/dev/null
}

# start NAME CMD... runs a component in its own session, logging to
# bin/dev/logs/NAME.log and remembering its pid.
start() {
	local name="$1"
	shift
	if running "$name"; then
		log "$name already running (pid $(cat "$(pidfile "$name")"))"
		return
	fi
	setsid "$@" >"$(logfile "$name")" 2>&1 </dev/null &
	echo $! >"$(pidfile "$name")"
	log "started $name (pid $!, log $(logfile "$name"))"
}

# fail NAME MESSAGE names the component that failed and where its log is.
fail() {
	log "ERROR: $1 $2"
	log "last lines of $(logfile "$1"):"
	tail -25 "$(logfile "$1")" >&2 || true
	exit 1
}

# wait_for NAME SECONDS CHECK... polls CHECK until it succeeds, failing with
# the component's log when the process dies or time runs out.
wait_for() {
	local name="$1" secs="$2" start=$SECONDS
	shift 2
	until "$@" >/dev/null 2>&1; do
		running "$name" || fail "$name" "exited during start-up"
		((SECONDS - start < secs)) || fail "$name" "not healthy after ${secs}s"
		sleep 0.5
	done
	log "$name ready after $((SECONDS - start))s"
}

stop() {
	local name="$1" f pid i t0=$SECONDS
	f="$(pidfile "$name")"
	[[ -f "$f" ]] || return 0
	pid="$(cat "$f")"
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < 100; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
		log "stopped $name (pid $pid, $((SECONDS - t0))s)"
	fi
	rm -f "$f"
}

# write FILE writes stdin to FILE only when it differs: a running kube-proxy
# exits when its configuration file is rewritten, even with the same text.
write() {
	local tmp
	tmp="$(mktemp "$1.XXXX")"
	cat >"$tmp"
	if cmp -s "$tmp" "$1"; then
		rm -f "$tmp"
	else
		mv "$tmp" "$1"
	fi
}

kc() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" "$@"; }
ctr_() { ctr --address "$CTR_SOCK" -n k8s.io "$@"; }

# ---------------------------------------------------------------- set-up

# host_packages installs what the node needs from Debian when missing.
host_packages() {
	local missing=()
	command -v containerd >/dev/null || missing+=(containerd)
	command -v runc >/dev/null || missing+=(runc)
	[[ -x "$CNI_BIN/bridge" ]] || missing+=(containernetworking-plugins)
	command -v iptables >/dev/null || missing+=(iptables)
	command -v ip >/dev/null || missing+=(iproute2)
	command -v conntrack >/dev/null || missing+=(conntrack)
	command -v openssl >/dev/null || missing+=(openssl)
	command -v curl >/dev/null || missing+=(curl)
	((${#missing[@]} == 0)) && return
	log "installing ${missing[*]} with apt-get"
	command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
	{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"; } \
		>"$STATE/logs/apt.log" 2>&1 || { tail -20 "$STATE/logs/apt.log" >&2; die "apt-get install failed (log: $STATE/logs/apt.log)"; }
}

sysctl_set() {
	local key="$1" want="$2" path="/proc/sys/${1//.//}"
	[[ -w "$path" ]] || die "cannot write $path (needs root and a writable /proc/sys)"
	if [[ "$(cat "$path")" != "$want" ]]; then
		# Remember the first value seen so `down` can restore it.
		[[ -f "$STATE/run/sysctl.$key" ]] || cat "$path" >"$STATE/run/sysctl.$key"
		echo "$want" >"$path"
	fi
}

network_up() {
	if ! ip link show "$NODE_IF" >/dev/null 2>&1; then
		ip link add "$NODE_IF" type bridge
		echo "$NODE_IF" >>"$STATE/run/links"
	fi
	ip addr replace "$NODE_IP/32" dev "$NODE_IF"
	ip link set "$NODE_IF" up
	guard_up
	echo "$BRIDGE" >>"$STATE/run/links" # the CNI bridge plugin creates it with the first pod
	[[ -d /proc/sys/net/bridge ]] || { command -v modprobe >/dev/null && modprobe br_netfilter; } || true
	[[ -d /proc/sys/net/bridge ]] || die "bridge netfilter (br_netfilter) is not loaded and could not be: run modprobe br_netfilter"
	sysctl_set net.ipv4.ip_forward 1
	sysctl_set net.bridge.bridge-nf-call-iptables 1
	mkdir -p "$STATE/cni/net.d" "$STATE/cni/ipam"
	write "$STATE/cni/net.d/10-mediafleet.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "mediafleet-dev",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$STATE/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GW"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "loopback"}
  ]
}
EOF
}

# cert NAME CN O [SAN] signs a certificate with the cluster CA.
cert() {
	local name="$1" cn="$2" o="$3" san="${4:-}" dir="$STATE/pki"
	[[ -f "$dir/$name.crt" ]] && return
	openssl ecparam -name prime256v1 -genkey -noout -out "$dir/$name.key" 2>/dev/null
	local subj="/CN=$cn"
	[[ -n "$o" ]] && subj="/O=$o/CN=$cn"
	openssl req -new -key "$dir/$name.key" -subj "$subj" -out "$dir/$name.csr" 2>/dev/null
	{
		echo "basicConstraints=CA:FALSE"
		echo "keyUsage=critical,digitalSignature,keyEncipherment"
		echo "extendedKeyUsage=serverAuth,clientAuth"
		[[ -n "$san" ]] && echo "subjectAltName=$san"
	} >"$dir/$name.ext"
	openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
		-days 3650 -extfile "$dir/$name.ext" -out "$dir/$name.crt" 2>/dev/null
	rm -f "$dir/$name.csr" "$dir/$name.ext"
}

pki() {
	local dir="$STATE/pki"
	mkdir -p "$dir"
	if [[ ! -f "$dir/ca.crt" ]]; then
		openssl ecparam -name prime256v1 -genkey -noout -out "$dir/ca.key" 2>/dev/null
		openssl req -x509 -new -key "$dir/ca.key" -subj "/CN=mediafleet-dev-ca" -days 3650 \
			-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
			-out "$dir/ca.crt" 2>/dev/null
	fi
	cert apiserver kube-apiserver "" \
		"IP:$NODE_IP,IP:$API_SVC_IP,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
	cert admin admin system:masters
	cert kubelet "system:node:$NODE_NAME" system:nodes "IP:$NODE_IP,DNS:$NODE_NAME"
	if [[ ! -f "$dir/sa.key" ]]; then
		openssl ecparam -name prime256v1 -genkey -noout -out "$dir/sa.key" 2>/dev/null
		openssl ec -in "$dir/sa.key" -pubout -out "$dir/sa.pub" 2>/dev/null
	fi
	kubeconfig "$KUBECONFIG_FILE" admin
	kubeconfig "$STATE/kubelet.kubeconfig" kubelet
}

# kubeconfig FILE CERT writes a kubeconfig for the node address.
kubeconfig() {
	cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: mediafleet-dev
  cluster:
    server: https://$NODE_IP:$API_PORT
    certificate-authority: $STATE/pki/ca.crt
users:
- name: $2
  user:
    client-certificate: $STATE/pki/$2.crt
    client-key: $STATE/pki/$2.key
contexts:
- name: mediafleet-dev
  context: {cluster: mediafleet-dev, user: $2}
current-context: mediafleet-dev
EOF
}

containerd_up() {
	mkdir -p "$STATE/containerd"
	write "$STATE/containerd/config.toml" <<EOF
version = 2
root = "$STATE/containerd/root"
state = "$STATE/containerd/state"
[grpc]
  address = "$CTR_SOCK"
[ttrpc]
  address = "$CTR_SOCK.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/mediafleet/pause:dev"
  # No CAP_SYS_RESOURCE here: without this every sandbox fails with
  # "can't get final child's PID from pipe".
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$STATE/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN"
    conf_dir = "$STATE/cni/net.d"
[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE/containerd/opt"
EOF
	start containerd containerd --config "$STATE/containerd/config.toml"
	wait_for containerd 30 ctr --address "$CTR_SOCK" version
}

import_images() {
	local t found=0
	for t in "$ROOT"/bin/images/*.tar; do
		[[ -f "$t" ]] || continue
		found=1
		ctr_ images import "$t" >/dev/null || die "ctr images import $t failed"
		log "imported $(basename "$t")"
	done
	((found)) || die "no image tarballs in bin/images/: run make images"
}

etcd_up() {
	start etcd "$BIN/etcd" --name default --data-dir "$STATE/etcd" \
		--listen-client-urls "$ETCD_CLIENT" --advertise-client-urls "$ETCD_CLIENT" \
		--listen-peer-urls "$ETCD_PEER" --initial-advertise-peer-urls "$ETCD_PEER" \
		--initial-cluster "default=$ETCD_PEER" --unsafe-no-fsync --log-level warn
	wait_for etcd 60 curl -fsS "$ETCD_CLIENT/health"
}

apiserver_up() {
	local p="$STATE/pki"
	start kube-apiserver "$BIN/kube-apiserver" \
		--etcd-servers "$ETCD_CLIENT" \
		--bind-address "$NODE_IP" --advertise-address "$NODE_IP" --secure-port "$API_PORT" \
		--service-cluster-ip-range "$SVC_CIDR" \
		--tls-cert-file "$p/apiserver.crt" --tls-private-key-file "$p/apiserver.key" \
		--client-ca-file "$p/ca.crt" \
		--kubelet-client-certificate "$p/admin.crt" --kubelet-client-key "$p/admin.key" \
		--service-account-issuer https://kubernetes.default.svc.cluster.local \
		--service-account-key-file "$p/sa.pub" --service-account-signing-key-file "$p/sa.key" \
		--authorization-mode Node,RBAC \
		--kubelet-preferred-address-types InternalIP \
		--allow-privileged=true \
		--profiling=false
	wait_for kube-apiserver 120 kc get --raw /readyz
}

controllers_up() {
	local p="$STATE/pki"
	start kube-controller-manager "$BIN/kube-controller-manager" \
		--kubeconfig "$KUBECONFIG_FILE" \
		--authentication-kubeconfig "$KUBECONFIG_FILE" --authorization-kubeconfig "$KUBECONFIG_FILE" \
		--bind-address 127.0.0.1 --secure-port 10257 \
		--service-account-private-key-file "$p/sa.key" --root-ca-file "$p/ca.crt" \
		--cluster-signing-cert-file "$p/ca.crt" --cluster-signing-key-file "$p/ca.key" \
		--use-service-account-credentials \
		--service-cluster-ip-range "$SVC_CIDR" \
		--leader-elect=false --controllers '*'
	start kube-scheduler "$BIN/kube-scheduler" \
		--kubeconfig "$KUBECONFIG_FILE" \
		--authentication-kubeconfig "$KUBECONFIG_FILE" --authorization-kubeconfig "$KUBECONFIG_FILE" \
		--bind-address 127.0.0.1 --secure-port 10259 --leader-elect=false
	wait_for kube-controller-manager 60 curl -fsSk https://127.0.0.1:10257/healthz
	wait_for kube-scheduler 60 curl -fsSk https://127.0.0.1:10259/healthz
}

kubelet_up() {
	mkdir -p "$STATE/kubelet"
	write "$STATE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $STATE/pki/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$CTR_SOCK
# This machine runs cgroup v1 without systemd.
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
maxPods: 60
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
syncFrequency: 10s
fileCheckFrequency: 10s
nodeStatusUpdateFrequency: 10s
shutdownGracePeriod: 0s
# Container logs stay in the state directory (/var/log/containers still gets
# the kubelet's symlinks; down removes them).
podLogsDir: $STATE/pod-logs
EOF
	start kubelet "$BIN/kubelet" --config "$STATE/kubelet.yaml" \
		--kubeconfig "$STATE/kubelet.kubeconfig" --root-dir "$STATE/kubelet" \
		--cert-dir "$STATE/kubelet/pki" \
		--hostname-override "$NODE_NAME" --node-ip "$NODE_IP" -v 1
	wait_for kubelet 90 curl -fsS http://127.0.0.1:10248/healthz
}

proxy_up() {
	write "$STATE/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $KUBECONFIG_FILE}
mode: iptables
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
clusterCIDR: $POD_CIDR
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$NODE_IP/32"]
# Leave the host's conntrack sysctls alone (read-only in containers).
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
	start kube-proxy "$BIN/kube-proxy" --config "$STATE/kube-proxy.yaml"
	wait_for kube-proxy 60 curl -fsS http://127.0.0.1:10256/healthz
}

node_ready() {
	[[ "$(kc get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')" == True ]]
}

# ---------------------------------------------------------------- tear-down

down() {
	local n t
	if [[ ! -d "$STATE" ]]; then
		log "no cluster state in $STATE: nothing to stop"
		return
	fi
	# Pod containers first, while containerd can still stop them.
	stop kube-proxy
	stop kubelet
	if running containerd; then
		# The CNI network namespaces and cached CNI results of the
		# sandboxes, removed below.
		ctr_ containers ls -q >"$STATE/run/containers" 2>/dev/null || true
		while read -r t; do
			ctr_ containers info "$t" 2>/dev/null | grep -oE '"/(var/)?run/netns/cni-[0-9a-f-]+"' | tr -d '"'
		done <"$STATE/run/containers" | sort -u >"$STATE/run/netns" || true
		for t in $(ctr_ tasks ls -q 2>/dev/null); do
			ctr_ tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true
		done
		for t in $(ctr_ tasks ls -q 2>/dev/null); do
			for ((n = 0; n < 50; n++)); do
				ctr_ tasks delete "$t" >/dev/null 2>&1 && break
				sleep 0.1
			done
		done
	fi
	for n in kube-scheduler kube-controller-manager kube-apiserver etcd containerd; do
		stop "$n"
	done
	# Shims outlive containerd: find the ones serving this cluster's socket.
	for t in $(pgrep -f "containerd-shim-runc-v2 .*-address $CTR_SOCK" || true); do
		kill -KILL "$t" 2>/dev/null || true
	done
	if [[ -x "${BIN:-}/kube-proxy" ]] && [[ -f "$STATE/kube-proxy.yaml" ]]; then
		"$BIN/kube-proxy" --cleanup >"$STATE/logs/kube-proxy-cleanup.log" 2>&1 || true
	fi
	# Mounts under the state directory (pod volumes, rootfs, shm, netns), deepest first.
	if [[ -d "$STATE" ]]; then
		awk -v s="$STATE" '$2 == s || index($2, s "/") == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
			umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "could not unmount $m"
		done
	fi
	if [[ -f "$STATE/run/netns" ]]; then
		while read -r t; do
			umount "$t" 2>/dev/null || true
			rm -f "$t"
		done <"$STATE/run/netns"
	fi
	if [[ -f "$STATE/run/containers" ]]; then
		while read -r t; do
			rm -f /var/lib/cni/results/*-"$t"-*
		done <"$STATE/run/containers"
	fi
	rm -f /var/lib/kubelet/device-plugins/kubelet.sock
	if [[ -f "$STATE/run/host-dirs" ]]; then
		while read -r t; do
			rm -rf "$t"
		done <"$STATE/run/host-dirs"
	fi
	iptables_cleanup
	guard_down
	if [[ -f "$STATE/run/links" ]]; then
		sort -u "$STATE/run/links" | while read -r n; do
			ip link del "$n" 2>/dev/null || true
		done
	fi
	for t in "$STATE"/run/sysctl.*; do
		[[ -f "$t" ]] || continue
		n="${t##*/sysctl.}"
		cat "$t" >"/proc/sys/${n//.//}" 2>/dev/null || true
	done
	for t in /var/log/containers/*.log; do
		[[ -L "$t" && "$(readlink "$t")" == "$STATE/"* ]] && rm -f "$t"
	done
	# The kubelet's cgroups (cgroupfs driver), deepest first, now empty:
	# only those up saw missing.
	if [[ -f "$STATE/run/cgroups" ]]; then
		while read -r t; do
			[[ -d "$t" ]] && find "$t" -depth -type d -exec rmdir {} + 2>/dev/null || true
		done <"$STATE/run/cgroups"
	fi
	rm -rf "$STATE"
	log "cluster down; nothing left in $STATE"
}

# guard_up keeps every packet for the cluster's address range on this
# machine. Service addresses are routed into mfdev0 (a bridge without
# ports: whatever kube-proxy does not rewrite goes nowhere) and the rest of
# 198.18.0.0/15 is unreachable; a connection to a ClusterIP kube-proxy has
# not programmed yet is refused at once (REJECT in the guard chain) instead
# of reaching whatever the default route leads to. Without this, a Service
# created moments ago was answered by a host outside the machine.
guard_up() {
	ip route replace unreachable "$DEV_RANGE"
	ip route replace "$SVC_CIDR" dev "$NODE_IF" src "$NODE_IP"
	printf '%s\n' "unreachable $DEV_RANGE" "$SVC_CIDR dev $NODE_IF" >"$STATE/run/routes"
	iptables -w -N "$GUARD_CHAIN" 2>/dev/null || iptables -w -F "$GUARD_CHAIN"
	iptables -w -A "$GUARD_CHAIN" -d "$SVC_CIDR" -p tcp -j REJECT --reject-with tcp-reset
	iptables -w -A "$GUARD_CHAIN" -d "$SVC_CIDR" -j REJECT
	for hook in OUTPUT FORWARD; do
		iptables -w -C "$hook" -j "$GUARD_CHAIN" 2>/dev/null || iptables -w -A "$hook" -j "$GUARD_CHAIN"
	done
	echo "$GUARD_CHAIN" >"$STATE/run/chains"
}

# guard_down removes what guard_up made (recorded in the state directory).
guard_down() {
	if [[ -f "$STATE/run/chains" ]]; then
		while read -r c; do
			for hook in OUTPUT FORWARD; do
				while iptables -w -D "$hook" -j "$c" 2>/dev/null; do :; done
			done
			iptables -w -F "$c" 2>/dev/null || true
			iptables -w -X "$c" 2>/dev/null || true
		done <"$STATE/run/chains"
	fi
	if [[ -f "$STATE/run/routes" ]]; then
		while read -r r; do
			# shellcheck disable=SC2086 # a route is several words
			ip route del $r 2>/dev/null || true
		done <"$STATE/run/routes"
	fi
}

# record_host_state notes, before anything starts, which iptables chains
# and kubepods cgroups the machine already has: down removes only chains
# and cgroups that appeared after this (the kubelet's and kube-proxy's),
# never a chain or cgroup of the host.
record_host_state() {
	local ipt table t
	for ipt in iptables ip6tables; do
		command -v "$ipt-save" >/dev/null || continue
		for table in filter nat mangle; do
			"$ipt-save" -t "$table" 2>/dev/null | { grep -oE '^:[^ ]+' || true; } | cut -c2- | sort -u >"$STATE/run/chains-before.$ipt.$table"
		done
	done
	: >"$STATE/run/cgroups"
	for t in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
		[[ -d "$t" && ! -e "${t}kubepods" ]] && echo "${t}kubepods" >>"$STATE/run/cgroups"
	done
	return 0
}

# iptables_cleanup removes the KUBE-* chains that appeared after up began
# (the kubelet's and kube-proxy's; kube-proxy --cleanup leaves the
# kubelet's) and the jumps into them; chains the host had before stay.
iptables_cleanup() {
	local ipt table rule c before ours
	for ipt in iptables ip6tables; do
		command -v "$ipt" >/dev/null || continue
		for table in filter nat mangle; do
			before="$STATE/run/chains-before.$ipt.$table"
			[[ -f "$before" ]] || continue
			ours="$(comm -13 "$before" <("$ipt-save" -t "$table" 2>/dev/null | { grep -oE '^:KUBE-[^ ]+' || true; } | cut -c2- | sort -u))"
			[[ -n "$ours" ]] || continue
			for c in $ours; do
				"$ipt-save" -t "$table" 2>/dev/null | { grep -E "^-A [^ ]+ .*-j $c( |\$)" || true; } | sed 's/^-A /-D /' |
					while read -r rule; do
						eval "$ipt -w -t $table $rule" 2>/dev/null || true
					done
			done
			for c in $ours; do
				"$ipt" -w -t "$table" -F "$c" 2>/dev/null || true
			done
			for c in $ours; do
				"$ipt" -w -t "$table" -X "$c" 2>/dev/null || true
			done
		done
	done
}

status() {
	local n
	for n in etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy; do
		if running "$n"; then
			printf '%-24s running (pid %s)\n' "$n" "$(cat "$(pidfile "$n")")"
		else
			printf '%-24s stopped\n' "$n"
		fi
	done
}

# rollback undoes a fresh up that failed half-way: everything it started
# and created goes, as with down. An up on a running cluster that fails
# leaves the cluster as it was.
rollback() {
	local rc=$?
	trap - EXIT
	if ((rc != 0)); then
		if [[ "${FRESH:-0}" == 1 ]]; then
			log "up failed (exit $rc): rolling back what it started; logs kept in ${STATE}-failed-logs"
			rm -rf "${STATE}-failed-logs"
			cp -r "$STATE/logs" "${STATE}-failed-logs" 2>/dev/null || true
			down || true
		else
			log "up failed (exit $rc) on a running cluster: left as it was (make dev-down removes it)"
		fi
	fi
	exit "$rc"
}

up() {
	[[ "$(id -u)" == 0 ]] || die "the local cluster needs root (it runs containerd and the kubelet)"
	FRESH=0
	if [[ ! -d "$STATE/run" ]]; then
		# A kubelet's cgroups or kube-proxy's chains on the machine mean it
		# is a node already: two would fight over them.
		if compgen -G "/sys/fs/cgroup/*/kubepods" >/dev/null || [[ -d /sys/fs/cgroup/kubepods ]] ||
			{ command -v iptables-save >/dev/null && iptables-save 2>/dev/null | grep -q '^:KUBE-'; }; then
			die "this machine already runs a kubelet or kube-proxy (kubepods cgroup or KUBE-* iptables chains); if they are left over from a crashed make dev, run make dev-down first"
		fi
		FRESH=1
	fi
	mkdir -p "$STATE/run" "$STATE/logs"
	trap rollback EXIT
	local d
	for d in "${HOST_DIRS[@]}"; do
		[[ -e "$d" ]] || grep -qx "$d" "$STATE/run/host-dirs" 2>/dev/null || echo "$d" >>"$STATE/run/host-dirs"
	done
	host_packages
	[[ "$FRESH" == 0 ]] || record_host_state
	local start=$SECONDS
	BIN="$("$ROOT/hack/controlplane.sh" kube-scheduler kubelet kube-proxy kubectl)"
	log "Kubernetes binaries ready in $((SECONDS - start))s ($BIN)"
	start=$SECONDS
	network_up
	pki
	etcd_up
	apiserver_up
	controllers_up
	containerd_up
	import_images
	kubelet_up
	proxy_up
	log "waiting for node $NODE_NAME to be Ready"
	local t=$SECONDS
	until node_ready; do
		((SECONDS - t < 120)) || fail kubelet "node $NODE_NAME not Ready after 120s"
		sleep 1
	done
	trap - EXIT
	log "cluster up in $((SECONDS - start))s; export KUBECONFIG=$KUBECONFIG_FILE"
}

BIN="$("$ROOT/hack/controlplane.sh" --dir)"
case "${1:-}" in
up) up ;;
down) down ;;
status) status ;;
import)
	mkdir -p "$STATE/logs"
	import_images
	;;
apiserver-stop) # fault tests: the control plane goes away (SIGTERM)
	stop kube-apiserver
	;;
apiserver-start)
	apiserver_up
	;;
*)
	echo "usage: $0 up|down|status|import|apiserver-stop|apiserver-start" >&2
	exit 2
	;;
esac
