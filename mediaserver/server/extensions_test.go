package server

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"

	"github.com/mediafleet/mediafleet/mediaserver/client"
)

// extensionWatch is a viewer-side interceptor: it counts the video packets,
// those without abs-send-time under the id the viewer negotiated, those
// whose abs-send-time is not within a second of the viewer's clock, and
// those that carry any extension at all.
type extensionWatch struct {
	interceptor.NoOp
	packets, withoutAbs, stale, withAny atomic.Int32
}

func (w *extensionWatch) NewInterceptor(string) (interceptor.Interceptor, error) { return w, nil }

func (w *extensionWatch) BindRemoteStream(info *interceptor.StreamInfo, reader interceptor.RTPReader) interceptor.RTPReader {
	if info.MimeType != "video/VP8" {
		return reader
	}
	var absID uint8
	for _, e := range info.RTPHeaderExtensions {
		if e.URI == sdp.ABSSendTimeURI {
			absID = uint8(e.ID)
		}
	}
	return interceptor.RTPReaderFunc(func(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
		n, attrs, err := reader.Read(b, a)
		var p rtp.Packet
		if err != nil || p.Unmarshal(b[:n]) != nil {
			return n, attrs, err
		}
		w.packets.Add(1)
		if p.Extension {
			w.withAny.Add(1)
		}
		v := p.GetExtension(absID)
		if absID == 0 || len(v) != 3 {
			w.withoutAbs.Add(1)
			return n, attrs, err
		}
		got := uint32(v[0])<<16 | uint32(v[1])<<8 | uint32(v[2])
		now := uint32(((uint64(time.Now().UnixNano())%(64*uint64(time.Second)))<<18)/uint64(time.Second)) & 0xFFFFFF
		if d := (now - got) & 0xFFFFFF; d >= 1<<18 {
			w.stale.Add(1)
		}
		return n, attrs, err
	})
}

// TestHeaderExtensionsPerViewer: the server writes abs-send-time to a
// viewer that negotiated it, with the time it sent the packet; a viewer
// that did not gets no header extension at all (not the publisher's mid
// and rid either).
func TestHeaderExtensionsPerViewer(t *testing.T) {
	leakCheckFirst(t)
	s := testServer(t, nil)
	ctx := ctxT(t, 30*time.Second)
	opts := clientOpts(t)
	pub, err := client.Publish(ctx, s.PublicURL(), "ext", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	pub.SendRTP(200, 800)
	play := func(w *extensionWatch, extra ...client.APIOption) {
		api, err := client.NewAPIWith(append([]client.APIOption{client.WithInterceptor(w)}, extra...))
		if err != nil {
			t.Fatal(err)
		}
		o := opts
		o.API = api
		var view *client.Session
		waitFor(t, 10*time.Second, "viewer", func() error { view, err = client.Play(ctx, s.PublicURL(), "ext", o); return err })
		t.Cleanup(func() { view.Close() })
	}
	abs, plain := &extensionWatch{}, &extensionWatch{}
	play(abs, client.WithHeaderExtension(sdp.ABSSendTimeURI))
	play(plain)
	waitFor(t, 15*time.Second, "video at both viewers", func() error {
		if abs.packets.Load() < 50 || plain.packets.Load() < 50 {
			return fmt.Errorf("%d and %d video packets", abs.packets.Load(), plain.packets.Load())
		}
		return nil
	})
	if without, stale := abs.withoutAbs.Load(), abs.stale.Load(); without != 0 || stale != 0 {
		t.Errorf("abs-send-time viewer: %d packets without abs-send-time, %d with one not within a second of now", without, stale)
	}
	if n := plain.withAny.Load(); n != 0 {
		t.Errorf("a viewer that negotiated no header extension got %d packets with one", n)
	}
}
