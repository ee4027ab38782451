package server

import (
	"fmt"
	"net/http"
	"os"
	"path"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mediafleet/mediafleet/mediaserver/client"
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
	ivf, err := os.ReadFile("../web/testdata/camera.ivf")
	if err != nil {
		t.Fatal(err)
	}
	opts := clientOpts(t)
	pub, err := client.PublishSimulcastIVF(ctx, s.PublicURL(), "sim", ivf, []string{"q", "h", "f"}, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	var top, capped *client.Session
	waitFor(t, 10*time.Second, "viewers", func() error {
		if top == nil {
			if top, err = client.Play(ctx, s.PublicURL(), "sim", opts); err != nil {
				return err
			}
		}
		capped, err = client.Play(ctx, s.PublicURL(), "sim", opts)
		return err
	})
	defer top.Close()
	defer capped.Close()
	layerOf := func(c *client.Session) string {
		for _, l := range serverSession(t, s, c).Layers() {
			if l != "" {
				return l
			}
		}
		return ""
	}
	waitFor(t, 20*time.Second, "both viewers on the top layer", func() error {
		if a, b := layerOf(top), layerOf(capped); a != "f" || b != "f" {
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
		if l := layerOf(capped); l != "h" {
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
	if l := layerOf(top); l != "f" {
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
	ivf, err := os.ReadFile("../web/testdata/camera.ivf")
	if err != nil {
		t.Fatal(err)
	}
	opts := clientOpts(t)
	pub, err := client.PublishSimulcastIVF(ctx, s.PublicURL(), "bwe", ivf, []string{"q", "h", "f"}, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	shaper := &shapedPath{}
	shaper.rate.Store(300_000)
	viewOpts := opts
	if viewOpts.API, err = client.NewAPIWith([]client.APIOption{client.WithInterceptor(shaper)}); err != nil {
		t.Fatal(err)
	}
	var view *client.Session
	waitFor(t, 10*time.Second, "viewer", func() error { view, err = client.Play(ctx, s.PublicURL(), "bwe", viewOpts); return err })
	defer view.Close()
	layerOf := func() string {
		for _, l := range serverSession(t, s, view).Layers() {
			if l != "" {
				return l
			}
		}
		return ""
	}
	waitFor(t, 45*time.Second, "the narrow viewer on the lowest layer", func() error {
		if l := layerOf(); l != "q" {
			return fmt.Errorf("layer %q, estimate %d bit/s", l, serverSession(t, s, view).Estimate())
		}
		return nil
	})
	t.Logf("on q with an estimate of %d bit/s", serverSession(t, s, view).Estimate())
	shaper.rate.Store(0)
	waitFor(t, 60*time.Second, "the viewer back above the lowest layer", func() error {
		if l := layerOf(); l == "q" || l == "" {
			return fmt.Errorf("layer %q, estimate %d bit/s", l, serverSession(t, s, view).Estimate())
		}
		return nil
	})
	t.Logf("on %s with an estimate of %d bit/s", layerOf(), serverSession(t, s, view).Estimate())
}

// TestREMBChoosesTheLayerWithoutTWCC: a viewer that sends no transport-wide
// feedback but REMB (as some clients do) gets the layer its REMB allows:
// the lowest at 120 kbit/s, the top once it reports 5 Mbit/s.
func TestREMBChoosesTheLayerWithoutTWCC(t *testing.T) {
	leakCheckFirst(t)
	s := testServer(t, nil)
	ctx := ctxT(t, 60*time.Second)
	ivf, err := os.ReadFile("../web/testdata/camera.ivf")
	if err != nil {
		t.Fatal(err)
	}
	opts := clientOpts(t)
	pub, err := client.PublishSimulcastIVF(ctx, s.PublicURL(), "remb", ivf, []string{"q", "h", "f"}, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	viewOpts := opts
	if viewOpts.API, err = client.NewAPIWith([]client.APIOption{client.WithoutTWCC()}); err != nil {
		t.Fatal(err)
	}
	var view *client.Session
	waitFor(t, 10*time.Second, "viewer", func() error { view, err = client.Play(ctx, s.PublicURL(), "remb", viewOpts); return err })
	defer view.Close()
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
	layerOf := func() string {
		for _, l := range sess().Layers() {
			if l != "" {
				return l
			}
		}
		return ""
	}
	waitFor(t, 20*time.Second, "the viewer on q by its REMB", func() error {
		if l := layerOf(); l != "q" || sess().Estimate() != 120_000 {
			return fmt.Errorf("layer %q, estimate %d", l, sess().Estimate())
		}
		return nil
	})
	bitrate.Store(5_000_000)
	waitFor(t, 20*time.Second, "the viewer on f by its REMB", func() error {
		if l := layerOf(); l != "f" {
			return fmt.Errorf("layer %q, estimate %d", l, sess().Estimate())
		}
		return nil
	})
}
