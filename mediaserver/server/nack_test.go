package server

import (
	"encoding/binary"
	"fmt"
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
	return interceptor.RTCPReaderFunc(func(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
		n, attrs, err := reader.Read(b, a)
		if err == nil {
			if pkts, perr := rtcp.Unmarshal(b[:n]); perr == nil {
				for _, p := range pkts {
					if _, ok := p.(*rtcp.TransportLayerNack); ok {
						c.nacks.Add(1)
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
