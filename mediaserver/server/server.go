// Package server runs a mediaserver process: the public signalling
// listener, the admin listener (/metrics, /healthz, /readyz, /status,
// pprof), resource sampling and the graceful drain on SIGTERM.
package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mediafleet/mediafleet/mediaserver/config"
	"github.com/mediafleet/mediafleet/mediaserver/fleet"
	"github.com/mediafleet/mediafleet/mediaserver/leak"
	"github.com/mediafleet/mediafleet/mediaserver/metrics"
	"github.com/mediafleet/mediafleet/mediaserver/rtc"
	"github.com/mediafleet/mediafleet/mediaserver/signal"
	"github.com/mediafleet/mediafleet/mediaserver/statusapi"
	"github.com/mediafleet/mediafleet/mediaserver/web"
)

// Version is set at build time (-ldflags -X).
var Version = "dev"

const (
	// writeTimeout bounds writing an answer (a pprof profile may take up
	// to 50 s of it).
	writeTimeout = time.Minute
	// adminMaxConnections: the kubelet, Prometheus, the operator and the
	// other pods of the fleet need a handful each.
	adminMaxConnections = 256
)

// Server is one mediaserver process.
type Server struct {
	cfg     config.Config
	log     *slog.Logger
	metrics *metrics.Metrics
	engine  *rtc.Engine
	signal  *signal.Server
	iceRes  io.Closer
	started time.Time

	public, admin     *http.Server
	publicLn, adminLn net.Listener
	// publicConns and adminConns cap and count the listeners' connections.
	publicConns, adminConns *cappedListener
	// certs serves the signalling certificate when TLS is configured;
	// certsDone closes when its watcher has stopped.
	certs     *certSource
	certsDone chan struct{}

	maxGoroutines atomic.Int64
	members       fleet.Members
	leak          *leak.Detector
	leakSuspected bool
	drainOnce     sync.Once
	stopSampler   chan struct{}
	// linkCtx ends the owner's relay links at shutdown.
	linkCtx     context.Context
	linkCancel  context.CancelFunc
	samplerDone chan struct{}
}

// New builds a server from a validated configuration.
func New(cfg config.Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	apis, iceRes, err := rtc.NewAPIs(&cfg)
	if err != nil {
		return nil, err
	}
	m := metrics.New()
	s := &Server{cfg: cfg, log: log, metrics: m, iceRes: iceRes, started: time.Now(),
		stopSampler: make(chan struct{}), samplerDone: make(chan struct{})}
	s.linkCtx, s.linkCancel = context.WithCancel(context.Background())
	s.leak = leak.New(leak.Config{BaselineWindow: cfg.LeakBaselineWindow, ThresholdRatio: cfg.LeakThresholdRatio})
	s.engine = rtc.NewEngine(apis, &s.cfg, m, log)
	s.signal = signal.New(s.engine, &s.cfg, m, log)
	if cfg.TLSCertFile != "" {
		if s.certs, err = newCertSource(cfg.TLSCertFile, cfg.TLSKeyFile, log); err != nil {
			_ = iceRes.Close()
			return nil, err
		}
	}
	if cfg.PodName != "" && cfg.AdminToken != "" {
		// Rooms are routed to their owner pod once the operator delivers
		// a member list; until then every room is served here. Pods prove
		// themselves to each other with the admin token: without one no
		// room is forwarded.
		fwd := &fleet.Forwarder{Self: cfg.PodName, Token: cfg.AdminToken, Log: log,
			Router: &fleet.Router{Self: cfg.PodName, Members: &s.members, Local: s.engine.RoomSessions,
				SelfReady: func() bool { return !s.engine.Draining() && !s.engine.AtCapacity() },
				Token:     cfg.AdminToken,
				HTTP:      &http.Client{Timeout: time.Second},
				Info: func(room string) fleet.RoomInfo {
					n, full, broadcast := s.engine.RoomInfo(room)
					return fleet.RoomInfo{Sessions: n, Full: full, Broadcast: broadcast}
				}}}
		if s.certs != nil {
			fwd.PeerTLS = s.certs.peerConfig() // forwarded signalling goes over TLS too
		}
		s.signal.SetForwarder(fwd)
	}
	page := web.Handler()
	s.signal.Handle("GET /{$}", page)
	s.signal.Handle("GET /static/", page)
	m.SessionCapacity.Set(float64(cfg.MaxSessions))
	return s, nil
}

// Engine is the session engine (tests).
func (s *Server) Engine() *rtc.Engine { return s.engine }

// Signal is the signalling server, to which routes may be added before Start.
func (s *Server) Signal() *signal.Server { return s.signal }

// Metrics of the process.
func (s *Server) Metrics() *metrics.Metrics { return s.metrics }

