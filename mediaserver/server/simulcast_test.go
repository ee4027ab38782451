package server

import (
	"fmt"
	"net/http"
	"os"
	"path"
	"testing"
	"time"

	"github.com/mediafleet/mediafleet/mediaserver/client"
	"github.com/mediafleet/mediafleet/mediaserver/rtc"
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
}

// nackCountsOf reads a counter without labels.
func nackCountsOf(t *testing.T, s *Server, name string) float64 {
	var v float64
	for _, m := range scrape(t, s)[name].GetMetric() {
		v += m.GetCounter().GetValue()
	}
	return v
}
