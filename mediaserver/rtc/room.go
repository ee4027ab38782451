package rtc

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/mediafleet/mediafleet/mediaserver/metrics"
)

// Room joins publishers and subscribers. WHIP publishers, WHEP viewers and
// WebSocket participants share rooms by name.
type Room struct {
	name   string
	engine *Engine

	mu      sync.RWMutex
	feeds   map[*Feed]struct{}
	members map[*Session]struct{}
}

func newRoom(name string, e *Engine) *Room {
	return &Room{name: name, engine: e, feeds: map[*Feed]struct{}{}, members: map[*Session]struct{}{}}
}

// Name of the room.
func (r *Room) Name() string { return r.name }

func (r *Room) empty() bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.members) == 0
}

func (r *Room) hasFeeds() bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.feeds) > 0
}

// join adds a member and subscribes it to every feed it does not publish.
func (r *Room) join(s *Session) {
	r.mu.Lock()
	r.members[s] = struct{}{}
	var feeds []*Feed
	if s.Kind != KindWHIP {
		for f := range r.feeds {
			if f.publisher != s {
				feeds = append(feeds, f)
			}
		}
	}
	r.mu.Unlock()
	for _, f := range feeds {
		s.attach(f)
	}
}

// leave removes a member; the feeds it published end with its tracks.
func (r *Room) leave(s *Session) {
	r.mu.Lock()
	delete(r.members, s)
	var own []*Feed
	for f := range r.feeds {
		if f.publisher == s {
			own = append(own, f)
		}
	}
	r.mu.Unlock()
	for _, f := range own {
		r.unpublish(f)
	}
}

// publish adds a feed and subscribes every other viewer or participant.
func (r *Room) publish(f *Feed) {
	r.mu.Lock()
	r.feeds[f] = struct{}{}
	var subs []*Session
	for m := range r.members {
		if m != f.publisher && m.Kind != KindWHIP {
			subs = append(subs, m)
		}
	}
	r.mu.Unlock()
	for _, m := range subs {
		m.attach(f)
		m.negotiate()
	}
	f.publisher.log.Info("track published", "feed", f.ID, "kind", f.Kind.String(), "codec", f.codec.MimeType, "subscribers", len(subs))
}

// unpublish removes a feed from the room and from every subscriber.
func (r *Room) unpublish(f *Feed) {
	r.mu.Lock()
	if _, ok := r.feeds[f]; !ok {
		r.mu.Unlock()
		return
	}
	delete(r.feeds, f)
	subs := make([]*Session, 0, len(r.members))
	for m := range r.members {
		subs = append(subs, m)
	}
	r.mu.Unlock()
	for _, m := range subs {
		m.detach(f)
		m.negotiate()
	}
}

// Feed is one published track: the publisher's packets go into the feed's
// packet cache and out through one DownTrack per viewer.
type Feed struct {
	ID        string
	Kind      webrtc.RTPCodecType
	publisher *Session
	remote    atomic.Pointer[webrtc.TrackRemote] // nil until the first packet
	lastPLI   atomic.Int64

	codec             webrtc.RTPCodecCapability
	trackID, streamID string
	cache             *packetCache

	downsMu sync.Mutex
	downs   atomic.Pointer[[]*DownTrack] // copy on write: read per packet without a lock
}

// Packets a feed keeps for retransmission: about a second of 2.5 Mbit/s
// video; audio needs far fewer.
const (
	videoCachePackets = 1024
	audioCachePackets = 128
)

func newFeed(id string, kind webrtc.RTPCodecType, publisher *Session, codec webrtc.RTPCodecCapability, trackID, streamID string) *Feed {
	size := audioCachePackets
	if kind == webrtc.RTPCodecTypeVideo {
		size = videoCachePackets
	}
	f := &Feed{ID: id, Kind: kind, publisher: publisher, codec: codec, trackID: trackID, streamID: streamID, cache: newPacketCache(size)}
	f.downs.Store(&[]*DownTrack{})
	return f
}

// Codec is what the publisher sends.
func (f *Feed) Codec() webrtc.RTPCodecCapability { return f.codec }

func (f *Feed) addDown(d *DownTrack) {
	f.downsMu.Lock()
	defer f.downsMu.Unlock()
	old := *f.downs.Load()
	next := make([]*DownTrack, len(old), len(old)+1)
	copy(next, old)
	next = append(next, d)
	f.downs.Store(&next)
}

func (f *Feed) removeDown(d *DownTrack) {
	f.downsMu.Lock()
	defer f.downsMu.Unlock()
	old := *f.downs.Load()
	next := make([]*DownTrack, 0, len(old))
	for _, x := range old {
		if x != d {
			next = append(next, x)
		}
	}
	f.downs.Store(&next)
}

// Viewers is how many down-tracks the feed writes to.
func (f *Feed) Viewers() int { return len(*f.downs.Load()) }

// keyframeInterval bounds how often subscribers' PLIs reach the publisher.
const keyframeInterval = 500 * time.Millisecond

