package server

import (
	"net"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// cappedListener bounds the connections open on a listener. Past the cap a
// new connection is accepted and closed at once (and counted), so a flood
// of idle or slow connections cannot take every file descriptor and
// goroutine of the process; the ones open are counted for the metrics and
// for the leak detector (each explains a goroutine or two).
type cappedListener struct {
	net.Listener
	max     int64
	open    atomic.Int64
	gauge   prometheus.Gauge
	refused prometheus.Counter
}

func newCappedListener(ln net.Listener, max int, gauge prometheus.Gauge, refused prometheus.Counter) *cappedListener {
	return &cappedListener{Listener: ln, max: int64(max), gauge: gauge, refused: refused}
}

// Accept returns the next connection within the cap.
func (l *cappedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if n := l.open.Add(1); n > l.max {
			l.open.Add(-1)
			l.refused.Inc()
			_ = c.Close()
			continue
		}
		l.gauge.Inc()
		return &countedConn{Conn: c, l: l}, nil
	}
}

// Open is the number of connections open now.
func (l *cappedListener) Open() int { return int(l.open.Load()) }

// countedConn gives its place back once, however often it is closed
// (hijacked WebSocket connections are closed by their own code).
type countedConn struct {
	net.Conn
	l    *cappedListener
	once sync.Once
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.open.Add(-1)
		c.l.gauge.Dec()
	})
	return err
}
