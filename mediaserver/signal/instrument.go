package signal

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/mediafleet/mediafleet/mediaserver/metrics"
)

// Instrument records media_http_* for every request, labelled by the mux
// route pattern (never the raw path, which holds room names and ids).
func Instrument(m *metrics.Metrics, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		m.HTTPInFlight.Inc()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		m.HTTPInFlight.Dec()
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		}
		m.HTTPRequests.WithLabelValues(r.Method, route, strconv.Itoa(rec.status)).Inc()
		m.HTTPDuration.WithLabelValues(r.Method, route).Observe(time.Since(start).Seconds())
	})
}

// InitRoute makes a route's media_http_* series exist before its first
// request (with the status it answers when all goes well), so dashboards
// and absent() alerts see them on a fresh pod. pattern is the mux pattern
// ("POST /whip/{room}"), which is the route label.
func InitRoute(m *metrics.Metrics, pattern string, okStatus int) {
	method := "GET"
	if i := strings.IndexByte(pattern, ' '); i > 0 {
		method = pattern[:i]
	}
	m.HTTPRequests.WithLabelValues(method, pattern, strconv.Itoa(okStatus))
	m.HTTPDuration.WithLabelValues(method, pattern)
}

type statusRecorder struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if !s.wroteHeader {
		s.status, s.wroteHeader = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	s.wroteHeader = true
	return s.ResponseWriter.Write(b)
}

// Hijack lets WebSocket upgrades through; a hijacked request counts as 101.
func (s *statusRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, ok := s.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("response writer cannot hijack")
	}
	s.status, s.wroteHeader = http.StatusSwitchingProtocols, true
	return h.Hijack()
}

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }
