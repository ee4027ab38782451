// Package relay is mediafleet's TURN gateway (`mediaserver turn`): a TURN
// server built on pion/turn that lets clients outside the cluster, behind
// NAT or behind firewalls that pass only TLS on 443, reach a MediaService's
// media pods on the pod network.
//
// It is not an open relay: a client may only create permissions and bind
// channels towards the media pods of its MediaService (the member list the
// operator delivers, as it does to media pods) and only on their ICE ports;
// anything else is refused and counted. Credentials are the TURN REST API's
// short-lived ones (username "<expiry>:<session>", password
// base64(HMAC-SHA1(secret, username))), minted by the media pods for
// authenticated callers; expired, malformed or forged ones are refused and
// counted. Allocations are bounded per server and per username, and each
// allocation's bitrate per direction.
package relay

import (
	"context"
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // the TURN REST API scheme is HMAC-SHA1
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pion/logging"
	"github.com/pion/turn/v4"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sys/unix"

	"github.com/mediafleet/mediafleet/mediaserver/fleet"
	"github.com/mediafleet/mediafleet/mediaserver/statusapi"
)

// Server is one TURN gateway process.
type Server struct {
	cfg     Config
	log     *slog.Logger
	m       *metrics
	members fleet.Members
	peers   atomic.Pointer[map[netip.Addr]bool]

	turn    *turn.Server
	udps    []net.PacketConn // the UDP listener's sockets, on one port
	tcp     *trackedListener
	tls     *trackedListener
	certs   *certReloader
	admin   *http.Server
	adminLn net.Listener

	draining atomic.Bool
	mu       sync.Mutex
	perUser  map[string]int
	total    int
	closed   chan struct{}
	once     sync.Once
}

// Status is the gateway's GET /status document (admin token).
type Status = statusapi.GatewayReport

