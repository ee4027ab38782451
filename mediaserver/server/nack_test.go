package server

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/mediafleet/mediafleet/mediaserver/client"
)

// lossyPath is a viewer-side interceptor nearest the network: it drops
// one RTP packet of the video stream (the viewer's NACK generator then
// sees a gap and asks for it) and counts that sequence number arriving
// again afterwards: on the video stream itself (again) or on its RTX
// stream (againRTX, the original sequence number first in the payload).
type lossyPath struct {
	interceptor.NoOp
	dropAt int

	mu       sync.Mutex
	seen     int
	dropped  int32 // the dropped sequence number, -1 until then
	again    atomic.Int32
	againRTX atomic.Int32
}

func (l *lossyPath) NewInterceptor(string) (interceptor.Interceptor, error) { return l, nil }

func (l *lossyPath) BindRemoteStream(info *interceptor.StreamInfo, reader interceptor.RTPReader) interceptor.RTPReader {
	if strings.EqualFold(info.MimeType, webrtc.MimeTypeRTX) {
		return interceptor.RTPReaderFunc(func(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
			n, attrs, err := reader.Read(b, a)
			var p rtp.Packet
			if err == nil && p.Unmarshal(b[:n]) == nil && len(p.Payload) >= 2 {
				osn := int32(binary.BigEndian.Uint16(p.Payload))
				l.mu.Lock()
				if l.dropped >= 0 && osn == l.dropped {
					l.againRTX.Add(1)
				}
				l.mu.Unlock()
			}
			return n, attrs, err
		})
	}
	if !strings.HasPrefix(strings.ToLower(info.MimeType), "video/") {
		return reader
	}
	return interceptor.RTPReaderFunc(func(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
		for {
			n, attrs, err := reader.Read(b, a)
			if err != nil || n < 4 {
				return n, attrs, err
			}
			seq := int32(binary.BigEndian.Uint16(b[2:4]))
			l.mu.Lock()
			l.seen++
			drop := l.seen == l.dropAt
			if drop {
				l.dropped = seq
			} else if l.dropped >= 0 && seq == l.dropped {
				l.again.Add(1)
			}
			l.mu.Unlock()
			if !drop {
				return n, attrs, err
			}
		}
	})
}

func (l *lossyPath) droppedSeq() int32 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dropped
}

// nackCounter counts the NACKs a publisher receives.
type nackCounter struct {
	interceptor.NoOp
	nacks atomic.Int32
}

func (c *nackCounter) NewInterceptor(string) (interceptor.Interceptor, error) { return c, nil }

func (c *nackCounter) BindRTCPReader(reader interceptor.RTCPReader) interceptor.RTCPReader {
	return onNACK(reader, func(*rtcp.TransportLayerNack) { c.nacks.Add(1) })
}

// onNACK passes reader's RTCP through and calls fn with every NACK in it.
func onNACK(reader interceptor.RTCPReader, fn func(*rtcp.TransportLayerNack)) interceptor.RTCPReader {
	return interceptor.RTCPReaderFunc(func(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
		n, attrs, err := reader.Read(b, a)
		if err == nil {
			if pkts, perr := rtcp.Unmarshal(b[:n]); perr == nil {
				for _, p := range pkts {
					if nack, ok := p.(*rtcp.TransportLayerNack); ok {
						fn(nack)
					}
				}
			}
		}
		return n, attrs, err
	})
}

