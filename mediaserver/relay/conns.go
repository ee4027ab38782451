package relay

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// relayGenerator gives every allocation its own UDP socket on the relay
// address, wrapped so that it sends only to the media pods' ICE ports,
// within the allocation's bitrate, and counts what it carries.
type relayGenerator struct{ s *Server }

func (g *relayGenerator) Validate() error { return nil }

func (g *relayGenerator) AllocatePacketConn(network string, _ int) (net.PacketConn, net.Addr, error) {
	if network != "udp4" && network != "udp" {
		return nil, nil, fmt.Errorf("relay network %q: only UDP", network)
	}
	// The requested port is ignored: a client does not choose the
	// gateway's ports.
	conn, err := net.ListenPacket("udp4", net.JoinHostPort(g.s.cfg.RelayIP.String(), "0"))
	if err != nil {
		return nil, nil, err
	}
	rc := &relayConn{PacketConn: conn, s: g.s}
	if bps := g.s.cfg.AllocationBPS; bps > 0 {
		bytes := float64(bps) / 8
		burst := max(int(bytes/4), 64<<10) // a quarter second, at least a few frames
		rc.toPeer = rate.NewLimiter(rate.Limit(bytes), burst)
		rc.toClient = rate.NewLimiter(rate.Limit(bytes), burst)
	}
	return rc, conn.LocalAddr(), nil
}

var errTCPRelay = errors.New("TCP relay allocations (RFC 6062) are not offered")

func (g *relayGenerator) AllocateConn(string, int) (net.Conn, net.Addr, error) {
	return nil, nil, errTCPRelay
}

// relayConn is one allocation's relay socket.
type relayConn struct {
	net.PacketConn
	s                *Server
	toPeer, toClient *rate.Limiter
}

// WriteTo carries a client's packet to a peer: only a media pod (the
// member list may have changed since the permission) on an ICE port.
// Refused packets are dropped quietly, as TURN drops packets without a
// permission, and counted.
func (c *relayConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	m := c.s.m
	switch {
	case !ok || !c.s.peerIP(ua.IP):
		m.refused.WithLabelValues("peer").Inc()
		return len(p), nil
	case !c.s.peerPort(ua.Port):
		m.refused.WithLabelValues("port").Inc()
		return len(p), nil
	case c.toPeer != nil && !c.toPeer.AllowN(time.Now(), len(p)):
		m.overBudget.WithLabelValues("to_peer").Inc()
		return len(p), nil
	}
	n, err := c.PacketConn.WriteTo(p, addr)
	if err == nil {
		m.packets.WithLabelValues("to_peer").Inc()
		m.bytes.WithLabelValues("to_peer").Add(float64(n))
	}
	return n, err
}

// ReadFrom returns the next packet from a peer for the client, within the
// allocation's bitrate (pion checks the permission).
func (c *relayConn) ReadFrom(p []byte) (int, net.Addr, error) {
	m := c.s.m
	for {
		n, addr, err := c.PacketConn.ReadFrom(p)
		if err != nil {
			return n, addr, err
		}
		if c.toClient != nil && !c.toClient.AllowN(time.Now(), n) {
			m.overBudget.WithLabelValues("to_client").Inc()
			continue
		}
		m.packets.WithLabelValues("to_client").Inc()
		m.bytes.WithLabelValues("to_client").Add(float64(n))
		return n, addr, nil
	}
}

// trackedListener bounds the open TCP/TLS connections (past the bound a
// connection is closed at once and counted), closes a connection that
// reads nothing for the idle timeout (or does not finish its TLS
// handshake in time), and closes every open connection when it closes.
type trackedListener struct {
	net.Listener
	s     *Server
	tls   *tls.Config
	mu    sync.Mutex
	conns map[*idleConn]struct{}
	done  bool
}

func (s *Server) track(ln net.Listener, cfg *tls.Config) *trackedListener {
	return &trackedListener{Listener: ln, s: s, tls: cfg, conns: map[*idleConn]struct{}{}}
}

func (l *trackedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.mu.Lock()
		if l.done || len(l.conns) >= l.s.cfg.MaxConnections {
			l.mu.Unlock()
			l.s.m.connectionsRefused.Inc()
			_ = c.Close()
			continue
		}
		ic := &idleConn{Conn: c, l: l, idle: l.s.cfg.HandshakeTimeout}
		if l.tls != nil {
			ic.Conn = tls.Server(c, l.tls)
		}
		l.conns[ic] = struct{}{}
		l.mu.Unlock()
		l.s.m.connections.Inc()
		return ic, nil
	}
}

func (l *trackedListener) Close() error {
	err := l.Listener.Close()
	l.mu.Lock()
	l.done = true
	conns := make([]*idleConn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
	return err
}

// idleConn extends its read deadline on every read: the first read (the
// TLS handshake and the first request) has the handshake timeout, later
// ones the idle timeout.
type idleConn struct {
	net.Conn
	l    *trackedListener
	idle time.Duration
	once sync.Once
}

func (c *idleConn) Read(p []byte) (int, error) {
	_ = c.Conn.SetReadDeadline(time.Now().Add(c.idle))
	n, err := c.Conn.Read(p)
	c.idle = c.l.s.cfg.IdleTimeout
	return n, err
}

func (c *idleConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
		c.l.s.m.connections.Dec()
	})
	return err
}

// certReloader serves the certificate files and re-reads them when they
// change (a Secret volume the kubelet updates), checked at most every 10 s.
type certReloader struct {
	cert, key string
	mu        sync.Mutex
	cur       *tls.Certificate
	mod       time.Time
	checked   time.Time
}

func newCertReloader(cert, key string) (*certReloader, error) {
	r := &certReloader{cert: cert, key: key}
	if err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *certReloader) load() error {
	st, err := os.Stat(r.cert)
	if err != nil {
		return fmt.Errorf("TLS certificate: %w", err)
	}
	c, err := tls.LoadX509KeyPair(r.cert, r.key)
	if err != nil {
		return fmt.Errorf("TLS certificate: %w", err)
	}
	r.cur, r.mod = &c, st.ModTime()
	return nil
}

func (r *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.checked) > 10*time.Second {
		r.checked = time.Now()
		if st, err := os.Stat(r.cert); err == nil && !st.ModTime().Equal(r.mod) {
			_ = r.load() // a half-written pair keeps the old one
		}
	}
	return r.cur, nil
}

func (r *certReloader) config() *tls.Config {
	return &tls.Config{GetCertificate: r.get, MinVersion: tls.VersionTLS12}
}

func (r *certReloader) close() {}
