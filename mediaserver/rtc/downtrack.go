package rtc

import (
	"sync"
	"time"

	"github.com/pion/rtp"
)

// DownTrack is what one viewer receives of one feed: its own local track
// (pion binds it to the viewer's PeerConnection: SSRC and payload type),
// and the rewriting that keeps what the viewer sees one continuous stream.
// Sequence numbers and timestamps continue across a change of source (a
// WHEP sender reused for the next feed; simulcast layer switches build on
// the same epochs), and NACKs are answered from the feed's packet cache.
type DownTrack struct {
	feed  *Feed
	local *downLocal

	// mu orders everything written to the viewer (packets, retransmissions)
	// and guards the rewriting state.
	mu      sync.Mutex
	cur     *layer // the layer being forwarded (nil before the first packet)
	capRank int    // the best layer rank the viewer wants
	bweRank int    // the best layer rank its bandwidth estimate allows
	lastUp  time.Time
	// accounted is when the time on the current layer was last counted
	// (unix nanos).
	accounted int64
	started   bool // an epoch is running
	hasPrev   bool // lastSeq/lastTS/lastAt continue a previous source
	// Publisher → viewer: out = in + offset (mod 2^16 / 2^32).
	seqOffset uint16
	tsOffset  uint32
	epochSeq  uint16 // first publisher sequence number of this epoch
	lastIn    uint16 // newest publisher sequence number forwarded
	lastSeq   uint16 // newest sequence number and timestamp the viewer got
	lastTS    uint32
	lastAt    time.Time
	out       rtp.Packet
	ext       extScratch
	rtxSeq    uint16 // the RTX stream's last sequence number
	scratch   []byte
	rtxBuf    []byte
	// pinned: a relay link's down-track carries exactly the layer pinRID
	// (every layer of a feed travels a link as its own track).
	pinned bool
	pinRID string
}

func newDownTrack(f *Feed) (*DownTrack, error) {
	return &DownTrack{feed: f, local: newDownLocal(f.codec, f.trackID, f.streamID), capRank: noCap, bweRank: noCap}, nil
}

// noCap lets a viewer have the best layer there is.
const noCap = 1 << 30

// SetCap caps the layers the viewer gets at rank (RankOf); a cap below
// every layer gives the lowest.
func (d *DownTrack) SetCap(rank int) {
	d.mu.Lock()
	d.capRank = rank
	d.mu.Unlock()
}

// Layer is the rid of the layer the viewer gets now ("" for a plain track
// or before the first packet).
func (d *DownTrack) Layer() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cur == nil {
		return ""
	}
	return d.cur.rid
}

// accountLayer counts the time on the current simulcast layer up to now
// (unix nanos). Each layer's packets come from its own read loop, stamped
// there: a packet of one layer may carry an earlier time than the last
// counted, which counts nothing (a counter cannot go back).
func (d *DownTrack) accountLayer(now int64) {
	if now <= d.accounted {
		return
	}
	if d.cur == nil || d.feed.publisher == nil || !d.feed.simulcast() {
		d.accounted = now
		return
	}
	name := "other"
	if d.cur.rank <= 2 {
		name = [...]string{"q", "h", "f"}[d.cur.rank]
	}
	d.feed.publisher.engine.metrics.LayerSeconds.WithLabelValues(name).Add(float64(now-d.accounted) / float64(time.Second))
	d.accounted = now
}

// offer hands the down-track one packet of one of the feed's layers. It
// forwards the layer it is on; it moves to the layer it should be on
// (the best live one under its cap) only at that layer's keyframe, asking
// the publisher for one meanwhile, and the move starts a new epoch so the
// viewer's stream stays continuous. A plain track starts at its first
// packet; a simulcast feed at a keyframe.
func (d *DownTrack) offer(s sample) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.pinned {
		if s.l.rid != d.pinRID {
			return nil
		}
		d.cur = s.l
		d.feed.publisher.engine.metrics.RelayPackets.Inc()
		return d.writeLocked(s.h, s.payload)
	}
	limit := min(d.capRank, d.bweRank)
	if s.l != d.cur {
		want := d.feed.pick(limit, s.at)
		if s.l != want {
			return nil
		}
		if (d.cur != nil || d.feed.simulcast()) && !s.key {
			d.feed.requestKeyframe(want)
			return nil
		}
		if d.cur != nil {
			d.started = false // a new epoch, continuing the stream
			d.accountLayer(s.at)
			if p := d.feed.publisher; p != nil {
				p.engine.metrics.LayerSwitches.Inc()
			}
		}
		d.cur, d.accounted = s.l, max(d.accounted, s.at)
	} else if d.feed.simulcast() {
		if want := d.feed.pick(limit, s.at); want != nil && want != d.cur {
			d.feed.requestKeyframe(want)
		}
		if s.at-d.accounted >= int64(time.Second) {
			d.accountLayer(s.at)
		}
	}
	return d.writeLocked(s.h, s.payload)
}

