package relay

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// metrics are the gateway's series (prefix turn_), on its own registry. No
// label carries a client's address or username.
type metrics struct {
	reg                *prometheus.Registry
	allocations        prometheus.Gauge
	allocationsLimit   prometheus.Gauge
	allocationsCreated prometheus.Counter
	peers              prometheus.Gauge
	packets, bytes     *prometheus.CounterVec
	refused            *prometheus.CounterVec
	authFailures       *prometheus.CounterVec
	quotaRefused       *prometheus.CounterVec
	overBudget         *prometheus.CounterVec
	connections        prometheus.Gauge
	connectionsRefused prometheus.Counter
}

func newMetrics(cfg Config) *metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a := promauto.With(reg)
	m := &metrics{
		reg:                reg,
		allocations:        a.NewGauge(prometheus.GaugeOpts{Name: "turn_allocations", Help: "Live TURN allocations."}),
		allocationsLimit:   a.NewGauge(prometheus.GaugeOpts{Name: "turn_allocations_limit", Help: "The most allocations this gateway admits (RELAY_MAX_ALLOCATIONS)."}),
		allocationsCreated: a.NewCounter(prometheus.CounterOpts{Name: "turn_allocations_created_total", Help: "TURN allocations created."}),
		peers:              a.NewGauge(prometheus.GaugeOpts{Name: "turn_peers", Help: "Media pod addresses the gateway relays to."}),
		packets: a.NewCounterVec(prometheus.CounterOpts{Name: "turn_relayed_packets_total", Help: "Packets relayed, by direction (to_peer: client to media pod; to_client)."},
			[]string{"direction"}),
		bytes: a.NewCounterVec(prometheus.CounterOpts{Name: "turn_relayed_bytes_total", Help: "Bytes relayed, by direction."},
			[]string{"direction"}),
		refused: a.NewCounterVec(prometheus.CounterOpts{Name: "turn_refused_permissions_total",
			Help: "Permissions, channel binds and packets refused because the peer is not a media pod (reason=peer) or not on an ICE port (reason=port)."},
			[]string{"reason"}),
		authFailures: a.NewCounterVec(prometheus.CounterOpts{Name: "turn_auth_failures_total", Help: "Requests refused for their credentials: expired, malformed or forged."},
			[]string{"reason"}),
		quotaRefused: a.NewCounterVec(prometheus.CounterOpts{Name: "turn_quota_refused_total", Help: "Allocations refused (486): the server's or the username's bound reached, or draining."},
			[]string{"reason"}),
		overBudget: a.NewCounterVec(prometheus.CounterOpts{Name: "turn_over_budget_packets_total", Help: "Packets dropped because their allocation exceeded its bitrate (RELAY_ALLOCATION_BPS)."},
			[]string{"direction"}),
		connections:        a.NewGauge(prometheus.GaugeOpts{Name: "turn_connections", Help: "Open TCP and TLS client connections."}),
		connectionsRefused: a.NewCounter(prometheus.CounterOpts{Name: "turn_connections_refused_total", Help: "TCP/TLS connections closed at once because MAX_CONNECTIONS were open."}),
	}
	m.allocationsLimit.Set(float64(cfg.MaxAllocations))
	for _, d := range []string{"to_peer", "to_client"} {
		m.packets.WithLabelValues(d)
		m.bytes.WithLabelValues(d)
		m.overBudget.WithLabelValues(d)
	}
	for _, r := range []string{"peer", "port"} {
		m.refused.WithLabelValues(r)
	}
	for _, r := range []string{"expired", "malformed", "forged"} {
		m.authFailures.WithLabelValues(r)
	}
	for _, r := range []string{"server", "user", "draining"} {
		m.quotaRefused.WithLabelValues(r)
	}
	return m
}
