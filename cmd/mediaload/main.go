// Command mediaload is a load generator for any mediafleet endpoint, built on
// pion clients: it ramps WHIP publishers, WHEP viewers and WebSocket room
// participants at a set rate, sends synthetic RTP, and reports setup rate,
// time to connected, forwarded packets and bytes, loss, and (from the
// server's /status and /metrics) goroutines and memory per session. It is
// bounded in sessions and time and stops by itself.
//
//	mediaload -url http://127.0.0.1:8080 -admin http://127.0.0.1:9090 \
//	    -publishers 5 -viewers 4 -ws 6 -rate 20 -duration 30s -json out.json
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/mediafleet/mediafleet/mediaserver/client"
	"github.com/mediafleet/mediafleet/mediaserver/config"
	"github.com/mediafleet/mediafleet/mediaserver/statusapi"
)

const (
	maxSessions = 5000
	maxDuration = 10 * time.Minute
)

type options struct {
	url, admin, adminToken, token, room, jsonOut, interfaces, caCert string
	publishers, viewers, ws, wsRoom                                  int
	rate                                                             float64
	duration                                                         time.Duration
	pps, payload                                                     int
}

// Summary is the final report (also written as JSON).
type Summary struct {
	Target           string         `json:"target"`
	Requested        int            `json:"requested"`
	Connected        int            `json:"connected"`
	Failed           int            `json:"failed"`
	FailureReasons   map[string]int `json:"failureReasons,omitempty"`
	SetupRate        float64        `json:"setupPerSecond"`
	TimeToConnected  Percentiles    `json:"timeToConnectedMs"`
	MediaSeconds     float64        `json:"mediaSeconds"`
	ReceivedPackets  uint64         `json:"receivedPackets"`
	ReceivedPPS      float64        `json:"receivedPacketsPerSecond"`
	ReceivedBps      float64        `json:"receivedBytesPerSecond"`
	ExpectedPackets  uint64         `json:"expectedPackets"`
	LossPercent      float64        `json:"lossPercent"`
	JitterMsMax      float64        `json:"jitterMsMax"`
	ServerSessions   int            `json:"serverSessions,omitempty"`
	ServerGoroutines int            `json:"serverGoroutines,omitempty"`
	GoroutinesPerSes float64        `json:"serverGoroutinesPerSession,omitempty"`
	ServerHeapBytes  float64        `json:"serverHeapBytes,omitempty"`
	HeapPerSession   float64        `json:"serverHeapBytesPerSession,omitempty"`
}

// Percentiles of a latency distribution, in milliseconds.
type Percentiles struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
}

func main() {
	var o options
	flag.StringVar(&o.url, "url", "http://127.0.0.1:8080", "signalling base URL of a mediaserver or a MediaService's Service")
	flag.StringVar(&o.admin, "admin", "", "admin base URLs of the server's pods, comma-separated, for /status and /metrics (optional; figures are summed)")
	flag.StringVar(&o.adminToken, "admin-token", os.Getenv("MEDIAFLEET_ADMIN_TOKEN"), "the pods' ADMIN_TOKEN, for /status (default $MEDIAFLEET_ADMIN_TOKEN; the operator keeps it in the Secret NAME-admin-token)")
	flag.StringVar(&o.caCert, "cacert", "", "PEM file of the CA that issued an https:// server's certificate (default: the system's CAs)")
	flag.StringVar(&o.token, "token", "", "bearer token, when the server wants one")
	flag.StringVar(&o.room, "room", "load", "room name prefix")
	flag.IntVar(&o.publishers, "publishers", 1, "WHIP publishers, one room each")
	flag.IntVar(&o.viewers, "viewers", 1, "WHEP viewers per publisher")
	flag.IntVar(&o.ws, "ws", 0, "WebSocket participants (each publishes and receives)")
	flag.IntVar(&o.wsRoom, "ws-room-size", 3, "WebSocket participants per room")
	flag.Float64Var(&o.rate, "rate", 10, "sessions opened per second")
	flag.DurationVar(&o.duration, "duration", 20*time.Second, "how long media flows once every session is up (at most 10m)")
	flag.IntVar(&o.pps, "pps", 200, "video packets per second per publisher")
	flag.IntVar(&o.payload, "payload", 1000, "bytes per video packet")
	flag.StringVar(&o.interfaces, "interfaces", "lo", "comma-separated interfaces the clients gather ICE candidates on (e.g. mfdev0,mfbr0 for make dev)")
	flag.StringVar(&o.jsonOut, "json", "", "also write the summary as JSON to this file (- for stdout)")
	flag.Parse()
	if err := o.validate(); err != nil {
		fmt.Fprintln(os.Stderr, "mediaload:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sum, err := run(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mediaload:", err)
		os.Exit(1)
	}
	printSummary(sum)
	if o.jsonOut != "" {
		raw, _ := json.MarshalIndent(sum, "", "  ")
		if o.jsonOut == "-" {
			fmt.Println(string(raw))
		} else if err := os.WriteFile(o.jsonOut, raw, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "mediaload:", err)
			os.Exit(1)
		}
	}
	if sum.Connected == 0 {
		os.Exit(1)
	}
}

