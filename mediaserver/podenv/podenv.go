// Package podenv is the first contract between the operator and the
// mediaserver: the environment variables the operator sets on media pods and
// the mediaserver reads at start. It has no dependencies so that both halves
// can import it.
//
// The names follow the seed service (PORT, STUN_SERVERS, ICE_PORT_MIN,
// ICE_PORT_MAX); list values are comma separated, durations use Go syntax
// ("30s"), booleans "true"/"false".
package podenv

import "strconv"

const (
	// Port is the public signalling port (WHIP/WHEP, WebSocket, demo page).
	Port = "PORT"
	// AdminPort serves /metrics, /healthz, /readyz, /status and pprof.
	AdminPort = "ADMIN_PORT"
	// AdminToken is the shared secret of a MediaService's pods and the
	// operator (a Secret the operator creates). Everything on the admin
	// port but /healthz, /readyz and /metrics needs
	// "Authorization: Bearer <ADMIN_TOKEN>", and pods forwarding signalling
	// to each other prove themselves with it (statusapi.PodTokenHeader).
	// Unset (a mediaserver run by hand): the admin port binds loopback only
	// and serves without authentication, and no room is forwarded.
	AdminToken = "ADMIN_TOKEN"
	// ListenHost is the address the public signalling port binds (empty:
	// every interface, which kubectl port-forward needs).
	ListenHost = "LISTEN_HOST"
	// AdminListenHost is the address the admin port binds. The operator
	// sets the pod's IP (the node's on hostNetwork), so the admin port is
	// never on a node's other interfaces.
	AdminListenHost = "ADMIN_LISTEN_HOST"
	// AllowedOrigins is a comma-separated list of origins accepted by the
	// WebSocket upgrade and CORS ("*" allows any).
	AllowedOrigins = "ALLOWED_ORIGINS"
	// AuthToken, when set, is the bearer token required on WHIP, WHEP and
	// WebSocket requests. The operator fills it from a Secret.
	AuthToken = "AUTH_TOKEN"

	// TLSCertFile and TLSKeyFile, when both set, make the signalling port
	// serve HTTPS and WSS with this PEM certificate chain and key. The
	// files are re-read when they change (a Secret volume the kubelet
	// updates), so certificate renewals need no restart.
	TLSCertFile = "TLS_CERT_FILE"
	TLSKeyFile  = "TLS_KEY_FILE"

	// ICEPortMin and ICEPortMax bound the UDP ports used by ICE host
	// candidates (one port per session and interface).
	ICEPortMin = "ICE_PORT_MIN"
	ICEPortMax = "ICE_PORT_MAX"
	// ICEUDPMuxPort, when set, makes every session share this one UDP port.
	ICEUDPMuxPort = "ICE_UDP_MUX_PORT"
	// STUNServers is a comma-separated list of stun:/stuns: URLs.
	STUNServers = "STUN_SERVERS"
	// BroadcastRooms is a comma-separated list of room names, or prefixes
	// ending in '*', whose viewers are served by relay pods first.
	BroadcastRooms = "BROADCAST_ROOMS"
	// TURNServerCount is the number of TURN servers described by the
	// TURN_<i>_URLS / TURN_<i>_USERNAME / TURN_<i>_PASSWORD (or
	// TURN_<i>_SECRET and TURN_<i>_TTL) variables.
	TURNServerCount = "TURN_SERVER_COUNT"
	// ICEIPs is a comma-separated list of the local addresses ICE gathers
	// on (empty: every interface). The operator sets the node's address on
	// hostNetwork pods, so that a node's other interfaces (bridges, other
	// networks) are never offered to clients and each session takes one
	// port of the range, not one per interface.
	ICEIPs = "ICE_IPS"
	// PublicIPs is a comma-separated list of addresses written into ICE
	// host candidates in place of the pod's own address.
	PublicIPs = "PUBLIC_IPS"
	// PublicIPFile names a file holding the address to advertise (the
	// node's ExternalIP, published by the operator in a ConfigMap). The
	// mediaserver waits a short while for it to appear.
	PublicIPFile = "PUBLIC_IP_FILE"

	// MaxSessions is the per-pod session limit (503 + Retry-After beyond it).
	MaxSessions = "MAX_SESSIONS"
	// MaxConnections caps the open connections of the signalling port
	// (default four per session, at least 1024); past it a connection is
	// closed at once and counted (media_connections_refused_total).
	MaxConnections = "MAX_CONNECTIONS"
	// MaxICECandidates is the per-session limit on remote candidates.
	MaxICECandidates = "MAX_ICE_CANDIDATES"
	// WSSendBuffer is the per-WebSocket outbound queue length, in messages.
	WSSendBuffer = "WS_SEND_BUFFER"
	// WSSendTimeout is how long a send may wait on a full queue before the
	// slow client is disconnected.
	WSSendTimeout = "WS_SEND_TIMEOUT"
	// DrainTimeout is how long a terminating pod waits for sessions to end.
	DrainTimeout = "DRAIN_TIMEOUT"

	// LeakBaselineWindow and LeakThresholdRatio configure the goroutine-leak
	// detector.
	LeakBaselineWindow = "LEAK_BASELINE_WINDOW"
	LeakThresholdRatio = "LEAK_THRESHOLD_RATIO"
	// SampleInterval is how often the pod samples goroutines (default 5s;
	// the operator leaves it unset).
	SampleInterval = "SAMPLE_INTERVAL"

	// LogLevel is debug, info, warn or error; LogFormat is json or text.
	LogLevel  = "LOG_LEVEL"
	LogFormat = "LOG_FORMAT"

	// Pod identity, from the downward API.
	PodName      = "POD_NAME"
	PodNamespace = "POD_NAMESPACE"
	PodIP        = "POD_IP"
	HostIP       = "HOST_IP"
	NodeName     = "NODE_NAME"
	// ServiceName is the owning MediaService's name.
	ServiceName = "MEDIASERVICE_NAME"

	// The TURN gateway (mediaserver turn) reads these, besides ADMIN_PORT,
	// ADMIN_TOKEN, ADMIN_LISTEN_HOST, TLS_CERT_FILE, TLS_KEY_FILE, POD_IP
	// (the address relayed packets leave from), MAX_CONNECTIONS,
	// DRAIN_TIMEOUT, LOG_LEVEL and LOG_FORMAT.
	//
	// RelayUDPPort, RelayTCPPort and RelayTLSPort are the listeners' ports
	// ("off" disables one; UDP 3478 is on by default, TLS needs the
	// certificate files).
	RelayUDPPort = "RELAY_UDP_PORT"
	RelayTCPPort = "RELAY_TCP_PORT"
	RelayTLSPort = "RELAY_TLS_PORT"
	// RelayUDPListeners is how many UDP sockets share the UDP port
	// (SO_REUSEPORT), each with its own read loop (default: one per
	// available core, GOMAXPROCS, at most 8; one read loop tops out near
	// 80k relayed packets/s).
	RelayUDPListeners = "RELAY_UDP_LISTENERS"
	// RelayAllowLoopbackPeers ("true") lets the gateway relay to members on
	// loopback addresses: local runs and benchmarks with every process on
	// 127.0.0.1 only. The operator never sets it.
	RelayAllowLoopbackPeers = "RELAY_ALLOW_LOOPBACK_PEERS"
	// RelayRealm is the TURN realm (default "mediafleet").
	RelayRealm = "RELAY_REALM"
	// RelaySecret is the shared secret of the TURN REST API scheme: the
	// media pods mint per-session credentials with it (TURN_<i>_SECRET)
	// and the gateway verifies them.
	RelaySecret = "RELAY_SECRET"
	// RelayPeerPorts are the media pods' ICE ports ("50000" or
	// "40000-40999"): the only ports relayed packets may go to.
	RelayPeerPorts = "RELAY_PEER_PORTS"
	// RelayMaxAllocations bounds the gateway's allocations, and
	// RelayUserAllocations those of one username (one session).
	RelayMaxAllocations  = "RELAY_MAX_ALLOCATIONS"
	RelayUserAllocations = "RELAY_USER_ALLOCATIONS"
	// RelayAllocationBPS bounds one allocation's bitrate in each direction
	// (bits per second; 0 or unset: unbounded).
	RelayAllocationBPS = "RELAY_ALLOCATION_BPS"
)

