package rtc

import (
	"bytes"
	"io"
	"log/slog"
	"runtime"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/mediafleet/mediafleet/mediaserver/metrics"
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
	l := second.addLayer("")
	d2, _ := newDownTrack(second)
	d2.continueFrom(d1)
	offer := func(seq uint16, ts uint32) {
		now := time.Now().UnixNano()
		l.lastPkt.Store(now)
		if err := d2.offer(sample{l: l, h: &rtp.Header{SequenceNumber: seq, Timestamp: ts}, at: now}); err != nil {
			t.Fatal(err)
		}
	}
	offer(40000, 123)
	if d2.out.SequenceNumber != 1010 {
		t.Errorf("sequence after the switch %d, want 1010", d2.out.SequenceNumber)
	}
	if d := d2.out.Timestamp - (5000 + 9*3000); d == 0 || d > 90000 {
		t.Errorf("timestamp advanced by %d after the switch, want a little (the wall time between)", d)
	}
	firstTS := d2.out.Timestamp
	offer(40001, 3123)
	if d2.out.SequenceNumber != 1011 || d2.out.Timestamp != firstTS+3000 {
		t.Errorf("second packet: seq %d ts %d, want 1011 and %d (the source's own spacing)", d2.out.SequenceNumber, d2.out.Timestamp, firstTS+3000)
	}
	// NACKs in the viewer's numbering map back to the publisher's, and
	// only within this epoch.
	l.cache.put(40000, mustMarshal(t, &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: 40000, Timestamp: 123}, Payload: []byte{9}}))
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
	l := f.addLayer("")
	for seq := uint16(0); seq < 500; seq++ {
		now := time.Now().UnixNano()
		l.lastPkt.Store(now)
		fan.write(downs, sample{l: l, h: &rtp.Header{SequenceNumber: seq, Timestamp: uint32(seq) * 3000}, payload: []byte{1}, at: now})
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

// TestDownTrackSwitchesLayersAtKeyframes: a simulcast viewer starts at a
// keyframe of the best layer, stays on it until a keyframe of the layer
// its cap asks for, then continues its numbering on that layer and ignores
// the others; a layer that goes quiet is left for a live one.
func TestDownTrackSwitchesLayersAtKeyframes(t *testing.T) {
	codec := webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}
	f := newFeed("sim", webrtc.RTPCodecTypeVideo, nil, codec, "v", "s")
	q, h, full := f.addLayer("q"), f.addLayer("h"), f.addLayer("f")
	if ls := f.layers.load(); ls[0] != q || ls[1] != h || ls[2] != full {
		t.Fatal("layers not ranked q < h < f")
	}
	d, _ := newDownTrack(f)
	seqs := map[*layer]uint16{q: 100, h: 5000, full: 30000}
	send := func(l *layer, key bool) (forwarded bool) {
		now := time.Now().UnixNano()
		for _, x := range []*layer{q, h, full} {
			if x != l && x.lastPkt.Load() == 0 {
				x.lastPkt.Store(now)
			}
		}
		l.lastPkt.Store(now)
		seqs[l]++
		before := d.out.SequenceNumber
		if err := d.offer(sample{l: l, h: &rtp.Header{SequenceNumber: seqs[l], Timestamp: uint32(seqs[l]) * 3000}, key: key, at: now}); err != nil {
			t.Fatal(err)
		}
		return d.out.SequenceNumber != before || (before == 0 && d.started)
	}
	if send(full, false) || d.Layer() != "" {
		t.Fatal("a simulcast viewer started without a keyframe")
	}
	if send(q, true) {
		t.Fatal("a keyframe of a layer the viewer should not get was forwarded")
	}
	if !send(full, true) || d.Layer() != "f" {
		t.Fatalf("no start at the top layer's keyframe (layer %q)", d.Layer())
	}
	send(full, false)
	d.SetCap(1) // h
	if send(h, false) || !send(full, false) || d.Layer() != "f" {
		t.Fatal("switched before the target layer's keyframe, or left the current layer early")
	}
	last := d.out.SequenceNumber
	if !send(h, true) || d.Layer() != "h" {
		t.Fatalf("no switch at the target layer's keyframe (layer %q)", d.Layer())
	}
	if d.out.SequenceNumber != last+1 {
		t.Errorf("sequence after the switch %d, want %d (continuous)", d.out.SequenceNumber, last+1)
	}
	if send(full, true) {
		t.Error("the old layer still forwarded after the switch")
	}
	// The capped layer goes quiet: the viewer moves to a live one.
	h.lastPkt.Store(time.Now().Add(-2 * layerAlive).UnixNano())
	if !send(q, true) || d.Layer() != "q" {
		t.Errorf("stayed on a quiet layer (layer %q)", d.Layer())
	}
}

