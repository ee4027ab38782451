package rtc

import (
	"sync"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// DownTrack is what one viewer receives of one feed: its own local track
// (pion binds it to the viewer's PeerConnection: SSRC and payload type),
// and the rewriting that keeps what the viewer sees one continuous stream.
// Sequence numbers and timestamps continue across a change of source (a
// WHEP sender reused for the next feed; simulcast layer switches build on
// the same epochs), and NACKs are answered from the feed's packet cache.
type DownTrack struct {
	feed  *Feed
	local *webrtc.TrackLocalStaticRTP

	// mu orders everything written to the viewer (packets, retransmissions)
	// and guards the rewriting state.
	mu      sync.Mutex
	started bool // an epoch is running
	hasPrev bool // lastSeq/lastTS/lastAt continue a previous source
	// Publisher → viewer: out = in + offset (mod 2^16 / 2^32).
	seqOffset uint16
	tsOffset  uint32
	epochSeq  uint16 // first publisher sequence number of this epoch
	lastIn    uint16 // newest publisher sequence number forwarded
	lastSeq   uint16 // newest sequence number and timestamp the viewer got
	lastTS    uint32
	lastAt    time.Time
	out       rtp.Packet
	scratch   []byte
}

func newDownTrack(f *Feed) (*DownTrack, error) {
	local, err := webrtc.NewTrackLocalStaticRTP(f.codec, f.trackID, f.streamID)
	if err != nil {
		return nil, err
	}
	return &DownTrack{feed: f, local: local}, nil
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

// write forwards one publisher packet to the viewer. h and payload are
// shared with the feed's other viewers and only read.
func (d *DownTrack) write(h *rtp.Header, payload []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
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
	return d.local.WriteRTP(&d.out)
}

// retransmit answers a viewer's NACK for the given sequence numbers (as
// the viewer numbers them) from the feed's cache. Packets from before this
// epoch, not yet forwarded, or no longer cached are missed.
func (d *DownTrack) retransmit(seqs []uint16) (answered, missed int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.started {
		return 0, len(seqs)
	}
	var p rtp.Packet
	for _, vs := range seqs {
		orig := vs - d.seqOffset
		if int16(orig-d.epochSeq) < 0 || int16(d.lastIn-orig) < 0 {
			missed++
			continue
		}
		d.scratch = d.feed.cache.get(orig, d.scratch)
		if d.scratch == nil || p.Unmarshal(d.scratch) != nil {
			missed++
			continue
		}
		p.SequenceNumber = vs
		p.Timestamp += d.tsOffset
		if err := d.local.WriteRTP(&p); err != nil {
			missed++
			continue
		}
		answered++
	}
	return answered, missed
}
