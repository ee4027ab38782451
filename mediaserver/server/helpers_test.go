package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/mediafleet/mediafleet/mediaserver/client"
	"github.com/mediafleet/mediafleet/mediaserver/config"
	"github.com/mediafleet/mediafleet/mediaserver/statusapi"
)

// testAdminToken is the ADMIN_TOKEN of tests that run a fleet.
const testAdminToken = "server-test-admin-token-0123456789"

// testServer starts a mediaserver on loopback with ephemeral ports.
func testServer(t *testing.T, mut func(*config.Config)) *Server {
	t.Helper()
	cfg := config.Loopback()
	cfg.DrainTimeout = 2 * time.Second
	if mut != nil {
		mut(&cfg)
	}
	level := slog.LevelWarn
	if os.Getenv("MEDIA_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	s, err := New(cfg, log)
	if err != nil {
		t.Fatalf("new server: %v", err)
	}
	if err := s.Start(); err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// leakCheckFirst verifies that no goroutine outlives the test. Call it
// first: its cleanup then runs last, after the servers and clients close.
func leakCheckFirst(t *testing.T, ignore ...goleak.Option) {
	t.Helper()
	opts := append([]goleak.Option{goleak.IgnoreCurrent()}, ignore...)
	t.Cleanup(func() {
		http.DefaultClient.CloseIdleConnections()
		var err error
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
			if err = goleak.Find(opts...); err == nil {
				return
			}
		}
		if path := os.Getenv("LEAK_DUMP"); path != "" {
			buf := make([]byte, 8<<20)
			_ = os.WriteFile(path, buf[:runtime.Stack(buf, true)], 0o644)
		}
		t.Errorf("goroutines leaked: %v", err)
	})
}

func clientOpts(t *testing.T) client.Options {
	t.Helper()
	api, err := client.NewAPI()
	if err != nil {
		t.Fatal(err)
	}
	return client.Options{API: api, HTTP: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 20 * time.Second}}
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() error) {
	t.Helper()
	var last error
	if err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, d, true, func(context.Context) (bool, error) {
		last = cond()
		return last == nil, nil
	}); err != nil {
		t.Fatalf("timed out after %s waiting for %s: %v", d, what, last)
	}
}

func getStatus(t *testing.T, s *Server) statusapi.Report {
	t.Helper()
	c := statusapi.Client{Token: s.cfg.AdminToken}
	r, err := c.Report(context.Background(), s.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func sessionsAre(s *Server, n int) func() error {
	return func() error {
		if got := s.Engine().SessionCount(); got != n {
			return fmt.Errorf("%d sessions, want %d", got, n)
		}
		return nil
	}
}

var candPort = regexp.MustCompile(`a=candidate:\S+ \d+ udp \d+ (\S+) (\d+) typ host`)

// hostCandidatePorts lists the ports of host candidates in an SDP.
func hostCandidatePorts(sdp string) []int {
	var out []int
	for _, m := range candPort.FindAllStringSubmatch(sdp, -1) {
		p, _ := strconv.Atoi(m[2])
		out = append(out, p)
	}
	return out
}

func do(t *testing.T, method, url, ctype, body string, hdr map[string]string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}
