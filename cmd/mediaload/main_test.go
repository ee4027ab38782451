package main

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mediafleet/mediafleet/mediaserver/config"
	"github.com/mediafleet/mediafleet/mediaserver/server"
)

func TestValidate(t *testing.T) {
	base := options{publishers: 1, viewers: 1, rate: 10, duration: time.Second, pps: 100, payload: 500, wsRoom: 3}
	cases := map[string]func(*options){
		"nothing to do": func(o *options) { o.publishers, o.ws = 0, 0 },
		"too many":      func(o *options) { o.publishers, o.viewers = 100, 100 },
		"too long":      func(o *options) { o.duration = time.Hour },
		"no rate":       func(o *options) { o.rate = 0 },
		"huge payload":  func(o *options) { o.payload = 9000 },
		"room of one":   func(o *options) { o.ws, o.wsRoom = 2, 1 },
	}
	if err := base.validate(); err != nil {
		t.Fatalf("valid options refused: %v", err)
	}
	for name, mut := range cases {
		o := base
		mut(&o)
		if err := o.validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestRunAgainstARealServer: a small mixed load against an in-process
// mediaserver connects everything, carries media and reads the server's
// footprint.
func TestRunAgainstARealServer(t *testing.T) {
	cfg := config.Loopback()
	cfg.DrainTimeout = time.Second
	s, err := server.New(cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	o := options{url: s.PublicURL(), admin: s.AdminURL(), room: "t", publishers: 2, viewers: 2, ws: 3, wsRoom: 3,
		rate: 50, duration: 3 * time.Second, pps: 100, payload: 400}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sum, err := run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	printSummary(sum)
	if sum.Connected != 9 || sum.Failed != 0 {
		t.Fatalf("connected %d, failed %d (%v), want 9 and 0", sum.Connected, sum.Failed, sum.FailureReasons)
	}
	if sum.ReceivedPPS < 100 || sum.TimeToConnected.P50 <= 0 {
		t.Errorf("summary %+v", sum)
	}
	if sum.ServerSessions != 9 || sum.ServerGoroutines == 0 || sum.ServerHeapBytes == 0 {
		t.Errorf("server footprint not read: %+v", sum)
	}
	if !strings.HasPrefix(sum.Target, "http://127.0.0.1:") {
		t.Errorf("target %q", sum.Target)
	}
}