func (o *options) validate() error {
	total := o.publishers*(1+o.viewers) + o.ws
	switch {
	case total <= 0:
		return errors.New("nothing to do: set -publishers and/or -ws")
	case total > maxSessions:
		return fmt.Errorf("%d sessions requested; at most %d", total, maxSessions)
	case o.duration <= 0 || o.duration > maxDuration:
		return fmt.Errorf("-duration must be within (0, %s]", maxDuration)
	case o.rate <= 0:
		return errors.New("-rate must be positive")
	case o.pps <= 0 || o.pps > 5000 || o.payload < 16 || o.payload > 1200:
		return errors.New("-pps must be 1..5000 and -payload 16..1200")
	case o.wsRoom < 2:
		return errors.New("-ws-room-size must be at least 2")
	}
	return nil
}

type result struct {
	setup time.Duration
	err   error
}

func run(ctx context.Context, o options) (Summary, error) {
	var ifaces []string // none: loopback
	if o.interfaces != "" {
		ifaces = strings.Split(o.interfaces, ",")
	}
	api, err := client.NewAPI(ifaces...)
	if err != nil {
		return Summary{}, err
	}
	tlsCfg, err := tlsConfig(o.caCert)
	if err != nil {
		return Summary{}, err
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = tlsCfg
	// A 503 with Retry-After (a full or draining pod, or a room no pod can
	// take yet) is retried as a real client would, a few times.
	copts := client.Options{API: api, Token: o.token, TLS: tlsCfg, Retries: 3,
		HTTP: &http.Client{Timeout: 30 * time.Second, Transport: transport}}
	sum := Summary{Target: o.url, Requested: o.publishers*(1+o.viewers) + o.ws, FailureReasons: map[string]int{}}

	var (
		mu        sync.Mutex
		results   []result
		pubs      []*client.Session
		views     []*client.Session
		parts     []*client.Participant
		started   atomic.Int64
		connected atomic.Int64
		failed    atomic.Int64
		inMedia   atomic.Bool
	)
	record := func(setup time.Duration, err error) {
		mu.Lock()
		results = append(results, result{setup, err})
		mu.Unlock()
		if err != nil {
			failed.Add(1)
		} else {
			connected.Add(1)
		}
	}
	defer func() {
		for _, s := range append(pubs, views...) {
			_, _ = s.Delete(context.Background())
			_ = s.Close()
		}
		for _, p := range parts {
			_ = p.Leave()
			_ = p.Close()
		}
	}()

	// Progress once a second on stderr.
	progressDone := make(chan struct{})
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-progressDone:
				return
			case <-t.C:
				var pkts uint64
				mu.Lock()
				for _, v := range views {
					pkts += v.Received.Packets.Load()
				}
				for _, p := range parts {
					pkts += p.Received.Packets.Load()
				}
				mu.Unlock()
				c, f := connected.Load(), failed.Load()
				if inMedia.Load() {
					fmt.Fprintf(os.Stderr, "[mediaload] media flowing: %d sessions running, %d failed; packets received %d\n", c, f, pkts)
				} else {
					fmt.Fprintf(os.Stderr, "[mediaload] opening: %d/%d started, %d connected, %d failed, %d setting up; packets received %d\n",
						started.Load(), sum.Requested, c, f, started.Load()-c-f, pkts)
				}
			}
		}
	}()
	defer close(progressDone)

	var idle Summary
	admins := config.SplitList(o.admin)
	if len(admins) > 0 {
		serverFootprint(admins, o.adminToken, &idle, 0, 0) // before any session of ours
	}
	interval := time.Duration(float64(time.Second) / o.rate)
	pace := time.NewTicker(interval)
	defer pace.Stop()
	wait := func() bool {
		select {
		case <-ctx.Done():
			return false
		case <-pace.C:
			started.Add(1)
			return true
		}
	}
	var wg sync.WaitGroup
	rampStart := time.Now()
	// Publishers first (viewers need a feed), then their viewers, then rooms.
	for i := 0; i < o.publishers && wait(); i++ {
		room := fmt.Sprintf("%s-%d", o.room, i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			s, err := client.Publish(ctx, o.url, room, copts)
			if err == nil {
				err = client.WaitConnected(ctx, s.PC)
				mu.Lock()
				pubs = append(pubs, s)
				mu.Unlock()
				s.SendRTP(o.pps, o.payload)
			}
			record(time.Since(t0), err)
		}()
	}
	wg.Wait()
	time.Sleep(500 * time.Millisecond) // first RTP makes the feeds
	for i := 0; i < o.publishers*o.viewers && wait(); i++ {
		room := fmt.Sprintf("%s-%d", o.room, i%o.publishers)
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			s, err := client.Play(ctx, o.url, room, copts)
			if err == nil {
				err = client.WaitConnected(ctx, s.PC)
				mu.Lock()
				views = append(views, s)
				mu.Unlock()
			}
			record(time.Since(t0), err)
		}()
	}
	wsURL := "ws" + strings.TrimPrefix(o.url, "http") + "/ws"
	for i := 0; i < o.ws && wait(); i++ {
		room := fmt.Sprintf("%s-ws-%d", o.room, i/o.wsRoom)
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			p, err := client.Join(ctx, wsURL, room, true, copts)
			if err == nil {
				err = client.WaitConnected(ctx, p.PC)
				mu.Lock()
				parts = append(parts, p)
				mu.Unlock()
				p.SendRTP(o.pps, o.payload)
			}
			record(time.Since(t0), err)
		}()
	}
	wg.Wait()
	rampTook := time.Since(rampStart)

	// Media window.
	count := func() (recvPkts, recvBytes, sent uint64) {
		mu.Lock()
		defer mu.Unlock()
		for _, v := range views {
			recvPkts += v.Received.Packets.Load()
			recvBytes += v.Received.Bytes.Load()
		}
		for _, p := range parts {
			recvPkts += p.Received.Packets.Load()
			recvBytes += p.Received.Bytes.Load()
		}
		for _, s := range pubs {
			sent += s.Sent.Load() * uint64(o.viewers)
		}
		for _, p := range parts {
			sent += p.Sent.Load() * uint64(o.wsRoom-1)
		}
		return
	}
	inMedia.Store(true)
	p0, b0, s0 := count()
	t0 := time.Now()
	select {
	case <-ctx.Done():
	case <-time.After(o.duration):
	}
	p1, b1, s1 := count()
	el := time.Since(t0).Seconds()
	// Synthetic audio rides along with WHIP publishers (50 packets/s to
	// each viewer); take it out so loss compares video with video.
	audio := uint64(float64(len(views)) * 50 * el)
	sum.MediaSeconds = el
	mu.Lock()
	for _, v := range views {
		sum.JitterMsMax = max(sum.JitterMsMax, v.Received.JitterMs())
	}
	for _, p := range parts {
		sum.JitterMsMax = max(sum.JitterMsMax, p.Received.JitterMs())
	}
	mu.Unlock()
	sum.ReceivedPackets = p1 - p0
	sum.ReceivedPPS = float64(p1-p0) / el
	sum.ReceivedBps = float64(b1-b0) / el
	sum.ExpectedPackets = s1 - s0
	if exp := float64(s1 - s0); exp > 0 {
		got := float64(p1-p0) - float64(min(audio, p1-p0))
		sum.LossPercent = max(0, 100*(1-got/exp))
	}

	var lat []time.Duration
	for _, r := range results {
		if r.err != nil {
			sum.Failed++
			sum.FailureReasons[reason(r.err)]++
			continue
		}
		sum.Connected++
		lat = append(lat, r.setup)
	}
	sum.SetupRate = float64(sum.Connected) / rampTook.Seconds()
	sum.TimeToConnected = percentiles(lat)
	if len(admins) > 0 {
		serverFootprint(admins, o.adminToken, &sum, idle.ServerGoroutines, idle.ServerHeapBytes)
	}
	return sum, nil
}

