package rtc

import (
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/mediafleet/mediafleet/mediaserver/metrics"
)

// Feed is one published track: one layer for a plain track, up to three
// for a simulcast one (RFC 8853 rids of one m-line, treated as one feed).
// Each layer's packets go into its packet cache and out through one
// DownTrack per viewer, which forwards one layer at a time.
type Feed struct {
	ID        string
	Kind      webrtc.RTPCodecType
	publisher *Session

	codec             webrtc.RTPCodecCapability
	trackID, streamID string
	// simulcastOffered: the publisher's offer had simulcast on this
	// m-line (set before the feed is published, read only after).
	simulcastOffered bool

	layers cowList[*layer]     // by rank, lowest first
	downs  cowList[*DownTrack] // read per packet without a lock
}

// layer is one encoding of a feed.
type layer struct {
	rid     string
	rank    int
	cache   *packetCache
	remote  atomic.Pointer[webrtc.TrackRemote] // nil until its first packet
	lastPLI atomic.Int64
	lastPkt atomic.Int64 // unix nanos of its newest packet
	bps     atomic.Int64 // bitrate over the last second (0 until measured)
	// linkAbsID: on a relay pod, the abs-send-time id the link negotiated
	// (the owner stamps each packet it sends): the link's delay is
	// measured from it.
	linkAbsID uint8
}

// Packets a layer keeps for retransmission: about a second of 2.5 Mbit/s
// video; audio needs far fewer.
const (
	videoCachePackets = 1024
	audioCachePackets = 128
)

// Layer ranks by rid: the usual names (q/h/f, l/m/h, 0/1/2); another rid
// ranks after the known ones, in the order it arrives.
var ridRanks = map[string]int{"q": 0, "l": 0, "low": 0, "0": 0, "h": 1, "m": 1, "mid": 1, "1": 1, "f": 2, "high": 2, "2": 2}

// RankOf is the rank of a layer cap a viewer names ("q", "h", "f", ...);
// false for a name no layer has.
func RankOf(rid string) (int, bool) {
	r, ok := ridRanks[strings.ToLower(rid)]
	return r, ok
}

func newFeed(id string, kind webrtc.RTPCodecType, publisher *Session, codec webrtc.RTPCodecCapability, trackID, streamID string) *Feed {
	return &Feed{ID: id, Kind: kind, publisher: publisher, codec: codec, trackID: trackID, streamID: streamID}
}

// Codec is what the publisher sends.
func (f *Feed) Codec() webrtc.RTPCodecCapability { return f.codec }

// addLayer adds the layer of rid ("" for a plain track).
func (f *Feed) addLayer(rid string) *layer {
	size := audioCachePackets
	if f.Kind == webrtc.RTPCodecTypeVideo {
		size = videoCachePackets
	}
	l := &layer{rid: rid, cache: newPacketCache(size)}
	f.layers.change(func(ls []*layer) []*layer {
		rank, ok := RankOf(rid)
		if !ok {
			rank = 3 + len(ls)
		}
		l.rank = rank
		i, _ := slices.BinarySearchFunc(ls, rank, func(x *layer, r int) int { return x.rank - r })
		return slices.Insert(ls, i, l)
	})
	return l
}

// removeLayer drops a layer whose track ended and says how many are left.
func (f *Feed) removeLayer(l *layer) int { return len(f.layers.remove(l)) }

// simulcast says whether the feed has more than one layer.
func (f *Feed) simulcast() bool { return len(f.layers.load()) > 1 }

// layerAlive is how recent a layer's newest packet must be for the layer
// to be chosen (a publisher drops layers when its own bandwidth falls).
const layerAlive = time.Second

// pick is the layer a viewer capped at capRank should get: the best live
// layer at or under the cap, else the lowest live one.
func (f *Feed) pick(capRank int, now int64) *layer {
	var best, lowest *layer
	for _, l := range f.layers.load() {
		if now-l.lastPkt.Load() > int64(layerAlive) {
			continue
		}
		if lowest == nil {
			lowest = l
		}
		if l.rank <= capRank {
			best = l
		}
	}
	if best == nil {
		return lowest
	}
	return best
}

func (f *Feed) addDown(d *DownTrack) {
	f.downs.change(func(ds []*DownTrack) []*DownTrack { return append(ds, d) })
}

func (f *Feed) removeDown(d *DownTrack) { f.downs.remove(d) }

// Viewers is how many down-tracks the feed writes to.
func (f *Feed) Viewers() int { return len(f.downs.load()) }

// keyframeInterval bounds how often keyframe requests reach the publisher,
// per layer.
const keyframeInterval = 500 * time.Millisecond

// RequestKeyframe asks the publisher for a keyframe on every layer
// (rate-limited per layer).
func (f *Feed) RequestKeyframe() {
	for _, l := range f.layers.load() {
		f.requestKeyframe(l)
	}
}

// requestKeyframe asks for a keyframe on one layer (rate-limited).
func (f *Feed) requestKeyframe(l *layer) {
	remote := l.remote.Load()
	if f.Kind != webrtc.RTPCodecTypeVideo || remote == nil || f.publisher == nil {
		return
	}
	now := time.Now().UnixNano()
	last := l.lastPLI.Load()
	if now-last < int64(keyframeInterval) || !l.lastPLI.CompareAndSwap(last, now) {
		return
	}
	_ = f.publisher.pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: uint32(remote.SSRC())}})
	if m := f.publisher.engine.metrics; m != nil {
		m.KeyframeRequests.Inc()
	}
}