// continueFrom makes this down-track's stream continue where prev's ended
// (same viewer, same sender, a new source).
func (d *DownTrack) continueFrom(prev *DownTrack) {
	prev.mu.Lock()
	seq, ts, at, ok := prev.lastSeq, prev.lastTS, prev.lastAt, prev.started || prev.hasPrev
	prev.mu.Unlock()
	d.mu.Lock()
	d.lastSeq, d.lastTS, d.lastAt, d.hasPrev = seq, ts, at, ok
	d.mu.Unlock()
}

// ended is what is kept of a down-track whose feed ended on a sender that
// stays (a WHEP viewer's): where its stream stopped, for the next feed to
// continue from, without holding on to the feed and its packet cache.
func (d *DownTrack) ended() *DownTrack {
	e := &DownTrack{}
	e.continueFrom(d)
	return e
}

// startEpoch fixes the offsets for a new source whose first packet is h:
// the next sequence number, and the timestamp advanced by the wall time
// since the last packet.
func (d *DownTrack) startEpoch(h *rtp.Header) {
	if d.hasPrev {
		d.seqOffset = d.lastSeq + 1 - h.SequenceNumber
		gap := uint32(time.Since(d.lastAt).Seconds() * float64(d.feed.codec.ClockRate))
		d.tsOffset = d.lastTS + max(gap, 1) - h.Timestamp
	}
	d.epochSeq, d.lastIn, d.started = h.SequenceNumber, h.SequenceNumber, true
}

// write forwards one publisher packet to the viewer (tests; the feed
// uses offer).
func (d *DownTrack) write(h *rtp.Header, payload []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.writeLocked(h, payload)
}

// writeLocked forwards one packet of the current layer. h and payload are
// shared with the feed's other viewers and only read. The publisher's
// header extensions are not passed on: their ids are the publisher's
// negotiation, not the viewer's; the viewer's own are written per viewer
// (see downLocal).
func (d *DownTrack) writeLocked(h *rtp.Header, payload []byte) error {
	if !d.started {
		d.startEpoch(h)
	}
	d.out.Header = *h
	d.out.SequenceNumber = h.SequenceNumber + d.seqOffset
	d.out.Timestamp = h.Timestamp + d.tsOffset
	d.out.Payload = payload
	if int16(h.SequenceNumber-d.lastIn) > 0 {
		d.lastIn = h.SequenceNumber
	}
	if !d.hasPrev || int16(d.out.SequenceNumber-d.lastSeq) > 0 {
		d.lastSeq, d.lastTS, d.lastAt, d.hasPrev = d.out.SequenceNumber, d.out.Timestamp, time.Now(), true
	}
	return d.local.write(&d.out.Header, payload, &d.ext)
}

// retransmit answers a viewer's NACK for the given sequence numbers (as
// the viewer numbers them) from the feed's cache, on the viewer's RTX
// stream where it negotiated one. Packets from before this epoch, not yet
// forwarded, or no longer cached are missed.
func (d *DownTrack) retransmit(seqs []uint16) (answered, missed int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.started || d.cur == nil {
		return 0, len(seqs)
	}
	var p rtp.Packet
	for _, vs := range seqs {
		orig := vs - d.seqOffset
		if int16(orig-d.epochSeq) < 0 || int16(d.lastIn-orig) < 0 {
			missed++
			continue
		}
		d.scratch = d.cur.cache.get(orig, d.scratch)
		if d.scratch == nil || p.Unmarshal(d.scratch) != nil {
			missed++
			continue
		}
		p.SequenceNumber = vs
		p.Timestamp += d.tsOffset
		if _, err := d.local.retransmit(&p.Header, p.Payload, &d.ext, &d.rtxSeq, &d.rtxBuf); err != nil {
			missed++
			continue
		}
		answered++
	}
	return answered, missed
}
