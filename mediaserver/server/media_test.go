package server

import (
	"fmt"
	"testing"
	"time"

	"github.com/mediafleet/mediafleet/mediaserver/client"
	"github.com/mediafleet/mediafleet/mediaserver/config"
)

// TestWHIPPublishWHEPPlay publishes synthetic RTP over WHIP and plays it
// over WHEP, counting packets and bytes at the viewer.
func TestWHIPPublishWHEPPlay(t *testing.T) {
	leakCheckFirst(t)
	s := testServer(t, func(c *config.Config) { c.UDPMuxPort = 0 })
	opts := clientOpts(t)
	ctx := ctxT(t, 30*time.Second)

	pub, err := client.Publish(ctx, s.PublicURL(), "stage", opts)
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	defer pub.Close()
	if err := client.WaitConnected(ctx, pub.PC); err != nil {
		t.Fatal(err)
	}
	pub.SendRTP(300, 900)
	waitFor(t, 10*time.Second, "room has a published feed", func() error {
		if s.Engine().RoomCount() != 1 {
			return fmt.Errorf("rooms %d", s.Engine().RoomCount())
		}
		return nil
	})

	var view *client.Session
	waitFor(t, 10*time.Second, "WHEP viewer accepted", func() error {
		view, err = client.Play(ctx, s.PublicURL(), "stage", opts)
		return err
	})
	defer view.Close()
	if err := client.WaitConnected(ctx, view.PC); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "viewer receives RTP", func() error {
		if p := view.Received.Packets.Load(); p < 200 {
			return fmt.Errorf("%d packets", p)
		}
		return nil
	})
	if b := view.Received.Bytes.Load(); b < 200*400 {
		t.Errorf("viewer got %d bytes for %d packets, synthetic payloads are 900 (video) and 120 (audio) bytes", b, view.Received.Packets.Load())
	}
	if tr := view.Received.Tracks.Load(); tr != 2 {
		t.Errorf("viewer got %d tracks, want audio and video", tr)
	}
	st := getStatus(t, s)
	if st.Sessions.Active != 2 || st.Sessions.Rooms != 1 || !st.Ready {
		t.Errorf("status %+v", st)
	}

	for _, sess := range []*client.Session{view, pub} {
		if code, err := sess.Delete(ctx); err != nil || code != 200 {
			t.Fatalf("DELETE: %d %v", code, err)
		}
	}
	waitFor(t, 5*time.Second, "sessions closed", sessionsAre(s, 0))
	if s.Engine().RoomCount() != 0 {
		t.Errorf("room not dropped when empty")
	}
	// The resource is gone.
	if code, _ := view.Delete(ctx); code != 404 {
		t.Errorf("second DELETE = %d, want 404", code)
	}
}

// TestWebSocketRoomThreeParties: every participant receives the two
// others' video.
func TestWebSocketRoomThreeParties(t *testing.T) {
	leakCheckFirst(t)
	s := testServer(t, nil)
	opts := clientOpts(t)
	ctx := ctxT(t, 40*time.Second)
	wsURL := "ws" + s.PublicURL()[len("http"):] + "/ws"

	var parts []*client.Participant
	for i := 0; i < 3; i++ {
		p, err := client.Join(ctx, wsURL, "party", true, opts)
		if err != nil {
			t.Fatalf("join %d: %v", i, err)
		}
		defer p.Close()
		if err := client.WaitConnected(ctx, p.PC); err != nil {
			t.Fatalf("participant %d: %v", i, err)
		}
		p.SendRTP(200, 500)
		parts = append(parts, p)
	}
	for i, p := range parts {
		waitFor(t, 20*time.Second, fmt.Sprintf("participant %d receives two tracks", i), func() error {
			if tr, pk := p.Received.Tracks.Load(), p.Received.Packets.Load(); tr < 2 || pk < 200 {
				return fmt.Errorf("%d tracks, %d packets", tr, pk)
			}
			return nil
		})
		if tr := p.Received.Tracks.Load(); tr != 2 {
			t.Errorf("participant %d got %d tracks, want exactly the two others'", i, tr)
		}
	}
	// Leaving ends the session and the others stop receiving that track.
	if err := parts[0].Leave(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "session closed after leave", sessionsAre(s, 2))
}

// TestWHIPWatchedOverWebSocket: one room registry for both protocols.
func TestWHIPWatchedOverWebSocket(t *testing.T) {
	leakCheckFirst(t)
	s := testServer(t, nil)
	opts := clientOpts(t)
	ctx := ctxT(t, 30*time.Second)
	pub, err := client.Publish(ctx, s.PublicURL(), "mixed", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	pub.SendRTP(200, 400)
	p, err := client.Join(ctx, "ws"+s.PublicURL()[4:]+"/ws", "mixed", false, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	waitFor(t, 15*time.Second, "websocket participant receives the WHIP stream", func() error {
		if pk := p.Received.Packets.Load(); pk < 100 {
			return fmt.Errorf("%d packets", pk)
		}
		return nil
	})
}

// TestWHEPViewerFollowsRepublish: a WHEP viewer cannot renegotiate, so when
// the publisher reconnects its new tracks go to the viewer's existing
// senders and media resumes.
func TestWHEPViewerFollowsRepublish(t *testing.T) {
	leakCheckFirst(t)
	s := testServer(t, nil)
	opts := clientOpts(t)
	ctx := ctxT(t, 40*time.Second)
	pub, err := client.Publish(ctx, s.PublicURL(), "again", opts)
	if err != nil {
		t.Fatal(err)
	}
	pub.SendRTP(200, 300)
	var view *client.Session
	waitFor(t, 10*time.Second, "viewer accepted", func() error {
		view, err = client.Play(ctx, s.PublicURL(), "again", opts)
		return err
	})
	defer view.Close()
	waitFor(t, 10*time.Second, "first media", func() error {
		if view.Received.Packets.Load() < 50 {
			return fmt.Errorf("%d packets", view.Received.Packets.Load())
		}
		return nil
	})
	if _, err := pub.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	_ = pub.Close()
	waitFor(t, 5*time.Second, "publisher gone", sessionsAre(s, 1))
	before := view.Received.Packets.Load()

	pub2, err := client.Publish(ctx, s.PublicURL(), "again", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer pub2.Close()
	pub2.SendRTP(200, 300)
	waitFor(t, 15*time.Second, "media from the new publisher", func() error {
		if got := view.Received.Packets.Load() - before; got < 100 {
			return fmt.Errorf("%d packets since republish", got)
		}
		return nil
	})
}