// tlsConfig trusts the CA in caFile (empty: the system's CAs).
func tlsConfig(caFile string) (*tls.Config, error) {
	if caFile == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("-cacert: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("-cacert %s: no PEM certificate in it", caFile)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// maxReasonLen bounds one failure reason in the summary.
const maxReasonLen = 300

// reason is the whole failure, one line, for grouping: HTTP errors by
// status and the server's message, others by their full text.
func reason(err error) string {
	var he *client.HTTPError
	s := err.Error()
	if errors.As(err, &he) {
		s = "HTTP " + strconv.Itoa(he.Status) + ": " + strings.TrimSpace(he.Body)
	}
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > maxReasonLen {
		s = s[:maxReasonLen] + "…"
	}
	return s
}

func percentiles(d []time.Duration) Percentiles {
	if len(d) == 0 {
		return Percentiles{}
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	at := func(p float64) float64 { return float64(d[int(p*float64(len(d)-1))].Microseconds()) / 1000 }
	return Percentiles{P50: at(0.5), P90: at(0.9), P99: at(0.99)}
}

// serverFootprint reads the servers' own view of the load, summed over
// their pods; per-session figures are over the idle goroutines and heap
// read before the ramp.
func serverFootprint(admins []string, token string, sum *Summary, idleGoroutines int, idleHeap float64) {
	c := &http.Client{Timeout: 5 * time.Second}
	sum.ServerSessions, sum.ServerGoroutines, sum.ServerHeapBytes = 0, 0, 0
	sc := statusapi.Client{HTTP: c, Token: token}
	for _, admin := range admins {
		st, err := sc.Report(context.Background(), admin)
		var se *statusapi.StatusError
		switch {
		case err == nil:
			sum.ServerSessions += st.Sessions.Active
			sum.ServerGoroutines += st.Goroutines.Current
		case errors.As(err, &se) && se.Code == http.StatusUnauthorized:
			fmt.Fprintf(os.Stderr, "[mediaload] %s%s: 401: give the pods' admin token with -admin-token\n", admin, statusapi.Path)
		default:
			fmt.Fprintf(os.Stderr, "[mediaload] %v\n", err)
		}
		if resp, err := c.Get(admin + "/metrics"); err == nil {
			parser := expfmt.NewTextParser(model.UTF8Validation)
			fams, err := parser.TextToMetricFamilies(resp.Body)
			resp.Body.Close()
			if f := fams["media_memory_usage_bytes"]; err == nil && f != nil && len(f.GetMetric()) == 1 {
				sum.ServerHeapBytes += f.GetMetric()[0].GetGauge().GetValue()
			} else if err != nil {
				fmt.Fprintf(os.Stderr, "[mediaload] %s/metrics: %v\n", admin, err)
			}
		}
	}
	if sum.ServerSessions > 0 && idleGoroutines > 0 {
		sum.GoroutinesPerSes = float64(sum.ServerGoroutines-idleGoroutines) / float64(sum.ServerSessions)
	}
	if sum.ServerSessions > 0 && idleHeap > 0 {
		sum.HeapPerSession = (sum.ServerHeapBytes - idleHeap) / float64(sum.ServerSessions)
	}
}

func printSummary(s Summary) {
	fmt.Printf("target            %s\n", s.Target)
	fmt.Printf("sessions          %d connected, %d failed of %d\n", s.Connected, s.Failed, s.Requested)
	for r, n := range s.FailureReasons {
		fmt.Printf("  failed          %d × %s\n", n, r)
	}
	fmt.Printf("setup rate        %.1f sessions/s\n", s.SetupRate)
	fmt.Printf("time to connected p50 %.1f ms, p90 %.1f ms, p99 %.1f ms\n", s.TimeToConnected.P50, s.TimeToConnected.P90, s.TimeToConnected.P99)
	fmt.Printf("received          %.0f packets/s, %.0f bytes/s over %.1f s\n", s.ReceivedPPS, s.ReceivedBps, s.MediaSeconds)
	fmt.Printf("loss (video)      %.2f %% of %d expected packets\n", s.LossPercent, s.ExpectedPackets)
	fmt.Printf("jitter            %.2f ms (worst track, RFC 3550)\n", s.JitterMsMax)
	if s.ServerSessions > 0 {
		fmt.Printf("server            %d sessions, %d goroutines (%.1f per session over idle), heap in use %.1f MiB (%.0f KiB per session over idle, without GC)\n",
			s.ServerSessions, s.ServerGoroutines, s.GoroutinesPerSes, s.ServerHeapBytes/(1<<20), s.HeapPerSession/1024)
	}
}
