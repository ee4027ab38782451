package server

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mediafleet/mediafleet/mediaserver/client"
	"github.com/mediafleet/mediafleet/mediaserver/config"
	"github.com/mediafleet/mediafleet/mediaserver/rtc"
	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
)

// serverSession is the server's session behind a client's resource URL.
func serverSession(t *testing.T, s *Server, c *client.Session) *rtc.Session {
	t.Helper()
	sess, ok := s.Engine().Session(path.Base(c.Resource))
	if !ok {
		t.Fatalf("no server session for %s", c.Resource)
	}
	return sess
}

// publishSimulcast publishes the recorded Chromium VP8 (a keyframe every
// loop) in three layers q, h, f into room until the test ends.
func publishSimulcast(t *testing.T, ctx context.Context, s *Server, room string, opts client.Options) {
	t.Helper()
	ivf, err := os.ReadFile("../web/testdata/camera.ivf")
	if err != nil {
		t.Fatal(err)
	}
	pub, err := client.PublishSimulcastIVF(ctx, s.PublicURL(), room, ivf, []string{"q", "h", "f"}, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pub.Close() })
}

// playWhenPublished opens a WHEP viewer of room once its feed exists.
func playWhenPublished(t *testing.T, ctx context.Context, s *Server, room string, opts client.Options) *client.Session {
	t.Helper()
	var view *client.Session
	var err error
	waitFor(t, 10*time.Second, "a viewer of "+room, func() error { view, err = client.Play(ctx, s.PublicURL(), room, opts); return err })
	t.Cleanup(func() { _ = view.Close() })
	return view
}

// layerOf is the simulcast layer the server forwards to a viewer ("" for
// none yet).
func layerOf(t *testing.T, s *Server, c *client.Session) string {
	for _, l := range serverSession(t, s, c).Layers() {
		if l != "" {
			return l
		}
	}
	return ""
}