// PublicURL is the base URL of the signalling listener (https with TLS).
func (s *Server) PublicURL() string {
	if s.certs != nil {
		return "https://" + s.publicLn.Addr().String()
	}
	return "http://" + s.publicLn.Addr().String()
}

// AdminURL is the base URL of the admin listener.
func (s *Server) AdminURL() string { return "http://" + s.adminLn.Addr().String() }

// Start opens both listeners and serves in the background.
func (s *Server) Start() error {
	var err error
	s.publicLn, err = net.Listen("tcp", net.JoinHostPort(s.cfg.ListenHost, strconv.Itoa(s.cfg.Port)))
	if err != nil {
		return fmt.Errorf("listen on PORT %d: %w", s.cfg.Port, err)
	}
	s.adminLn, err = net.Listen("tcp", net.JoinHostPort(s.cfg.AdminHost(), strconv.Itoa(s.cfg.AdminPort)))
	if err != nil {
		_ = s.publicLn.Close()
		return fmt.Errorf("listen on ADMIN_PORT %d: %w", s.cfg.AdminPort, err)
	}
	s.publicConns = newCappedListener(s.publicLn, s.cfg.MaxConnections, s.metrics.OpenConnections.WithLabelValues("public"), s.metrics.ConnectionsRefused.WithLabelValues("public"))
	s.adminConns = newCappedListener(s.adminLn, adminMaxConnections, s.metrics.OpenConnections.WithLabelValues("admin"), s.metrics.ConnectionsRefused.WithLabelValues("admin"))
	s.publicLn, s.adminLn = s.publicConns, s.adminConns
	// Deadlines: headers within HeaderTimeout, the body (at most 64 KiB)
	// within BodyTimeout more, the answer written within writeTimeout (an
	// offer's answer takes at most 15 s to prepare). WebSocket connections
	// set their own deadlines once upgraded.
	readTimeout := s.cfg.HeaderTimeout + s.cfg.BodyTimeout
	s.public = &http.Server{Handler: s.signal.Handler(), ReadHeaderTimeout: s.cfg.HeaderTimeout, ReadTimeout: readTimeout,
		WriteTimeout: writeTimeout, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 32 << 10}
	s.admin = &http.Server{Handler: s.adminHandler(), ReadHeaderTimeout: s.cfg.HeaderTimeout, ReadTimeout: readTimeout,
		WriteTimeout: writeTimeout, IdleTimeout: time.Minute, MaxHeaderBytes: 32 << 10}
	if s.certs != nil {
		s.publicLn = tls.NewListener(s.publicLn, s.certs.serverConfig())
		s.certsDone = make(chan struct{})
		go func() {
			defer close(s.certsDone)
			s.certs.watch(s.cfg.TLSReloadInterval, s.stopSampler)
		}()
	}
	go s.serve(s.public, s.publicLn, "public")
	go s.serve(s.admin, s.adminLn, "admin")
	go s.sample()
	s.log.Info("mediaserver listening", "public", s.PublicURL(), "admin", s.adminLn.Addr().String(),
		"version", Version, "maxSessions", s.cfg.MaxSessions)
	if s.cfg.AdminToken == "" {
		s.log.Info("no ADMIN_TOKEN: the admin port listens on loopback only and serves without authentication; rooms are not forwarded between pods",
			"admin", s.adminLn.Addr().String())
	}
	return nil
}

func (s *Server) serve(h *http.Server, ln net.Listener, name string) {
	if err := h.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.log.Error("listener failed", "listener", name, "err", err)
	}
}

// sample refreshes the resource gauges and feeds the leak detector.
func (s *Server) sample() {
	defer close(s.samplerDone)
	t := time.NewTicker(s.cfg.SampleInterval)
	defer t.Stop()
	for {
		s.sampleOnce()
		s.leak.Sample(s.engine.SessionCount(), s.openConnections())
		st := s.leak.State()
		s.metrics.GoroutineBaseline.Set(float64(st.Baseline))
		if st.Suspected {
			s.metrics.PotentialLeak.Set(1)
		} else {
			s.metrics.PotentialLeak.Set(0)
		}
		if st.Suspected != s.leakSuspected {
			s.leakSuspected = st.Suspected
			if st.Suspected {
				top := ""
				if len(st.TopGrowth) > 0 {
					top = st.TopGrowth[0].Function
				}
				s.log.Warn("goroutine leak suspected", "goroutines", st.Current, "baseline", st.Baseline,
					"excess", st.Excess, "sessions", s.engine.SessionCount(), "topGrowth", top)
			} else {
				s.log.Info("goroutine leak cleared", "goroutines", st.Current, "baseline", st.Baseline)
			}
		}
		select {
		case <-s.stopSampler:
			return
		case <-t.C:
		}
	}
}