// TURNURLs is the variable holding the comma-separated URLs of TURN server i.
func TURNURLs(i int) string { return "TURN_" + strconv.Itoa(i) + "_URLS" }

// TURNUsername is the variable holding the username of TURN server i.
func TURNUsername(i int) string { return "TURN_" + strconv.Itoa(i) + "_USERNAME" }

// TURNPassword is the variable holding the password of TURN server i.
func TURNPassword(i int) string { return "TURN_" + strconv.Itoa(i) + "_PASSWORD" }

// TURNSecret is the variable holding the shared secret of TURN server i
// (instead of a username and password): the mediaserver mints short-lived
// credentials per session with it (the TURN REST API scheme).
func TURNSecret(i int) string { return "TURN_" + strconv.Itoa(i) + "_SECRET" }

// TURNTTL is the lifetime of credentials minted for TURN server i (Go
// duration, default 1h).
func TURNTTL(i int) string { return "TURN_" + strconv.Itoa(i) + "_TTL" }

// TURNClientsOnly ("true") marks TURN server i as the clients' only: the
// media pod announces it but does not gather a relay candidate on it (the
// MediaService's own gateway relays to the pod directly).
func TURNClientsOnly(i int) string { return "TURN_" + strconv.Itoa(i) + "_CLIENTS_ONLY" }
