// Package metrics defines every Prometheus series a mediaserver exports, on
// its own registry. No label carries an unbounded value (no session id, room
// name or address): quality series are histograms over sessions.
package metrics

import (
	"regexp"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metrics is the set of collectors of one process.
type Metrics struct {
	RelayLinks   *prometheus.GaugeVec
	RelayPackets prometheus.Counter
	RelayDelay   prometheus.Histogram

	Registry *prometheus.Registry

	ActiveSessions  *prometheus.GaugeVec
	SessionCapacity prometheus.Gauge
	SessionsCreated *prometheus.CounterVec
	SessionsClosed  *prometheus.CounterVec
	SessionDuration *prometheus.HistogramVec

	ICEConnectionState *prometheus.GaugeVec
	ICECandidatesAdded *prometheus.CounterVec
	ICEConnectionTime  prometheus.Histogram

	VideoFrameRate prometheus.Histogram
	VideoBitrate   prometheus.Histogram
	PacketLoss     prometheus.Histogram
	RTT            prometheus.Histogram
	Jitter         prometheus.Histogram

	ForwardedPackets prometheus.Counter
	ForwardedBytes   prometheus.Counter
	// NACKs counts the packets viewers asked for again, by result:
	// answered from the feed's cache, or missed (too old, never cached).
	NACKs *prometheus.CounterVec
	// NACKRequests counts the packets asked for again from publishers
	// and relay links' owners.
	NACKRequests prometheus.Counter
	// KeyframeRequests counts PLIs sent to publishers; LayerSwitches the
	// times a viewer moved to another simulcast layer.
	KeyframeRequests prometheus.Counter
	LayerSwitches    prometheus.Counter
	// LayerSeconds counts viewer-seconds on each simulcast layer (rate():
	// how many viewers watch each layer).
	LayerSeconds *prometheus.CounterVec
	// BandwidthEstimate samples viewers' send-side estimates.
	BandwidthEstimate prometheus.Histogram

	HTTPRequests *prometheus.CounterVec
	HTTPDuration *prometheus.HistogramVec
	HTTPInFlight prometheus.Gauge

	WSConnections prometheus.Gauge
	WSMessages    *prometheus.CounterVec
	WSMessageSize *prometheus.HistogramVec

	MemoryUsage       prometheus.Gauge
	Goroutines        prometheus.Gauge
	GoroutinesMax     prometheus.Gauge
	PotentialLeak     prometheus.Gauge
	GoroutineBaseline prometheus.Gauge
	Draining          prometheus.Gauge
	// OpenConnections and ConnectionsRefused are per listener (public,
	// admin): connections open now, and those refused at the cap.
	OpenConnections    *prometheus.GaugeVec
	ConnectionsRefused *prometheus.CounterVec
}

// LayerNames are the values of media_layer_seconds_total's layer label:
// the three ranks, and "other" for layers past them.
var LayerNames = []string{"q", "h", "f", "other"}

// CloseReasons are the values of the reason label of
// media_sessions_closed_total (pre-initialised so rate() starts at zero).
var CloseReasons = []string{"client-delete", "client-leave", "client-disconnect", "ice-failed", "ice-closed",
	"connect-timeout", "drain-timeout", "bad-offer", "slow-client", "write-error", "closed", "internal-error"}

// ICE connection states, the values of the state label.
var ICEStates = []string{"new", "checking", "connected", "completed", "disconnected", "failed", "closed"}

// WSInTypes and WSOutTypes are the values of media_websocket_messages_total's
// type label (the protocol's message types; "invalid" and "relayed" for
// what was not decoded here).
var (
	WSInTypes  = []string{"join", "answer", "candidate", "leave", "layer", "invalid", "relayed"}
	WSOutTypes = []string{"joined", "offer", "candidate", "draining", "error", "closed"}
)

// New registers every collector on a fresh registry (promauto: each is
// registered where it is made), with the Go and process collectors. The
// Go collector adds go_gc_heap_live_bytes (the heap the last collection
// marked live: what a leak grows, without the garbage allocated since).
func New() *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{Registry: reg}
	reg.MustRegister(
		collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/gc/heap/live:bytes$`)})),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	auto := promauto.With(reg)
	m.RelayLinks = auto.NewGaugeVec(prometheus.GaugeOpts{Name: "media_relay_links", Help: "Relay links of cascaded rooms up, by role: owner (a relay pod pulls a room from here) or relay (this pod pulls a room from its owner)."}, []string{"role"})
	m.RelayDelay = auto.NewHistogram(prometheus.HistogramOpts{Name: "media_relay_link_delay_seconds", Help: "Delay a relayed video packet took from the owner's send to the relay pod's read (the owner's abs-send-time against this pod's clock; one packet in eight).",
		Buckets: []float64{0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25}})
	m.RelayLinks.WithLabelValues("owner")
	m.RelayLinks.WithLabelValues("relay")
	m.RelayPackets = auto.NewCounter(prometheus.CounterOpts{Name: "media_relay_link_packets_total", Help: "RTP packets the owner sent to relay pods over relay links."})
	m.ActiveSessions = auto.NewGaugeVec(prometheus.GaugeOpts{Name: "media_active_sessions", Help: "Sessions (PeerConnections) currently open, by kind."}, []string{"kind"})
	m.SessionCapacity = auto.NewGauge(prometheus.GaugeOpts{Name: "media_session_capacity", Help: "Sessions this pod accepts (MAX_SESSIONS); 0 while draining."})
	m.SessionsCreated = auto.NewCounterVec(prometheus.CounterOpts{Name: "media_sessions_created_total", Help: "Sessions created, by kind."}, []string{"kind"})
	m.SessionsClosed = auto.NewCounterVec(prometheus.CounterOpts{Name: "media_sessions_closed_total", Help: "Sessions closed, by kind and reason."}, []string{"kind", "reason"})
	m.SessionDuration = auto.NewHistogramVec(prometheus.HistogramOpts{Name: "media_session_duration_seconds", Help: "Lifetime of closed sessions.",
		Buckets: []float64{1, 5, 15, 30, 60, 300, 900, 1800, 3600, 4 * 3600}}, []string{"kind"})
	m.ICEConnectionState = auto.NewGaugeVec(prometheus.GaugeOpts{Name: "media_ice_connection_state", Help: "Sessions in each ICE connection state."}, []string{"state"})
	m.ICECandidatesAdded = auto.NewCounterVec(prometheus.CounterOpts{Name: "media_ice_candidates_added_total", Help: "Remote ICE candidates added, by result."}, []string{"result"})
	m.ICEConnectionTime = auto.NewHistogram(prometheus.HistogramOpts{Name: "media_ice_connection_time_milliseconds", Help: "Time from session creation to ICE connected.",
		Buckets: []float64{10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000}})
	m.VideoFrameRate = auto.NewHistogram(prometheus.HistogramOpts{Name: "media_video_frame_rate", Help: "Frame rate of published video tracks, sampled every 5s per track.",
		Buckets: []float64{1, 5, 10, 15, 20, 25, 30, 45, 60}})
	m.VideoBitrate = auto.NewHistogram(prometheus.HistogramOpts{Name: "media_video_bitrate_bps", Help: "Bitrate of published video tracks, sampled every 5s per track.",
		Buckets: prometheus.ExponentialBuckets(32_000, 2, 10)})
	m.PacketLoss = auto.NewHistogram(prometheus.HistogramOpts{Name: "media_packet_loss_ratio", Help: "Fraction of packets lost, from receiver reports of viewers and from publisher sequence gaps.",
		Buckets: []float64{0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1}})
	m.RTT = auto.NewHistogram(prometheus.HistogramOpts{Name: "media_rtt_milliseconds", Help: "Round-trip time to viewers, from RTCP receiver reports.",
		Buckets: []float64{1, 5, 10, 25, 50, 100, 200, 400, 800, 1600}})
	m.Jitter = auto.NewHistogram(prometheus.HistogramOpts{Name: "media_jitter_milliseconds", Help: "Interarrival jitter reported by viewers.",
		Buckets: []float64{0.5, 1, 2, 5, 10, 20, 50, 100, 200}})
	m.ForwardedPackets = auto.NewCounter(prometheus.CounterOpts{Name: "media_forwarded_packets_total", Help: "RTP packets read from publishers and forwarded."})
	m.ForwardedBytes = auto.NewCounter(prometheus.CounterOpts{Name: "media_forwarded_bytes_total", Help: "RTP payload bytes read from publishers and forwarded."})
	m.BandwidthEstimate = auto.NewHistogram(prometheus.HistogramOpts{Name: "media_bandwidth_estimate_bps", Help: "Send-side bandwidth estimates towards viewers (Google congestion control over transport-wide feedback), one sample per change.",
		Buckets: prometheus.ExponentialBuckets(50_000, 2, 10)})
	m.LayerSeconds = auto.NewCounterVec(prometheus.CounterOpts{Name: "media_layer_seconds_total", Help: "Viewer-seconds spent on each simulcast layer (q, h, f; other for unusual rids)."}, []string{"layer"})
	m.KeyframeRequests = auto.NewCounter(prometheus.CounterOpts{Name: "media_keyframe_requests_total", Help: "Keyframe requests (PLI) sent to publishers, at most one per layer per 500 ms."})
	m.LayerSwitches = auto.NewCounter(prometheus.CounterOpts{Name: "media_layer_switches_total", Help: "Times a viewer moved to another simulcast layer (always at a keyframe)."})
	m.NACKs = auto.NewCounterVec(prometheus.CounterOpts{Name: "media_nack_packets_total", Help: "Packets viewers asked for again (NACK), by result: answered from the feed's cache or missed."}, []string{"result"})
	m.NACKRequests = auto.NewCounter(prometheus.CounterOpts{Name: "media_nack_requested_packets_total", Help: "Packets asked for again (NACK) from publishers and, on a relay pod, from a room's owner; every ask counts (at most 5 per lost packet)."})
	m.HTTPRequests = auto.NewCounterVec(prometheus.CounterOpts{Name: "media_http_requests_total", Help: "HTTP requests by method, route pattern and status."}, []string{"method", "route", "status"})
	m.HTTPDuration = auto.NewHistogramVec(prometheus.HistogramOpts{Name: "media_http_duration_seconds", Help: "HTTP request latency by method and route pattern.",
		Buckets: []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}}, []string{"method", "route"})
	m.HTTPInFlight = auto.NewGauge(prometheus.GaugeOpts{Name: "media_http_requests_in_flight", Help: "HTTP requests being served."})
	m.WSConnections = auto.NewGauge(prometheus.GaugeOpts{Name: "media_websocket_connections", Help: "Open WebSocket connections."})
	m.WSMessages = auto.NewCounterVec(prometheus.CounterOpts{Name: "media_websocket_messages_total", Help: "WebSocket messages by direction and type."}, []string{"direction", "type"})
	m.WSMessageSize = auto.NewHistogramVec(prometheus.HistogramOpts{Name: "media_websocket_message_size_bytes", Help: "WebSocket message sizes by direction.",
		Buckets: prometheus.ExponentialBuckets(64, 2, 11)}, []string{"direction"})
	m.MemoryUsage = auto.NewGauge(prometheus.GaugeOpts{Name: "media_memory_usage_bytes", Help: "Heap in use by the process."})
	m.Goroutines = auto.NewGauge(prometheus.GaugeOpts{Name: "media_goroutine_count", Help: "Goroutines at the last sample."})
	m.GoroutinesMax = auto.NewGauge(prometheus.GaugeOpts{Name: "media_goroutine_count_max", Help: "Most goroutines seen since start."})
	m.PotentialLeak = auto.NewGauge(prometheus.GaugeOpts{Name: "media_potential_goroutine_leak", Help: "1 while the leak detector suspects a goroutine leak."})
	m.GoroutineBaseline = auto.NewGauge(prometheus.GaugeOpts{Name: "media_goroutine_baseline", Help: "Goroutine baseline learnt by the leak detector (0 while learning)."})
	m.Draining = auto.NewGauge(prometheus.GaugeOpts{Name: "media_draining", Help: "1 once the process is draining."})
	m.OpenConnections = auto.NewGaugeVec(prometheus.GaugeOpts{Name: "media_open_connections", Help: "TCP connections open on each listener."}, []string{"listener"})
	m.ConnectionsRefused = auto.NewCounterVec(prometheus.CounterOpts{Name: "media_connections_refused_total", Help: "Connections closed at accept because the listener was at its cap."}, []string{"listener"})

	// Every known label combination exists from the start, so dashboards
	// and absent() alerts see the families on a fresh pod.
	for _, l := range LayerNames {
		m.LayerSeconds.WithLabelValues(l)
	}
	for _, r := range []string{"answered", "missed"} {
		m.NACKs.WithLabelValues(r)
	}
	for _, l := range []string{"public", "admin"} {
		m.OpenConnections.WithLabelValues(l)
		m.ConnectionsRefused.WithLabelValues(l)
	}
	for _, dir := range []string{"in", "out"} {
		m.WSMessageSize.WithLabelValues(dir)
	}
	for _, t := range WSInTypes {
		m.WSMessages.WithLabelValues("in", t)
	}
	for _, t := range WSOutTypes {
		m.WSMessages.WithLabelValues("out", t)
	}
	for _, r := range []string{"added", "queued", "refused", "invalid"} {
		m.ICECandidatesAdded.WithLabelValues(r)
	}
	for _, s := range ICEStates {
		m.ICEConnectionState.WithLabelValues(s)
	}
	for _, k := range []string{"whip", "whep", "ws"} {
		m.ActiveSessions.WithLabelValues(k)
		m.SessionsCreated.WithLabelValues(k)
		m.SessionDuration.WithLabelValues(k)
		for _, r := range CloseReasons {
			m.SessionsClosed.WithLabelValues(k, r)
		}
	}
	return m
}