// nackScan is how often a layer's read loop looks for packets to ask
// for again (while packets arrive; a gap is only seen by the packet after
// it).
const nackScan = 20 * time.Millisecond

// negotiatedNACK: the codec's feedback includes generic NACK.
func negotiatedNACK(c webrtc.RTPCodecParameters) bool {
	for _, fb := range c.RTCPFeedback {
		if fb.Type == "nack" && fb.Parameter == "" {
			return true
		}
	}
	return false
}

// askAgain sends the layer's sender a NACK for the missing sequence
// numbers (ascending).
func (f *Feed) askAgain(m *metrics.Metrics, remote *webrtc.TrackRemote, missing []uint16) {
	_ = f.publisher.pc.WriteRTCP([]rtcp.Packet{&rtcp.TransportLayerNack{
		MediaSSRC: uint32(remote.SSRC()), Nacks: rtcp.NackPairsFromSequenceNumbers(missing)}})
	m.NACKRequests.Add(float64(len(missing)))
}

// qualityWindow is how often a feed's frame rate, bitrate and loss are
// sampled into the histograms.
const qualityWindow = 5 * time.Second

// forward copies one layer's RTP from the publisher to the viewers that
// take it, until the remote track ends. It reuses one buffer and one
// packet.
func (f *Feed) forward(m *metrics.Metrics, l *layer, remote *webrtc.TrackRemote) {
	l.remote.Store(remote)
	l.lastPkt.Store(time.Now().UnixNano())
	buf := make([]byte, maxRTPPacket)
	var pkt rtp.Packet
	var (
		windowStart          = time.Now()
		frames, winBytes     uint64
		received, lost       uint64
		seqs                 seqTracker
		pendingPkts, pendBts uint64
	)
	video := f.Kind == webrtc.RTPCodecTypeVideo
	var nacks *nackGen
	var nextNACK int64
	if video && negotiatedNACK(remote.Codec()) {
		nacks = &nackGen{}
	}
	rateStart, rateBytes := time.Now(), int64(0)
	fan := newFanout(f.publisher.log, f.publisher.engine.apis.batch)
	defer fan.stop()
	f.requestKeyframe(l)
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
		now := time.Now()
		l.lastPkt.Store(now.UnixNano())
		if rateBytes += int64(n); now.Sub(rateStart) >= time.Second {
			l.bps.Store(rateBytes * 8 * int64(time.Second) / int64(now.Sub(rateStart)))
			rateStart, rateBytes = now, 0
		}
		if l.linkAbsID != 0 && received&7 == 0 {
			observeLinkDelay(m, &pkt.Header, l.linkAbsID, now)
		}
		l.cache.put(pkt.SequenceNumber, buf[:n])
		key := video && isKeyframe(f.codec.MimeType, pkt.Payload)
		fan.write(f.downs.load(), sample{l: l, h: &pkt.Header, payload: pkt.Payload, key: key, at: now.UnixNano()})
		pendingPkts++
		pendBts += uint64(len(pkt.Payload))
		received++
		winBytes += uint64(n)
		lost += seqs.add(pkt.SequenceNumber)
		if nacks != nil {
			ns := now.UnixNano()
			nacks.add(pkt.SequenceNumber, ns)
			if ns >= nextNACK {
				nextNACK = ns + int64(nackScan)
				if missing := nacks.due(ns); len(missing) > 0 {
					f.askAgain(m, remote, missing)
				}
			}
		}
		if video && pkt.Marker {
			frames++
		}
		if pendingPkts >= 256 { // batch counter updates off the hot path
			m.ForwardedPackets.Add(float64(pendingPkts))
			m.ForwardedBytes.Add(float64(pendBts))
			pendingPkts, pendBts = 0, 0
		}
		if el := now.Sub(windowStart); el >= qualityWindow {
			secs := el.Seconds()
			if video {
				m.VideoFrameRate.Observe(float64(frames) / secs)
				m.VideoBitrate.Observe(float64(winBytes*8) / secs)
			}
			if received+lost > 0 {
				m.PacketLoss.Observe(float64(lost) / float64(received+lost))
			}
			windowStart, frames, winBytes, received, lost = now, 0, 0, 0, 0
		}
	}
}

// sample is one packet of one layer, as the fan-out hands it to viewers.
type sample struct {
	l       *layer
	h       *rtp.Header
	payload []byte
	key     bool  // starts a keyframe
	at      int64 // unix nanos it arrived
}

// observeLinkDelay records how long a packet took from the owner's send to
// this relay pod's read: the owner's abs-send-time stamp against this
// pod's clock (the pods' clocks are assumed in step, as NTP keeps nodes).
func observeLinkDelay(m *metrics.Metrics, h *rtp.Header, id uint8, now time.Time) {
	v := h.GetExtension(id)
	if len(v) != 3 {
		return
	}
	sent := uint32(v[0])<<16 | uint32(v[1])<<8 | uint32(v[2])
	if d := (absSendTime(now) - sent) & 0xFFFFFF; d < 1<<22 { // under 16 s: not a clock step
		m.RelayDelay.Observe(float64(d) / (1 << 18))
	}
}
