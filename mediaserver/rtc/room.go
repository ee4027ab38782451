package rtc

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
)

// Room joins publishers and subscribers. WHIP publishers, WHEP viewers and
// WebSocket participants share rooms by name.
type Room struct {
	name   string
	engine *Engine

	mu      sync.RWMutex
	feeds   map[*Feed]struct{}
	members map[*Session]struct{}

	// broadcast: a publisher asked for its viewers to be served by relay
	// pods first (WHIP ?mode=broadcast).
	broadcast atomic.Bool
}

func newRoom(name string, e *Engine) *Room {
	return &Room{name: name, engine: e, feeds: map[*Feed]struct{}{}, members: map[*Session]struct{}{}}
}

// Name of the room.
func (r *Room) Name() string { return r.name }

func (r *Room) empty() bool { return r.size() == 0 }

// size is how many members the room has here, links included.
func (r *Room) size() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.members)
}

// hasSimulcast says whether a feed of the room has (or was offered with)
// simulcast layers.
func (r *Room) hasSimulcast() bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for f := range r.feeds {
		if f.simulcastOffered || f.simulcast() {
			return true
		}
	}
	return false
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

// layersChanged tells the relay links that carry f that its layers
// changed (a simulcast layer's first packet, or its end).
func (r *Room) layersChanged(f *Feed) {
	r.mu.RLock()
	var links []*Session
	for m := range r.members {
		if m.Kind == KindRelay && m != f.publisher {
			links = append(links, m)
		}
	}
	r.mu.RUnlock()
	for _, m := range links {
		m.linkFeedsChanged()
	}
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