// openConnections is how many connections both listeners hold (each
// explains a goroutine or two to the leak detector).
func (s *Server) openConnections() int {
	n := 0
	for _, l := range []*cappedListener{s.publicConns, s.adminConns} {
		if l != nil {
			n += l.Open()
		}
	}
	return n
}

// countGoroutines reads the goroutine count and keeps the high-water mark.
func (s *Server) countGoroutines() int {
	g := runtime.NumGoroutine()
	for {
		old := s.maxGoroutines.Load()
		if int64(g) <= old || s.maxGoroutines.CompareAndSwap(old, int64(g)) {
			return g
		}
	}
}

func (s *Server) sampleOnce() int {
	g := s.countGoroutines()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s.metrics.MemoryUsage.Set(float64(ms.HeapInuse))
	s.metrics.Goroutines.Set(float64(g))
	s.metrics.GoroutinesMax.Set(float64(s.maxGoroutines.Load()))
	return g
}

func (s *Server) adminHandler() http.Handler {
	mux := http.NewServeMux()
	handle := func(pattern string, okStatus int, h http.Handler) {
		mux.Handle(pattern, h)
		signal.InitRoute(s.metrics, pattern, okStatus)
	}
	handle("GET /metrics", http.StatusOK, promhttp.HandlerFor(s.metrics.Registry, promhttp.HandlerOpts{Registry: s.metrics.Registry}))
	handle("GET /healthz", http.StatusOK, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	}))
	handle("GET /readyz", http.StatusOK, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		switch {
		case s.engine.Draining():
			http.Error(w, "draining", http.StatusServiceUnavailable)
		case s.engine.AtCapacity():
			http.Error(w, "at capacity", http.StatusServiceUnavailable)
		default:
			_, _ = io.WriteString(w, "ready\n")
		}
	}))
	handle("GET "+statusapi.Path, http.StatusOK, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s.Report())
	}))
	handle("PUT "+statusapi.MembershipPath, http.StatusNoContent, http.HandlerFunc(s.putMembership))
	handle("GET "+fleet.RoomPath+"{room}", http.StatusOK, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// 200 only from the room's owner: a relay pod does not hold it.
		if n, full, broadcast := s.engine.RoomInfo(r.PathValue("room")); n > 0 {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(fleet.RoomInfo{Sessions: n, Full: full, Broadcast: broadcast})
			return
		}
		http.Error(w, "no such room here", http.StatusNotFound)
	}))
	handle("GET "+fleet.LinkPath+"{room}", http.StatusSwitchingProtocols, http.HandlerFunc(s.serveLink))
	faultRoutes(mux)
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return signal.Instrument(s.metrics, statusapi.RequireAdminToken(s.cfg.AdminToken, mux))
}

// Report is the /status document. It reads the goroutine count (cheap) but
// not memory statistics (a stop-the-world; the sampler does that).
func (s *Server) Report() statusapi.Report {
	g := s.countGoroutines()
	ls := s.leak.State()
	mb := s.members.Current()
	draining := s.engine.Draining()
	return statusapi.Report{
		APIVersion:    statusapi.APIVersion,
		PodName:       s.cfg.PodName,
		Namespace:     s.cfg.Namespace,
		Version:       Version,
		StartedAt:     s.started.UTC(),
		UptimeSeconds: int64(time.Since(s.started).Seconds()),
		Ready:         !draining && !s.engine.AtCapacity(),
		Draining:      draining,
		Sessions: statusapi.Sessions{
			Active:   s.engine.SessionCount(),
			Capacity: s.cfg.MaxSessions,
			Rooms:    s.engine.RoomCount(),
		},
		Goroutines: statusapi.Goroutines{Current: g, Baseline: ls.Baseline, Max: int(s.maxGoroutines.Load())},
		Leak:       leakReport(ls),

		MembershipGeneration: mb.Generation,
		MembershipSize:       len(mb.Members),
		Rooms:                s.roomReport(),
	}
}

// roomReport is the largest rooms here for /status.
func (s *Server) roomReport() []statusapi.RoomStatus {
	var out []statusapi.RoomStatus
	for _, l := range s.engine.RoomStats(statusapi.MaxReportedRooms) {
		out = append(out, statusapi.RoomStatus{Name: l.Room, Role: l.Role, Owner: l.Owner, Members: l.Members, Links: l.Links, LinkState: l.State})
	}
	return out
}