// New opens the listeners and starts serving.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: log, m: newMetrics(cfg), perUser: map[string]int{}, closed: make(chan struct{})}
	empty := map[netip.Addr]bool{}
	s.peers.Store(&empty)
	if err := s.start(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Server) start() error {
	gen := &relayGenerator{s: s}
	var sc turn.ServerConfig
	host := s.cfg.ListenHost
	if s.cfg.UDP {
		// Several sockets on one port (SO_REUSEPORT) when asked: the
		// kernel hashes each client to one of them, so a client's
		// allocation always meets the same read loop.
		lc := net.ListenConfig{}
		if s.cfg.UDPListeners > 1 {
			lc.Control = reusePort
		}
		port := s.cfg.UDPPort
		for i := 0; i < s.cfg.UDPListeners; i++ {
			conn, err := lc.ListenPacket(context.Background(), "udp4", net.JoinHostPort(host, strconv.Itoa(port)))
			if err != nil {
				return fmt.Errorf("UDP listener: %w", err)
			}
			// Bursts from many clients arrive at once: a larger receive
			// buffer than the default (the kernel caps it at rmem_max).
			_ = conn.(*net.UDPConn).SetReadBuffer(4 << 20)
			if i == 0 {
				port = conn.LocalAddr().(*net.UDPAddr).Port
			}
			s.udps = append(s.udps, conn)
			sc.PacketConnConfigs = append(sc.PacketConnConfigs, turn.PacketConnConfig{
				PacketConn: conn, RelayAddressGenerator: gen, PermissionHandler: s.permit,
			})
		}
	}
	if s.cfg.TCP {
		ln, err := net.Listen("tcp4", net.JoinHostPort(host, strconv.Itoa(s.cfg.TCPPort)))
		if err != nil {
			return fmt.Errorf("TCP listener: %w", err)
		}
		s.tcp = s.track(ln, nil)
		sc.ListenerConfigs = append(sc.ListenerConfigs, turn.ListenerConfig{
			Listener: s.tcp, RelayAddressGenerator: gen, PermissionHandler: s.permit,
		})
	}
	if s.cfg.TLS {
		certs, err := newCertReloader(s.cfg.TLSCertFile, s.cfg.TLSKeyFile)
		if err != nil {
			return err
		}
		s.certs = certs
		ln, err := net.Listen("tcp4", net.JoinHostPort(host, strconv.Itoa(s.cfg.TLSPort)))
		if err != nil {
			return fmt.Errorf("TLS listener: %w", err)
		}
		s.tls = s.track(ln, certs.config())
		sc.ListenerConfigs = append(sc.ListenerConfigs, turn.ListenerConfig{
			Listener: s.tls, RelayAddressGenerator: gen, PermissionHandler: s.permit,
		})
	}
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelWarn
	lf.Writer = slogWriter{s.log}
	sc.LoggerFactory = lf
	sc.Realm = s.cfg.Realm
	sc.AuthHandler = s.authenticate
	sc.QuotaHandler = s.quota
	sc.EventHandler = turn.EventHandler{
		OnAuth: func(_, _ net.Addr, _, _, _, _ string, ok bool) {
			if !ok {
				s.m.authFailures.WithLabelValues("forged").Inc()
			}
		},
		OnAllocationCreated: func(_, _ net.Addr, _, username, _ string, _ net.Addr, _ int) {
			s.mu.Lock()
			s.perUser[username]++
			s.total++
			s.mu.Unlock()
			s.m.allocations.Inc()
			s.m.allocationsCreated.Inc()
		},
		OnAllocationDeleted: func(_, _ net.Addr, _, username, _ string) {
			s.mu.Lock()
			if s.perUser[username]--; s.perUser[username] <= 0 {
				delete(s.perUser, username)
			}
			s.total--
			s.mu.Unlock()
			s.m.allocations.Dec()
		},
	}
	srv, err := turn.NewServer(sc)
	if err != nil {
		return fmt.Errorf("TURN server: %w", err)
	}
	s.turn = srv

	adminHost := s.cfg.AdminListenHost
	if adminHost == "" && s.cfg.AdminToken == "" {
		adminHost = "127.0.0.1"
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(adminHost, strconv.Itoa(s.cfg.AdminPort)))
	if err != nil {
		return fmt.Errorf("admin listener: %w", err)
	}
	s.adminLn = ln
	s.admin = &http.Server{Handler: s.adminHandler(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: time.Minute}
	go func() { _ = s.admin.Serve(ln) }()
	return nil
}

// Addresses of the listeners (tests bind port 0).
func (s *Server) UDPAddr() net.Addr {
	if len(s.udps) == 0 {
		return nil
	}
	return s.udps[0].LocalAddr()
}

// TCPAddr is the plain TCP listener's address (nil when off).
func (s *Server) TCPAddr() net.Addr {
	if s.tcp == nil {
		return nil
	}
	return s.tcp.Addr()
}

// TLSAddr is the TLS listener's address (nil when off).
func (s *Server) TLSAddr() net.Addr {
	if s.tls == nil {
		return nil
	}
	return s.tls.Addr()
}

// AdminURL is the admin port's base URL.
func (s *Server) AdminURL() string { return "http://" + s.adminLn.Addr().String() }

// Allocations is the number of live allocations.
func (s *Server) Allocations() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// SetMembers replaces the media pods relayed to (the operator's PUT does
// this through UpdateMembership; tests call it directly).
func (s *Server) SetMembers(mb statusapi.Membership) error {
	if err := s.members.Update(mb, time.Now()); err != nil {
		return err
	}
	next := map[netip.Addr]bool{}
	for _, m := range mb.Members {
		if ap, err := netip.ParseAddrPort(m.Address); err == nil {
			next[ap.Addr().Unmap()] = true
		}
	}
	s.peers.Store(&next)
	s.m.peers.Set(float64(len(next)))
	return nil
}

// authenticate verifies a TURN REST username ("<expiry>:<session>"): an
// expired or malformed one is refused here; for the others the key is
// derived from the shared secret, and pion then checks the request's
// integrity with it (a forged password fails there, see OnAuth).
func (s *Server) authenticate(username, realm string, _ net.Addr) ([]byte, bool) {
	if len(username) > s.cfg.MaxUsernameLength {
		s.m.authFailures.WithLabelValues("malformed").Inc()
		return nil, false
	}
	exp, session, ok := strings.Cut(username, ":")
	t, err := strconv.ParseInt(exp, 10, 64)
	if !ok || err != nil || session == "" {
		s.m.authFailures.WithLabelValues("malformed").Inc()
		return nil, false
	}
	if time.Now().Unix() > t {
		s.m.authFailures.WithLabelValues("expired").Inc()
		return nil, false
	}
	mac := hmac.New(sha1.New, []byte(s.cfg.Secret))
	mac.Write([]byte(username))
	return turn.GenerateAuthKey(username, realm, base64.StdEncoding.EncodeToString(mac.Sum(nil))), true
}

// quota admits an allocation: not while draining, not past the server's
// or the username's bound.
func (s *Server) quota(username, _ string, _ net.Addr) bool {
	reason := ""
	s.mu.Lock()
	switch {
	case s.draining.Load():
		reason = "draining"
	case s.total >= s.cfg.MaxAllocations:
		reason = "server"
	case s.perUser[username] >= s.cfg.UserAllocations:
		reason = "user"
	}
	s.mu.Unlock()
	if reason != "" {
		s.m.quotaRefused.WithLabelValues(reason).Inc()
		return false
	}
	return true
}

// permit is pion's permission handler (CreatePermission, ChannelBind):
// only the media pods' addresses.
func (s *Server) permit(_ net.Addr, ip net.IP) bool {
	if s.peerIP(ip) {
		return true
	}
	s.m.refused.WithLabelValues("peer").Inc()
	return false
}

func (s *Server) peerIP(ip net.IP) bool {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return false
	}
	a = a.Unmap()
	if !a.IsValid() || a.IsUnspecified() || a.IsMulticast() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() {
		return false
	}
	if a.IsLoopback() && !s.cfg.AllowLoopbackPeers {
		return false
	}
	return (*s.peers.Load())[a]
}

