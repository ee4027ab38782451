package rtc

import (
	"bytes"
	"io"
	"log/slog"
	"runtime"
	"testing"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	"go.uber.org/goleak"
)

func TestPacketCache(t *testing.T) {
	c := newPacketCache(8)
	for seq := uint16(65530); seq != 4; seq++ { // across the wrap
		c.put(seq, []byte{byte(seq), 1, 2})
	}
	if got := c.get(65535, nil); !bytes.Equal(got, []byte{0xff, 1, 2}) {
		t.Errorf("get 65535 = %v", got)
	}
	if got := c.get(3, nil); !bytes.Equal(got, []byte{3, 1, 2}) {
		t.Errorf("get 3 = %v", got)
	}
	if got := c.get(65530, nil); got != nil {
		t.Errorf("65530 was overwritten by 2 and still answered: %v", got)
	}
	if got := c.get(100, nil); got != nil {
		t.Errorf("a packet never cached answered: %v", got)
	}
	c.put(9, make([]byte, maxRTPPacket+1))
	if got := c.get(9, nil); got != nil {
		t.Error("an oversized packet was cached")
	}
}

// TestDownTrackContinuesAcrossSources: a down-track that takes over a
// viewer's sender from another continues its sequence numbers and
// timestamps, whatever the new publisher's own numbering.
func TestDownTrackContinuesAcrossSources(t *testing.T) {
	codec := webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}
	first := newFeed("a", webrtc.RTPCodecTypeVideo, nil, codec, "v", "s")
	d1, err := newDownTrack(first)
	if err != nil {
		t.Fatal(err)
	}
	for i := uint16(0); i < 10; i++ {
		_ = d1.write(&rtp.Header{SequenceNumber: 1000 + i, Timestamp: 5000 + uint32(i)*3000}, nil)
	}
	if d1.out.SequenceNumber != 1009 || d1.out.Timestamp != 5000+9*3000 {
		t.Fatalf("first source passes through unchanged: seq %d ts %d", d1.out.SequenceNumber, d1.out.Timestamp)
	}
	second := newFeed("b", webrtc.RTPCodecTypeVideo, nil, codec, "v", "s")
	d2, _ := newDownTrack(second)
	d2.continueFrom(d1)
	_ = d2.write(&rtp.Header{SequenceNumber: 40000, Timestamp: 123}, nil)
	if d2.out.SequenceNumber != 1010 {
		t.Errorf("sequence after the switch %d, want 1010", d2.out.SequenceNumber)
	}
	if d := d2.out.Timestamp - (5000 + 9*3000); d == 0 || d > 90000 {
		t.Errorf("timestamp advanced by %d after the switch, want a little (the wall time between)", d)
	}
	firstTS := d2.out.Timestamp
	_ = d2.write(&rtp.Header{SequenceNumber: 40001, Timestamp: 3123}, nil)
	if d2.out.SequenceNumber != 1011 || d2.out.Timestamp != firstTS+3000 {
		t.Errorf("second packet: seq %d ts %d, want 1011 and %d (the source's own spacing)", d2.out.SequenceNumber, d2.out.Timestamp, firstTS+3000)
	}
	// NACKs in the viewer's numbering map back to the publisher's, and
	// only within this epoch.
	second.cache.put(40000, mustMarshal(t, &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: 40000, Timestamp: 123}, Payload: []byte{9}}))
	if answered, missed := d2.retransmit([]uint16{1010, 1009, 1012}); answered != 1 || missed != 2 {
		t.Errorf("retransmit: %d answered, %d missed; want 1010 answered, 1009 (before the switch) and 1012 (not sent yet) missed", answered, missed)
	}
}

func mustMarshal(t *testing.T, p *rtp.Packet) []byte {
	t.Helper()
	b, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestFanoutWritesEveryViewerInOrder: a feed with more viewers than one
// chunk hands chunks to helpers; every viewer still gets every packet, in
// order, and the helpers end with the feed.
func TestFanoutWritesEveryViewerInOrder(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	prev := runtime.GOMAXPROCS(4)
	defer runtime.GOMAXPROCS(prev)
	codec := webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}
	f := newFeed("a", webrtc.RTPCodecTypeVideo, nil, codec, "v", "s")
	var downs []*DownTrack
	for i := 0; i < 5*fanChunk+3; i++ {
		d, err := newDownTrack(f)
		if err != nil {
			t.Fatal(err)
		}
		downs = append(downs, d)
	}
	fan := newFanout(slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	for seq := uint16(0); seq < 500; seq++ {
		fan.write(downs, &rtp.Header{SequenceNumber: seq, Timestamp: uint32(seq) * 3000}, []byte{1})
		if seq == 0 && fan.n != 3 {
			t.Fatalf("%d helpers for %d viewers on 4 cores, want 3", fan.n, len(downs))
		}
	}
	fan.stop()
	for i, d := range downs {
		if d.lastSeq != 499 || d.lastIn != 499 {
			t.Fatalf("viewer %d: last seq %d", i, d.lastSeq)
		}
	}
}