// putMembership takes the member list the operator delivers (see
// statusapi.Membership for the protocol).
func (s *Server) putMembership(w http.ResponseWriter, r *http.Request) {
	var mb statusapi.Membership
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	if err := dec.Decode(&mb); err != nil {
		http.Error(w, "membership: "+err.Error(), http.StatusBadRequest)
		return
	}
	if err := s.members.Update(mb, time.Now()); err != nil {
		code := http.StatusBadRequest
		if errors.Is(err, fleet.ErrStale) {
			code = http.StatusConflict
		}
		http.Error(w, "membership: "+err.Error(), code)
		return
	}
	s.log.Debug("membership updated", "generation", mb.Generation, "members", len(mb.Members))
	w.WriteHeader(http.StatusNoContent)
}

func leakReport(ls leak.State) statusapi.Leak {
	out := statusapi.Leak{Suspected: ls.Suspected, TopGrowth: ls.TopGrowth}
	if ls.Suspected {
		since := ls.Since.UTC()
		out.Since = &since
		out.Excess = ls.Excess
	}
	return out
}

// Drain runs the graceful shutdown: stop accepting sessions, tell
// WebSocket clients, wait up to drainTimeout for sessions to end, close the
// rest, then stop the listeners. ctx cancelled (a second signal) cuts the
// wait short.
func (s *Server) Drain(ctx context.Context) {
	s.drainOnce.Do(func() {
		start := time.Now()
		s.engine.SetDraining()
		s.metrics.Draining.Set(1)
		s.metrics.SessionCapacity.Set(0)
		s.log.Info("draining", "sessions", s.engine.SessionCount(), "drainTimeout", s.cfg.DrainTimeout.String())
		s.signal.NotifyDraining()

		waitCtx, cancel := context.WithTimeout(ctx, s.cfg.DrainTimeout)
		err := s.engine.WaitIdle(waitCtx)
		cancel()
		if err != nil {
			left := s.engine.SessionCount()
			s.log.Warn("drain timeout: closing remaining sessions", "sessions", left)
			s.engine.CloseAll("drain-timeout")
		} else {
			s.log.Info("all sessions ended", "after", time.Since(start).Round(time.Millisecond).String())
		}
		s.shutdown()
		s.log.Info("drained", "took", time.Since(start).Round(time.Millisecond).String())
	})
}

func (s *Server) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if s.public != nil {
		_ = s.public.Shutdown(ctx)
	}
	// Hijacked WebSocket connections are not closed by Shutdown: let their
	// writers flush the closing messages, then they end with their sessions.
	if s.admin != nil {
		_ = s.admin.Shutdown(ctx)
	}
	s.linkCancel()
	s.engine.CloseLinks()
	close(s.stopSampler)
	<-s.samplerDone
	if s.certsDone != nil {
		<-s.certsDone
	}
	if err := s.iceRes.Close(); err != nil {
		s.log.Debug("close ICE sockets", "err", err)
	}
}

// Close stops everything at once (tests).
func (s *Server) Close() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s.Drain(ctx)
}

// Run serves until the first signal, drains, and returns nil. A second
// signal during the drain makes it return at once with an error.
func (s *Server) Run(sigs <-chan os.Signal) error {
	if err := s.Start(); err != nil {
		return err
	}
	sig := <-sigs
	s.log.Info("signal received; draining (send again to exit now)", "signal", sig.String())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		s.Drain(ctx)
		close(done)
	}()
	select {
	case <-done:
		cancel()
		return nil
	case sig := <-sigs:
		cancel()
		return fmt.Errorf("second signal %s: exiting without completing the drain", sig)
	}
}

// linkUpgrader accepts relay links on the admin port (the admin token is
// checked before; no browser ever dials it, so no origin applies).
var linkUpgrader = websocket.Upgrader{ReadBufferSize: 16 << 10, WriteBufferSize: 16 << 10, CheckOrigin: func(*http.Request) bool { return true }}

// serveLink is the owner's end of a relay link: GET /relay/{room} with the
// admin token, upgraded to a WebSocket that carries the link's offers and
// answers. Only a room owned here can be relayed.
func (s *Server) serveLink(w http.ResponseWriter, r *http.Request) {
	room := r.PathValue("room")
	if s.cfg.AdminToken == "" {
		http.Error(w, "relay links need an admin token", http.StatusForbidden)
		return
	}
	if n, _, _ := s.engine.RoomInfo(room); n == 0 {
		http.Error(w, "no such room here", http.StatusNotFound)
		return
	}
	c, err := linkUpgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader answered
	}
	peer := r.Header.Get(statusapi.ForwardedByHeader)
	if len(peer) > 253 {
		peer = peer[:253]
	}
	if err := s.engine.ServeLink(s.linkCtx, room, peer, fleet.NewLinkConn(c)); err != nil {
		s.log.Warn("relay link refused", "room", room, "peer", peer, "err", err)
		_ = c.Close()
	}
}