func TestIsKeyframe(t *testing.T) {
	for _, tc := range []struct {
		name, mime string
		payload    []byte
		key        bool
	}{
		{"VP8 key frame start", webrtc.MimeTypeVP8, []byte{0x10, 0x00, 0x9d, 0x01}, true},
		{"VP8 inter frame", webrtc.MimeTypeVP8, []byte{0x10, 0x01}, false},
		{"VP8 continuation", webrtc.MimeTypeVP8, []byte{0x00, 0x00}, false},
		{"H.264 IDR", webrtc.MimeTypeH264, []byte{0x65, 0x88}, true},
		{"H.264 STAP-A with SPS", webrtc.MimeTypeH264, []byte{0x18, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce}, true},
		{"H.264 FU-A start of IDR", webrtc.MimeTypeH264, []byte{0x7c, 0x85}, true},
		{"H.264 FU-A middle", webrtc.MimeTypeH264, []byte{0x7c, 0x05}, false},
		{"H.264 non-IDR", webrtc.MimeTypeH264, []byte{0x41, 0x9a}, false},
		{"Opus", webrtc.MimeTypeOpus, []byte{0xfc}, false},
		{"empty", webrtc.MimeTypeVP8, nil, false},
	} {
		if got := isKeyframe(tc.mime, tc.payload); got != tc.key {
			t.Errorf("%s: keyframe %v, want %v", tc.name, got, tc.key)
		}
	}
}

func TestFitLayer(t *testing.T) {
	rates := []layerRate{{0, 150_000}, {1, 500_000}, {2, 2_000_000}}
	for _, tc := range []struct {
		name    string
		rates   []layerRate
		share   int64
		current int
		sinceUp time.Duration
		want    int
	}{
		{"nothing measured yet: stay", []layerRate{{0, 0}, {1, 0}, {2, 0}}, 100_000, 2, 0, 2},
		{"congestion: down at once", rates, 300_000, 2, time.Hour, 0},
		{"a little short: one down", rates, 1_500_000, 2, time.Hour, 1},
		{"below the lowest: the lowest", rates, 10_000, 1, time.Hour, 0},
		{"room for the top, held long enough: up", rates, 3_000_000, 0, upHold, 2},
		{"room for the top, moved up just now: hold", rates, 3_000_000, 0, time.Second, 0},
		{"fits without the 10% margin: no move up", rates, 2_100_000, 1, time.Hour, 1},
		{"fits exactly where it is: stay", rates, 500_000, 1, time.Hour, 1},
		{"an unmeasured middle layer is skipped", []layerRate{{0, 150_000}, {1, 0}, {2, 2_000_000}}, 1_000_000, 2, time.Hour, 0},
	} {
		if got := fitLayer(tc.rates, tc.share, tc.current, tc.sinceUp); got != tc.want {
			t.Errorf("%s: rank %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestAbsSendTime(t *testing.T) {
	for _, tc := range []struct {
		t    time.Time
		want uint32
	}{
		{time.Unix(0, 0), 0},
		{time.Unix(1, 0), 1 << 18},
		{time.Unix(0, 500_000_000), 1 << 17},
		{time.Unix(63, 0), 63 << 18},
		{time.Unix(64, 0), 0}, // 6 bits of seconds: wraps every 64 s
		{time.Unix(65, 250_000_000), 1<<18 | 1<<16},
		// A date of this decade: 1795000001 s is 1 s past a multiple of
		// 64; 0.123456789 s is 32363 / 2^18 (an overflowing shift got
		// this wrong).
		{time.Unix(1_795_000_001, 123_456_789), 1<<18 + 32363},
	} {
		if got := absSendTime(tc.t); got != tc.want {
			t.Errorf("absSendTime(%v) = %#x, want %#x", tc.t.UnixNano(), got, tc.want)
		}
	}
}

// TestLayerTimeNeverGoesBack: each simulcast layer's packets are stamped by
// its own read loop, so a viewer's switch can come with a time earlier
// than the one last counted. Counting it panicked the process ("counter
// cannot decrease in value", seen once in the simulcast test under -race);
// it now counts nothing and the clock of the count never goes back.
func TestLayerTimeNeverGoesBack(t *testing.T) {
	codec := webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}
	pub := &Session{engine: &Engine{metrics: metrics.New()}}
	f := newFeed("a", webrtc.RTPCodecTypeVideo, pub, codec, "v", "s")
	f.addLayer("q")
	full := f.addLayer("f")
	d, err := newDownTrack(f)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixNano()
	d.cur, d.accounted = full, now
	d.accountLayer(now - int64(time.Millisecond))
	if d.accounted != now {
		t.Errorf("the counted-up-to time went back by %v", time.Duration(now-d.accounted))
	}
	d.accountLayer(now + int64(2*time.Second))
	if got := testutil.ToFloat64(pub.engine.metrics.LayerSeconds.WithLabelValues("f")); got < 1.99 || got > 2.01 {
		t.Errorf("layer f counted %.3f s, want 2", got)
	}
}