// TestNACKAnsweredFromTheFeedCache: a packet lost on the viewer's path is
// asked for again (NACK) and retransmitted by the server from the feed's
// cache, on the viewer's RTX stream where it negotiated RTX and on the
// video stream itself where it did not; the publisher never sees a NACK.
func TestNACKAnsweredFromTheFeedCache(t *testing.T) {
	for _, tc := range []struct {
		name string
		rtx  bool
	}{{"rtx", true}, {"no-rtx", false}} {
		t.Run(tc.name, func(t *testing.T) {
			leakCheckFirst(t)
			s := testServer(t, nil)
			ctx := ctxT(t, 40*time.Second)
			counter := &nackCounter{}
			pubAPI, err := client.NewAPIWith([]client.APIOption{client.WithInterceptor(counter)})
			if err != nil {
				t.Fatal(err)
			}
			lossy := &lossyPath{dropAt: 50, dropped: -1}
			// The loss happens after SRTP decrypted the packet: without
			// replay protection, SRTP takes the retransmission as a
			// packet lost on the way would be taken.
			viewOpts := []client.APIOption{client.WithInterceptor(lossy), client.WithoutSRTPReplayProtection()}
			if !tc.rtx {
				viewOpts = append(viewOpts, client.WithoutRTX())
			}
			viewAPI, err := client.NewAPIWith(viewOpts)
			if err != nil {
				t.Fatal(err)
			}
			opts := clientOpts(t)
			opts.API = pubAPI
			pub, err := client.Publish(ctx, s.PublicURL(), "nack", opts)
			if err != nil {
				t.Fatal(err)
			}
			defer pub.Close()
			pub.SendRTP(200, 800)
			opts.API = viewAPI
			var view *client.Session
			waitFor(t, 10*time.Second, "viewer", func() error { view, err = client.Play(ctx, s.PublicURL(), "nack", opts); return err })
			defer view.Close()
			waitFor(t, 20*time.Second, "the dropped packet retransmitted", func() error {
				if lossy.again.Load() == 0 && lossy.againRTX.Load() == 0 {
					return fmt.Errorf("dropped seq %d not seen again (%d packets received; server NACK counts %v)", lossy.droppedSeq(), view.Received.Packets.Load(), nackCounts(t, s))
				}
				return nil
			})
			if tc.rtx && lossy.again.Load() != 0 {
				t.Errorf("the viewer negotiated RTX but got the retransmission on the video stream")
			}
			if !tc.rtx && lossy.againRTX.Load() != 0 {
				t.Errorf("the viewer did not negotiate RTX but got an RTX packet")
			}
			if n := counter.nacks.Load(); n != 0 {
				t.Errorf("the publisher got %d NACKs: the viewer's loss should be repaired by the server", n)
			}
			if got := nackCounts(t, s); got["answered"] < 1 {
				t.Errorf("media_nack_packets_total: %v, want answered >= 1", got)
			}
			// A room without simulcast has no layer to choose: its
			// viewers run no bandwidth estimate (and pay nothing for one).
			if e := serverSession(t, s, view).Estimate(); e != 0 {
				t.Errorf("a viewer of a plain feed has a bandwidth estimate (%d)", e)
			}
		})
	}
}

// nackCounts reads media_nack_packets_total by result.
func nackCounts(t *testing.T, s *Server) map[string]float64 {
	out := map[string]float64{}
	for _, m := range scrape(t, s)["media_nack_packets_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "result" {
				out[l.GetValue()] = m.GetCounter().GetValue()
			}
		}
	}
	return out
}

// lossyUplink is a publisher-side interceptor nearest the network: it
// drops the dropAt-th packet of the video stream on its way out and counts
// how often the server asks for that packet (NACKs listing it).
type lossyUplink struct {
	interceptor.NoOp
	dropAt int

	mu      sync.Mutex
	sent    int
	dropped int32       // -1 until then
	asks    []time.Time // when each NACK listing it arrived
}

func (l *lossyUplink) NewInterceptor(string) (interceptor.Interceptor, error) { return l, nil }

func (l *lossyUplink) BindLocalStream(info *interceptor.StreamInfo, writer interceptor.RTPWriter) interceptor.RTPWriter {
	if !strings.HasPrefix(strings.ToLower(info.MimeType), "video/") {
		return writer
	}
	return interceptor.RTPWriterFunc(func(h *rtp.Header, payload []byte, a interceptor.Attributes) (int, error) {
		if h.SSRC == info.SSRC { // not the RTX stream, which this writer carries too
			l.mu.Lock()
			l.sent++
			drop := l.sent == l.dropAt
			if drop {
				l.dropped = int32(h.SequenceNumber)
			}
			l.mu.Unlock()
			if drop {
				return len(payload), nil
			}
		}
		return writer.Write(h, payload, a)
	})
}