// TestSimulcastLayersPerViewer: a pion publisher sends real VP8 frames (the
// recorded Chromium frames, keyframe on every loop) in three simulcast
// layers q, h, f; the server treats them as one feed. An uncapped viewer
// gets f; a viewer capped at h through the WHEP layer endpoint moves to h
// at a keyframe and its sequence numbers stay continuous across the move;
// a bad cap is refused.
func TestSimulcastLayersPerViewer(t *testing.T) {
	leakCheckFirst(t)
	s := testServer(t, nil)
	ctx := ctxT(t, 60*time.Second)
	opts := clientOpts(t)
	publishSimulcast(t, ctx, s, "sim", opts)
	top := playWhenPublished(t, ctx, s, "sim", opts)
	capped := playWhenPublished(t, ctx, s, "sim", opts)
	waitFor(t, 20*time.Second, "both viewers on the top layer", func() error {
		if a, b := layerOf(t, s, top), layerOf(t, s, capped); a != "f" || b != "f" {
			return fmt.Errorf("layers %q and %q (packets %d, %d)", a, b, top.Received.Packets.Load(), capped.Received.Packets.Load())
		}
		return nil
	})
	code, _, body := do(t, http.MethodPost, capped.Resource+"/layer?max=x", "", "", nil)
	if code != http.StatusBadRequest {
		t.Errorf("cap x: %d %s", code, body)
	}
	if code, _, body := do(t, http.MethodPost, capped.Resource+"/layer?max=h", "", "", nil); code != http.StatusNoContent {
		t.Fatalf("cap h: %d %s", code, body)
	}
	jumps := capped.Received.SeqJumps.Load()
	waitFor(t, 20*time.Second, "the capped viewer on h", func() error {
		if l := layerOf(t, s, capped); l != "h" {
			return fmt.Errorf("layer %q", l)
		}
		return nil
	})
	before := capped.Received.Packets.Load()
	waitFor(t, 10*time.Second, "media on h", func() error {
		if n := capped.Received.Packets.Load(); n < before+50 {
			return fmt.Errorf("%d packets since the switch", n-before)
		}
		return nil
	})
	if j := capped.Received.SeqJumps.Load() - jumps; j != 0 {
		t.Errorf("%d sequence-number jumps across the layer switch, want 0", j)
	}
	if l := layerOf(t, s, top); l != "f" {
		t.Errorf("the uncapped viewer moved to %q", l)
	}
	if got := nackCountsOf(t, s, "media_layer_switches_total"); got < 1 {
		t.Errorf("media_layer_switches_total = %v", got)
	}
	// Viewer-seconds per layer: both viewers counted on f, the capped one
	// on h since its switch (an early estimate may put one on q a moment).
	waitFor(t, 10*time.Second, "time on each layer counted", func() error {
		got := map[string]float64{}
		for _, m := range scrape(t, s)["media_layer_seconds_total"].GetMetric() {
			got[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
		if got["f"] <= 0 || got["h"] <= 0 || got["f"] < got["q"] {
			return fmt.Errorf("media_layer_seconds_total %v", got)
		}
		return nil
	})
	// Each viewer's TWCC feedback drives a send-side estimate.
	waitFor(t, 10*time.Second, "bandwidth estimates", func() error {
		for _, c := range []*client.Session{top, capped} {
			if e := serverSession(t, s, c).Estimate(); e <= 0 {
				return fmt.Errorf("estimate %d", e)
			}
		}
		if n := scrape(t, s)["media_bandwidth_estimate_bps"].GetMetric()[0].GetHistogram().GetSampleCount(); n == 0 {
			return fmt.Errorf("no estimate sample in media_bandwidth_estimate_bps")
		}
		return nil
	})
	t.Logf("estimates: top %d bit/s, capped %d bit/s", serverSession(t, s, top).Estimate(), serverSession(t, s, capped).Estimate())
}

// nackCountsOf reads a counter without labels.
func nackCountsOf(t *testing.T, s *Server, name string) float64 {
	var v float64
	for _, m := range scrape(t, s)[name].GetMetric() {
		v += m.GetCounter().GetValue()
	}
	return v
}

// shapedPath is a viewer-side token bucket nearest the network: packets
// over rate (bits per second) are dropped before the viewer's TWCC and
// NACK machinery sees them, as a narrow link would.
type shapedPath struct {
	interceptor.NoOp
	rate   atomic.Int64 // 0: unlimited
	mu     sync.Mutex
	tokens float64
	last   time.Time
}

func (s *shapedPath) NewInterceptor(string) (interceptor.Interceptor, error) { return s, nil }

func (s *shapedPath) BindRemoteStream(_ *interceptor.StreamInfo, reader interceptor.RTPReader) interceptor.RTPReader {
	return interceptor.RTPReaderFunc(func(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
		for {
			n, attrs, err := reader.Read(b, a)
			if err != nil || s.pass(n) {
				return n, attrs, err
			}
		}
	})
}

// pass takes n bytes from the bucket (at most half a second of rate).
func (s *shapedPath) pass(n int) bool {
	rate := s.rate.Load()
	if rate == 0 {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if !s.last.IsZero() {
		s.tokens = min(s.tokens+now.Sub(s.last).Seconds()*float64(rate)/8, float64(rate)/16)
	}
	s.last = now
	if s.tokens < float64(n) {
		return false
	}
	s.tokens -= float64(n)
	return true
}

// TestBandwidthEstimateChoosesTheLayer: a viewer whose path carries about
// 300 kbit/s settles on the lowest layer through its own estimate (no cap
// asked for), and moves up again once the limit is lifted.
func TestBandwidthEstimateChoosesTheLayer(t *testing.T) {
	leakCheckFirst(t)
	s := testServer(t, nil)
	ctx := ctxT(t, 120*time.Second)
	opts := clientOpts(t)
	publishSimulcast(t, ctx, s, "bwe", opts)
	shaper := &shapedPath{}
	shaper.rate.Store(300_000)
	viewOpts := opts
	var err error
	if viewOpts.API, err = client.NewAPIWith([]client.APIOption{client.WithInterceptor(shaper)}); err != nil {
		t.Fatal(err)
	}
	view := playWhenPublished(t, ctx, s, "bwe", viewOpts)
	waitFor(t, 45*time.Second, "the narrow viewer on the lowest layer", func() error {
		if l := layerOf(t, s, view); l != "q" {
			return fmt.Errorf("layer %q, estimate %d bit/s", l, serverSession(t, s, view).Estimate())
		}
		return nil
	})
	t.Logf("on q with an estimate of %d bit/s", serverSession(t, s, view).Estimate())
	shaper.rate.Store(0)
	waitFor(t, 60*time.Second, "the viewer back above the lowest layer", func() error {
		if l := layerOf(t, s, view); l == "q" || l == "" {
			return fmt.Errorf("layer %q, estimate %d bit/s", l, serverSession(t, s, view).Estimate())
		}
		return nil
	})
	t.Logf("on %s with an estimate of %d bit/s", layerOf(t, s, view), serverSession(t, s, view).Estimate())
}

// TestREMBChoosesTheLayerWithoutTWCC: a viewer that sends no transport-wide
// feedback but REMB (as some clients do) gets the layer its REMB allows:
// the lowest at 120 kbit/s, the top once it reports 5 Mbit/s.
func TestREMBChoosesTheLayerWithoutTWCC(t *testing.T) {
	leakCheckFirst(t)
	s := testServer(t, nil)
	ctx := ctxT(t, 60*time.Second)
	opts := clientOpts(t)
	publishSimulcast(t, ctx, s, "remb", opts)
	viewOpts := opts
	var err error
	if viewOpts.API, err = client.NewAPIWith([]client.APIOption{client.WithoutTWCC()}); err != nil {
		t.Fatal(err)
	}
	view := playWhenPublished(t, ctx, s, "remb", viewOpts)
	var bitrate atomic.Int64
	bitrate.Store(120_000)
	stop := make(chan struct{})
	done := make(chan struct{})
	defer func() { close(stop); <-done }()
	go func() { // REMB every 200 ms for the video the viewer receives
		defer close(done)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			for _, r := range view.PC.GetReceivers() {
				if tr := r.Track(); tr != nil && tr.Kind() == webrtc.RTPCodecTypeVideo {
					_ = view.PC.WriteRTCP([]rtcp.Packet{&rtcp.ReceiverEstimatedMaximumBitrate{Bitrate: float32(bitrate.Load()), SSRCs: []uint32{uint32(tr.SSRC())}}})
				}
			}
		}
	}()
	sess := func() *rtc.Session { return serverSession(t, s, view) }
	waitFor(t, 20*time.Second, "the viewer on q by its REMB", func() error {
		if l := layerOf(t, s, view); l != "q" || sess().Estimate() != 120_000 {
			return fmt.Errorf("layer %q, estimate %d", l, sess().Estimate())
		}
		return nil
	})
	bitrate.Store(5_000_000)
	waitFor(t, 20*time.Second, "the viewer on f by its REMB", func() error {
		if l := layerOf(t, s, view); l != "f" {
			return fmt.Errorf("layer %q, estimate %d", l, sess().Estimate())
		}
		return nil
	})
}

// TestLayerEndpointHostility: the WHEP layer endpoint wants the client's
// token, refuses a cap or feed id out of bounds, and finds no session that
// is not there.
func TestLayerEndpointHostility(t *testing.T) {
	leakCheckFirst(t)
	s := testServer(t, func(c *config.Config) { c.AuthToken = "client-token" })
	ctx := ctxT(t, 30*time.Second)
	opts := clientOpts(t)
	opts.Token = "client-token"
	pub, err := client.Publish(ctx, s.PublicURL(), "cap", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	pub.SendRTP(50, 200)
	view := playWhenPublished(t, ctx, s, "cap", opts)
	auth := map[string]string{"Authorization": "Bearer client-token"}
	for _, tc := range []struct {
		name, url string
		hdr       map[string]string
		want      int
	}{
		{"no token", view.Resource + "/layer?max=h", nil, http.StatusUnauthorized},
		{"wrong token", view.Resource + "/layer?max=h", map[string]string{"Authorization": "Bearer guess"}, http.StatusUnauthorized},
		{"no cap", view.Resource + "/layer", auth, http.StatusBadRequest},
		{"unknown cap", view.Resource + "/layer?max=" + strings.Repeat("x", 5000), auth, http.StatusBadRequest},
		{"feed id too long", view.Resource + "/layer?max=h&feed=" + strings.Repeat("f", 129), auth, http.StatusBadRequest},
		{"unknown session", s.PublicURL() + "/whep/cap/0123456789abcdef0123456789abcdef/layer?max=h", auth, http.StatusNotFound},
		{"a WHIP session", strings.Replace(pub.Resource, "/whip/", "/whep/", 1) + "/layer?max=h", auth, http.StatusNotFound},
		{"accepted", view.Resource + "/layer?max=q", auth, http.StatusNoContent},
	} {
		if code, _, body := do(t, http.MethodPost, tc.url, "", "", tc.hdr); code != tc.want {
			t.Errorf("%s: %d %q, want %d", tc.name, code, body, tc.want)
		}
	}
	if code, _, _ := do(t, http.MethodPost, s.PublicURL()+"/whep/cap?layer=ultra", "application/sdp", "v=0", auth); code != http.StatusBadRequest {
		t.Errorf("WHEP offer with layer=ultra: %d, want 400", code)
	}
}