// peerPort: only the media pods' ICE ports (any, when none are
// configured).
func (s *Server) peerPort(port int) bool {
	if len(s.cfg.PeerPorts) == 0 {
		return true
	}
	for _, r := range s.cfg.PeerPorts {
		if port >= r.Min && port <= r.Max {
			return true
		}
	}
	return false
}

// Drain refuses new allocations (readiness fails, the Service stops
// sending new clients) and waits for the existing ones to end, up to the
// drain timeout, then closes.
func (s *Server) Drain(ctx context.Context) {
	s.draining.Store(true)
	s.log.Info("draining", "allocations", s.Allocations(), "timeout", s.cfg.DrainTimeout)
	ctx, cancel := context.WithTimeout(ctx, s.cfg.DrainTimeout)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for s.Allocations() > 0 {
		select {
		case <-ctx.Done():
			s.log.Warn("drain timed out", "allocations", s.Allocations())
			s.Close()
			return
		case <-tick.C:
		}
	}
	s.Close()
}

// Draining reports whether Drain began.
func (s *Server) Draining() bool { return s.draining.Load() }

// Close stops everything at once.
func (s *Server) Close() {
	s.once.Do(func() {
		close(s.closed)
		if s.admin != nil {
			_ = s.admin.Close()
		}
		if s.turn != nil {
			_ = s.turn.Close()
		} else {
			for _, c := range s.udps {
				_ = c.Close()
			}
		}
		for _, l := range []*trackedListener{s.tcp, s.tls} {
			if l != nil {
				_ = l.Close()
			}
		}
		if s.certs != nil {
			s.certs.close()
		}
	})
}

// Done is closed once the server closed.
func (s *Server) Done() <-chan struct{} { return s.closed }

func (s *Server) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.m.reg, promhttp.HandlerOpts{Registry: s.m.reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		switch {
		case s.draining.Load():
			http.Error(w, "draining", http.StatusServiceUnavailable)
		case len(*s.peers.Load()) == 0:
			http.Error(w, "no media pods to relay to yet", http.StatusServiceUnavailable)
		default:
			_, _ = io.WriteString(w, "ready\n")
		}
	})
	mux.HandleFunc("GET "+statusapi.Path, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		set := *s.peers.Load()
		addrs := make([]string, 0, len(set))
		for a := range set {
			addrs = append(addrs, a.String())
		}
		sort.Strings(addrs)
		_ = json.NewEncoder(w).Encode(Status{APIVersion: statusapi.APIVersion, Ready: len(set) > 0 && !s.draining.Load(),
			Allocations: s.Allocations(), Draining: s.draining.Load(), Peers: len(set), PeerAddresses: addrs, MembershipGeneration: s.members.Current().Generation})
	})
	mux.HandleFunc("PUT "+statusapi.MembershipPath, func(w http.ResponseWriter, r *http.Request) {
		var mb statusapi.Membership
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&mb); err != nil {
			http.Error(w, "membership: "+err.Error(), http.StatusBadRequest)
			return
		}
		if err := s.SetMembers(mb); err != nil {
			code := http.StatusBadRequest
			if errors.Is(err, fleet.ErrStale) {
				code = http.StatusConflict
			}
			http.Error(w, "membership: "+err.Error(), code)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	return statusapi.RequireAdminToken(s.cfg.AdminToken, mux)
}

// slogWriter carries pion's log lines into the process's logger.
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.log.Warn(strings.TrimSpace(string(p)), "component", "pion/turn")
	return len(p), nil
}

// reusePort sets SO_REUSEPORT on a socket before it binds.
func reusePort(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return err
	}
	return serr
}
