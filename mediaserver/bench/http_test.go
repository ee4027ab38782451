package bench

import (
	"io"
	"log/slog"
	"net/http"
	"os"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/mediafleet/mediafleet/mediaserver/server"
)

// BenchmarkHTTPEndpoints: requests per second and p99 for the cheapest
// signalling and admin endpoints under a loopback load of 32 keep-alive
// connections for 5 s (client and server share the 2 cores). -benchtime 1x.
func BenchmarkHTTPEndpoints(b *testing.B) {
	s, err := server.New(serverConfig(), slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start(); err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	endpoints := []struct{ name, method, url string }{
		{"admin-healthz", "GET", s.AdminURL() + "/healthz"},
		{"admin-readyz", "GET", s.AdminURL() + "/readyz"},
		{"admin-status", "GET", s.AdminURL() + "/status"},
		{"signal-whip-preflight", "OPTIONS", s.PublicURL() + "/whip/room"},
		{"signal-demo-page", "GET", s.PublicURL() + "/"},
	}
	for _, ep := range endpoints {
		b.Run(ep.name, func(b *testing.B) {
			const workers = 32
			tr := &http.Transport{MaxIdleConnsPerHost: workers, MaxConnsPerHost: workers}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
			deadline := time.Now().Add(5 * time.Second)
			var mu sync.Mutex
			var lat []time.Duration
			var errs int
			var wg sync.WaitGroup
			start := time.Now()
			for w := 0; w < workers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					local := make([]time.Duration, 0, 4096)
					bad := 0
					for time.Now().Before(deadline) {
						req, _ := http.NewRequest(ep.method, ep.url, nil)
						req.Header.Set("Origin", "http://"+req.Host)
						t0 := time.Now()
						resp, err := c.Do(req)
						if err != nil {
							bad++
							continue
						}
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode >= 400 {
							bad++
						}
						local = append(local, time.Since(t0))
					}
					mu.Lock()
					lat = append(lat, local...)
					errs += bad
					mu.Unlock()
				}()
			}
			wg.Wait()
			el := time.Since(start).Seconds()
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			b.ReportMetric(float64(len(lat))/el, "req/s")
			if len(lat) > 0 {
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
			}
			b.ReportMetric(float64(errs), "errors")
		})
	}
}