// RequestKeyframe asks the publisher for a keyframe (rate-limited).
func (f *Feed) RequestKeyframe() {
	remote := f.remote.Load()
	if f.Kind != webrtc.RTPCodecTypeVideo || remote == nil {
		return
	}
	now := time.Now().UnixNano()
	last := f.lastPLI.Load()
	if now-last < int64(keyframeInterval) || !f.lastPLI.CompareAndSwap(last, now) {
		return
	}
	_ = f.publisher.pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: uint32(remote.SSRC())}})
}

// qualityWindow is how often a feed's frame rate, bitrate and loss are
// sampled into the histograms.
const qualityWindow = 5 * time.Second

// forward copies RTP from the publisher to every subscriber until the
// remote track ends. It reuses one buffer and one packet.
func (f *Feed) forward(m *metrics.Metrics, remote *webrtc.TrackRemote) {
	f.remote.Store(remote)
	buf := make([]byte, 1500)
	var pkt rtp.Packet
	var (
		windowStart          = time.Now()
		frames, winBytes     uint64
		received, lost       uint64
		seqs                 seqTracker
		pendingPkts, pendBts uint64
	)
	video := f.Kind == webrtc.RTPCodecTypeVideo
	fan := newFanout(f.publisher.log, f.publisher.engine.apis.batch)
	defer fan.stop()
	f.RequestKeyframe()
	for {
		n, _, err := remote.Read(buf)
		if err != nil {
			m.ForwardedPackets.Add(float64(pendingPkts))
			m.ForwardedBytes.Add(float64(pendBts))
			return
		}
		if err := pkt.Unmarshal(buf[:n]); err != nil {
			continue
		}
		f.cache.put(pkt.SequenceNumber, buf[:n])
		fan.write(*f.downs.Load(), &pkt.Header, pkt.Payload)
		pendingPkts++
		pendBts += uint64(len(pkt.Payload))
		received++
		winBytes += uint64(n)
		lost += seqs.add(pkt.SequenceNumber)
		if video && pkt.Marker {
			frames++
		}
		if pendingPkts >= 256 { // batch counter updates off the hot path
			m.ForwardedPackets.Add(float64(pendingPkts))
			m.ForwardedBytes.Add(float64(pendBts))
			pendingPkts, pendBts = 0, 0
		}
		if el := time.Since(windowStart); el >= qualityWindow {
			secs := el.Seconds()
			if video {
				m.VideoFrameRate.Observe(float64(frames) / secs)
				m.VideoBitrate.Observe(float64(winBytes*8) / secs)
			}
			if received+lost > 0 {
				m.PacketLoss.Observe(float64(lost) / float64(received+lost))
			}
			windowStart, frames, winBytes, received, lost = time.Now(), 0, 0, 0, 0
		}
	}
}

// observeReports turns viewers' receiver reports into loss, jitter and RTT.
func (e *Engine) observeReports(reports []rtcp.ReceptionReport, clockRate uint32) {
	if clockRate == 0 {
		clockRate = 90000
	}
	for _, rr := range reports {
		e.metrics.PacketLoss.Observe(float64(rr.FractionLost) / 256)
		e.metrics.Jitter.Observe(jitterMillis(rr.Jitter, clockRate))
		if ms, ok := rttMillis(ntpMiddle(time.Now()), rr.LastSenderReport, rr.Delay); ok {
			e.metrics.RTT.Observe(ms)
		}
	}
}

// seqTracker counts packets missing from a stream of RTP sequence numbers:
// a forward gap counts its missing numbers, a late (reordered) packet
// counts nothing, and a jump of 1,000 or more is a restart, not loss.
type seqTracker struct {
	last uint16
	have bool
}

// add takes the next packet's sequence number and returns how many the
// gap before it lost.
func (t *seqTracker) add(seq uint16) uint64 {
	var lost uint64
	if t.have {
		if gap := seq - t.last; gap > 1 && gap < 1000 {
			lost = uint64(gap - 1)
		}
	}
	if !t.have || int16(seq-t.last) > 0 {
		t.last, t.have = seq, true
	}
	return lost
}

// jitterMillis converts a receiver report's interarrival jitter (in RTP
// timestamp units) to milliseconds.
func jitterMillis(jitter, clockRate uint32) float64 {
	if clockRate == 0 {
		clockRate = 90000
	}
	return float64(jitter) * 1000 / float64(clockRate)
}

// rttMillis is the round-trip time of RFC 3550 section 6.4.1: now minus the
// last sender report (LSR) minus the delay since it (DLSR), all in the
// middle 32 bits of NTP time (1/65536 s). False when there was no sender
// report yet or the result makes no sense (negative, or a minute and more).
func rttMillis(nowMiddle, lsr, dlsr uint32) (float64, bool) {
	if lsr == 0 {
		return 0, false
	}
	ms := float64(int32(nowMiddle-lsr-dlsr)) / 65.536
	return ms, ms >= 0 && ms < 60000
}

// ntpMiddle is the middle 32 bits of the NTP timestamp of t.
func ntpMiddle(t time.Time) uint32 {
	const ntpEpochOffset = 2208988800
	secs := uint64(t.Unix()) + ntpEpochOffset
	frac := uint64(t.Nanosecond()) * (1 << 32) / 1e9
	return uint32((secs<<32 | frac) >> 16)
}