func (l *lossyUplink) BindRTCPReader(reader interceptor.RTCPReader) interceptor.RTCPReader {
	return onNACK(reader, func(nack *rtcp.TransportLayerNack) {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, pair := range nack.Nacks {
			for _, s := range pair.PacketList() {
				if int32(s) == l.dropped {
					l.asks = append(l.asks, time.Now())
				}
			}
		}
	})
}

func (l *lossyUplink) droppedSeq() int32 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dropped
}

// asksOf is when the server asked for the dropped packet.
func (l *lossyUplink) asksOf() []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.asks)
}

// TestPublisherLossAskedForOnce: a packet lost on a publisher's way to the
// server is asked for again (NACK), repaired on the publisher's RTX stream
// (as browsers send it), forwarded to the viewer, and then no longer asked
// for. pion's generator interceptor, which the server used before, never
// saw a packet repaired on RTX and asked for it every 100 ms until it left
// its 512-packet window: about 25 times here, 24 of them after the repair
// (pion/interceptor#320).
func TestPublisherLossAskedForOnce(t *testing.T) {
	leakCheckFirst(t)
	s := testServer(t, nil)
	ctx := ctxT(t, 40*time.Second)
	uplink := &lossyUplink{dropAt: 600, dropped: -1} // 3 s in: the viewer is there
	pubAPI, err := client.NewAPIWith([]client.APIOption{client.WithInterceptor(uplink)})
	if err != nil {
		t.Fatal(err)
	}
	opts := clientOpts(t)
	opts.API = pubAPI
	pub, err := client.Publish(ctx, s.PublicURL(), "uplink", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	pub.SendRTP(200, 800)
	var mu sync.Mutex
	got := map[uint16]time.Time{}
	opts = clientOpts(t)
	opts.OnRTP = func(kind webrtc.RTPCodecType, h *rtp.Header, at time.Time) {
		if kind == webrtc.RTPCodecTypeVideo {
			mu.Lock()
			if _, ok := got[h.SequenceNumber]; !ok {
				got[h.SequenceNumber] = at
			}
			mu.Unlock()
		}
	}
	var view *client.Session
	waitFor(t, 10*time.Second, "viewer", func() error { view, err = client.Play(ctx, s.PublicURL(), "uplink", opts); return err })
	defer view.Close()
	var repairedAt time.Time
	waitFor(t, 20*time.Second, "the dropped packet repaired and forwarded", func() error {
		seq := uplink.droppedSeq()
		mu.Lock()
		defer mu.Unlock()
		at, ok := got[uint16(seq)]
		if seq < 0 || !ok {
			return fmt.Errorf("dropped seq %d not at the viewer (asked for %d times; %d packets sent)", seq, len(uplink.asksOf()), pub.Sent.Load())
		}
		repairedAt = at
		return nil
	})
	// Past the old generator's window (512 packets at 200 a second).
	sent := pub.Sent.Load()
	waitFor(t, 20*time.Second, "600 more packets sent", func() error {
		if n := pub.Sent.Load() - sent; n < 600 {
			return fmt.Errorf("%d", n)
		}
		return nil
	})
	// Asked for until the repair came (once on loopback; a retry every
	// 100 ms while it was slow), never after: an ask still on its way
	// when the repair reached the viewer lands within a few milliseconds,
	// pion's generator went on asking every 100 ms for 2.5 s.
	asks := uplink.asksOf()
	var late []time.Duration
	for _, a := range asks {
		if d := a.Sub(repairedAt); d > 250*time.Millisecond {
			late = append(late, d)
		}
	}
	if len(asks) == 0 || len(asks) > 5 || len(late) > 0 {
		t.Errorf("the lost packet was asked for %d times (at most 5), %d of them after the repair reached the viewer (%v after)", len(asks), len(late), late)
	}
	if v := scrape(t, s)["media_nack_requested_packets_total"].GetMetric(); len(v) != 1 || v[0].GetCounter().GetValue() < 1 {
		t.Errorf("media_nack_requested_packets_total: %v", v)
	}
}
