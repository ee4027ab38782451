package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mediafleet/mediafleet/mediaserver/client"
	"github.com/mediafleet/mediafleet/mediaserver/config"
	"github.com/mediafleet/mediafleet/mediaserver/server/servertest"
	"github.com/mediafleet/mediafleet/mediaserver/testpki"
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
	s := servertest.Start(t, nil)
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

// TestReasonKeepsTheWholeFailure: a failure reason is kept whole (it was
// cut at the first ':', leaving `Post "http`), on one line and bounded.
func TestReasonKeepsTheWholeFailure(t *testing.T) {
	err := errors.New(`Post "http://198.18.16.10:8080/whip/load-0": dial tcp 198.18.16.10:8080: connect: connection refused`)
	if got := reason(err); got != err.Error() {
		t.Errorf("reason %q, want the whole error", got)
	}
	he := &client.HTTPError{Status: 503, Body: "session limit reached (2 per pod); retry later\n"}
	if got := reason(he); got != "HTTP 503: session limit reached (2 per pod); retry later" {
		t.Errorf("reason %q", got)
	}
	if got := reason(errors.New(strings.Repeat("x", 1000))); len(got) > maxReasonLen+4 {
		t.Errorf("reason of %d bytes", len(got))
	}
}

// TestRunOverHTTPSWithFailures: an https:// server trusted through
// -cacert; sessions beyond its limit fail with the server's own words.
func TestRunOverHTTPSWithFailures(t *testing.T) {
	ca := testpki.NewCA(t)
	dir := t.TempDir()
	cert, key := ca.Issue(t, "127.0.0.1")
	certFile, keyFile := testpki.WritePair(t, dir, cert, key)
	caFile := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(caFile, ca.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	const adminToken = "mediaload-test-admin-token-0123"
	s := servertest.Start(t, func(c *config.Config) {
		c.MaxSessions = 2
		c.TLSCertFile, c.TLSKeyFile = certFile, keyFile
		c.AdminToken = adminToken
	})
	o := options{url: s.PublicURL(), admin: s.AdminURL(), adminToken: adminToken, caCert: caFile, room: "t", publishers: 1, viewers: 2,
		rate: 50, duration: time.Second, pps: 100, payload: 400, wsRoom: 3}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sum, err := run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	printSummary(sum)
	if sum.Connected != 2 || sum.Failed != 1 {
		t.Fatalf("connected %d failed %d (%v), want 2 and 1", sum.Connected, sum.Failed, sum.FailureReasons)
	}
	if sum.ServerSessions != 2 {
		t.Errorf("server sessions %d through the admin token, want 2", sum.ServerSessions)
	}
	for r := range sum.FailureReasons {
		if !strings.Contains(r, "HTTP 503: session limit reached (2 per pod)") {
			t.Errorf("failure reason %q", r)
		}
	}
}
